//! Loading a configuration file: parsing, resolving relative paths against the file's
//! folder, and checking every field, naming the one that is wrong.

use super::*;
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

/// Why a configuration was refused. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration file: {cause}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the configuration's shape.
    #[error("{path}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// What the parser said, with line and column (never the file's text).
        message: String,
    },
    /// A field holds a value that is well formed but not acceptable.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The dotted path of the field, like `peers[1].endpoint`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Fields of scheme v1 that no longer exist, each refused with what replaces it
/// rather than the parser's bare "unknown field".
/// A TOML error as its line, column and what is wrong, without the file's text: the
/// file given by mistake (a record export as a profile, say) may hold personal data.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

fn retired_fields(text: &str) -> Result<(), (String, String)> {
    let Ok(value) = text.parse::<toml::Table>() else {
        return Ok(()); // the parser says what is wrong
    };
    let Some(matching) = value.get("matching").and_then(|m| m.as_table()) else {
        return Ok(());
    };
    for field in ["secret_file", "next_secret_file", "next_key_epoch"] {
        if matching.contains_key(field) {
            return Err((
                format!("matching.{field}"),
                format!(
                    "the network matching secret is gone (match key scheme v2: each node keys its own index); remove matching.{field} and set matching.seed_file to this node's own key seed, 64 random hexadecimal digits (`adep pki init` writes one per node); the node keys its records under it at its next start"
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Reads, parses and validates a configuration file, resolving relative paths
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            cause: source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, path, base)
    }

    /// Parses and validates configuration text. `path` is only used in messages;
    /// relative paths are resolved against `base`.
    pub fn from_toml(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        retired_fields(text).map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })?;
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: toml_error(text, &e),
        })?;
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.data_key);
        fix(&mut self.tls.network_ca);
        fix(&mut self.tls.node_cert);
        fix(&mut self.tls.node_key);
        fix(&mut self.tls.national_ca);
        fix(&mut self.tls.national_cert);
        fix(&mut self.tls.national_key);
        for crl in &mut self.tls.crls {
            fix(crl);
        }
        fix(&mut self.matching.seed_file);
        fix(&mut self.audit.signing_key);
    }

    /// Checks everything that can be checked without reading the files it names.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.matching.previous_epoch_grace.is_zero() {
            return Err((
                "matching.previous_epoch_grace".into(),
                "must be longer than zero (searches evaluated just before a switch need it)".into(),
            ));
        }
        let mut countries = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("peers[{i}].{name}");
            if peer.country == self.country {
                return Err((
                    field("country"),
                    format!("{} is this node's own country", peer.country),
                ));
            }
            if !countries.insert(peer.country) {
                return Err((
                    field("country"),
                    format!("{} is configured twice", peer.country),
                ));
            }
            parse_endpoint(&peer.endpoint).map_err(|m| (field("endpoint"), m))?;
            if let Some(id) = &peer.identity {
                crate::domain::principals::CertIdentity::parse(id)
                    .map_err(|m| (field("identity"), m))?;
            }
        }
        let mut ids = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            crate::domain::principals::validate_user_id(&user.id)
                .map_err(|m| (format!("users[{i}].id"), m))?;
            if !ids.insert(user.id.as_str()) {
                return Err((
                    format!("users[{i}].id"),
                    format!(
                        "user `{}` is configured twice; a user has one role",
                        user.id
                    ),
                ));
            }
        }
        if self.federation.listen == self.national.listen && self.federation.listen.port() != 0 {
            return Err((
                "national.listen".into(),
                "must differ from federation.listen".into(),
            ));
        }
        let l = &self.limits;
        let in_range = |field: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err((
                    format!("limits.{field}"),
                    format!("{v} is out of range ({lo} to {hi})"),
                ))
            } else {
                Ok(())
            }
        };
        in_range(
            "max_message_bytes",
            l.max_message_bytes as u64,
            1024,
            256 << 20,
        )?;
        in_range("handshake_timeout_ms", l.handshake_timeout_ms, 100, 120_000)?;
        in_range("peer_timeout_ms", l.peer_timeout_ms, 50, 600_000)?;
        in_range("max_connections", l.max_connections as u64, 1, 1_000_000)?;
        in_range(
            "max_unverified_connections",
            l.max_unverified_connections as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "max_unverified_per_address",
            l.max_unverified_per_address as u64,
            1,
            l.max_unverified_connections as u64,
        )?;
        in_range(
            "unverified_lifetime_ms",
            l.unverified_lifetime_ms,
            100,
            600_000,
        )?;
        in_range(
            "max_streams_per_connection",
            u64::from(l.max_streams_per_connection),
            1,
            10_000,
        )?;
        in_range(
            "max_calls_per_connection",
            l.max_calls_per_connection as u64,
            1,
            10_000,
        )?;
        in_range(
            "max_header_list_bytes",
            u64::from(l.max_header_list_bytes),
            1024,
            1 << 20,
        )?;
        in_range(
            "stream_window_bytes",
            u64::from(l.stream_window_bytes),
            65_535,
            (1 << 31) - 1,
        )?;
        in_range(
            "connection_window_bytes",
            u64::from(l.connection_window_bytes),
            65_535,
            (1 << 31) - 1,
        )?;
        in_range("shutdown_grace_ms", l.shutdown_grace_ms, 0, 600_000)?;
        in_range(
            "max_subjects_per_match",
            l.max_subjects_per_match as u64,
            1,
            100_000,
        )?;
        in_range(
            "max_keys_per_subject",
            l.max_keys_per_subject as u64,
            16,
            100_000,
        )?;
        in_range(
            "max_subjects_per_search",
            l.max_subjects_per_search as u64,
            1,
            100_000,
        )?;
        in_range(
            "max_import_records",
            l.max_import_records as u64,
            1,
            100_000_000,
        )?;
        in_range(
            "matches_per_minute_per_peer",
            u64::from(l.matches_per_minute_per_peer),
            1,
            10_000_000,
        )?;
        in_range(
            "evaluations_per_minute_per_peer",
            u64::from(l.evaluations_per_minute_per_peer),
            1,
            1_000_000_000,
        )?;
        in_range(
            "searches_per_minute_per_officer",
            u64::from(l.searches_per_minute_per_officer),
            1,
            10_000_000,
        )?;
        let span = |field: &str, d: Duration, lo: Duration, hi: Duration| {
            if d < lo || d > hi {
                Err((
                    field.to_owned(),
                    format!(
                        "{} is out of range ({} to {})",
                        duration::text(d),
                        duration::text(lo),
                        duration::text(hi)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        const SECOND: Duration = Duration::from_secs(1);
        const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
        span(
            "matching.hit_ref_ttl",
            self.matching.hit_ref_ttl,
            SECOND,
            YEAR,
        )?;
        // The audit retention the docs state, and a pruning period from 1s (tests) to
        // a day.
        span("audit.retention", self.audit.retention, SECOND, 31 * YEAR)?;
        span(
            "audit.prune_interval",
            self.audit.prune_interval,
            SECOND,
            Duration::from_secs(86_400),
        )?;
        let f = &self.followup;
        span(
            "followup.decision_deadline",
            f.decision_deadline,
            SECOND,
            YEAR,
        )?;
        span("followup.expiry", f.expiry, SECOND, 3 * YEAR)?;
        if f.expiry < f.decision_deadline {
            return Err((
                "followup.expiry".into(),
                format!(
                    "{} is shorter than followup.decision_deadline ({})",
                    duration::text(f.expiry),
                    duration::text(f.decision_deadline)
                ),
            ));
        }
        span(
            "followup.retry_max",
            f.retry_max,
            SECOND,
            Duration::from_secs(86_400),
        )?;
        if let Some((i, _)) = f
            .release_fields
            .iter()
            .enumerate()
            .find(|(_, c)| crate::domain::identity::check_column_name(c).is_err())
        {
            return Err((
                format!("followup.release_fields[{i}]"),
                "not a column name (1-64 characters of a-z 0-9 _)".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a log filter: {e}")));
        }
        Ok(())
    }
}

/// A parsed `https://host:port` peer endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Parses `https://host:port` (no path). The scheme must be https: every call is mutual TLS.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let rest = s
        .strip_prefix("https://")
        .ok_or_else(|| format!("`{s}` must start with https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| format!("`{s}` must be https://host:port"))?;
        (h, p)
    } else {
        rest.rsplit_once(':')
            .ok_or_else(|| format!("`{s}` must name a port: https://host:port"))?
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return Err(format!("`{s}` must be https://host:port with no path"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{s}` has an invalid port"))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}
