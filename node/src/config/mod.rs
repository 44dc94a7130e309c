//! Node configuration: one TOML file, one typed struct tree with defaults.
//!
//! Relative paths in the file are resolved against the directory that holds it, so a
//! configuration written by `adep pki init` works from any working directory.
//! Secrets (keys, the key seed) are always paths to files, never inline values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::domain::principals::{Country, Role};

pub mod duration;
mod load;
pub use load::{ConfigError, Endpoint, parse_endpoint, toml_error};

/// The whole node configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's country.
    pub country: Country,
    /// Where the store lives. Created on first start.
    pub data_dir: PathBuf,
    /// File holding the node's data key (64 hexadecimal digits, written by `adep pki
    /// init`): every stored value but the store's metadata is sealed under it. Keep it
    /// apart from backups of the data directory; without it the store cannot be read.
    pub data_key: PathBuf,
    /// The listener peer nodes call.
    pub federation: ListenerConfig,
    /// The listener the state's own users call through the CLI.
    pub national: ListenerConfig,
    /// Certificate and key files.
    pub tls: TlsConfig,
    /// This node's match keys.
    pub matching: MatchingConfig,
    /// Peer nodes: every other country of the network.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// National users and their roles.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Bounds on inputs and waits.
    #[serde(default)]
    pub limits: Limits,
    /// Operational logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Follow-up requests: deadlines, four-eyes and the release policy.
    #[serde(default)]
    pub followup: FollowUpConfig,
    /// The audit log: signing key and retention.
    pub audit: AuditConfig,
    /// The Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The Prometheus metrics endpoint (plain HTTP, `GET /metrics`). Off unless `listen`
/// is set; bind it to an address only the monitoring system reaches.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:port` to serve metrics on.
    pub listen: Option<SocketAddr>,
}

/// The audit log (DESIGN section 8).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// File holding the node's Ed25519 audit signing key (PKCS#8, written by
    /// `adep pki init`). Keep it: entries signed with it verify only under it.
    pub signing_key: PathBuf,
    /// How long entries are kept. Default 1096d (three years).
    #[serde(default = "default_retention", with = "crate::config::duration")]
    pub retention: Duration,
    /// How often entries past their retention (and expired hit references) are
    /// deleted, besides at start-up. Default 1h.
    #[serde(default = "default_prune_interval", with = "crate::config::duration")]
    pub prune_interval: Duration,
}

fn default_prune_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_retention() -> Duration {
    Duration::from_secs(1096 * 24 * 3600)
}

/// Follow-up requests (DESIGN section 7). Durations as [`duration`] reads and writes
/// them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpConfig {
    /// How long a reviewer has before an undecided request is listed as overdue.
    /// Default 2d.
    #[serde(
        default = "default_decision_deadline",
        with = "crate::config::duration"
    )]
    pub decision_deadline: Duration,
    /// After how long an undecided request closes as expired. Default 30d.
    #[serde(default = "default_expiry", with = "crate::config::duration")]
    pub expiry: Duration,
    /// Whether an approval needs two different reviewers. Default false.
    #[serde(default)]
    pub four_eyes: bool,
    /// The record fields released on approval (the core data), by interchange column
    /// name: identity columns or payload columns. Nothing else ever leaves the node.
    #[serde(default = "default_release_fields")]
    pub release_fields: Vec<String>,
    /// Longest wait between two attempts to deliver a decision. Default 5m.
    #[serde(default = "default_retry_max", with = "crate::config::duration")]
    pub retry_max: Duration,
}

impl Default for FollowUpConfig {
    fn default() -> FollowUpConfig {
        FollowUpConfig {
            decision_deadline: default_decision_deadline(),
            expiry: default_expiry(),
            four_eyes: false,
            release_fields: default_release_fields(),
            retry_max: default_retry_max(),
        }
    }
}

fn default_decision_deadline() -> Duration {
    Duration::from_secs(48 * 3600)
}

fn default_expiry() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_release_fields() -> Vec<String> {
    [
        "record_id",
        "family_name",
        "given_names",
        "date_of_birth",
        "sex",
        "nationality",
    ]
    .map(String::from)
    .to_vec()
}

fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

/// A listen address.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:port` to bind; port 0 picks a free port.
    pub listen: SocketAddr,
}

/// Certificate, key and CA files, all PEM.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The network CA: issues every node's certificate; peers are verified against it.
    pub network_ca: PathBuf,
    /// This node's certificate from the network CA, with SAN `adep://node/<CC>`. Served on
    /// the federation listener and presented to peers.
    pub node_cert: PathBuf,
    /// Private key of `node_cert`.
    pub node_key: PathBuf,
    /// The national CA: issues national user certificates.
    pub national_ca: PathBuf,
    /// This node's server certificate from the national CA, served on the national listener.
    pub national_cert: PathBuf,
    /// Private key of `national_cert`.
    pub national_key: PathBuf,
    /// Certificate revocation lists (PEM files), checked against the client
    /// certificates of both listeners: the national CA's for users, the network CA's
    /// for peers. `adep pki revoke` writes one; `adep certs reload` re-reads them.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<PathBuf>,
}

/// This node's match keys (scheme v2): its own key seed, never shared.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// File holding this node's key seed: 64 hexadecimal digits (256 bits). The PRF
    /// key of each key epoch is derived from it; `adep pki init` writes one per node.
    pub seed_file: PathBuf,
    /// The key epoch a new node starts under. Default 1. Once the node has started,
    /// the epoch is the store's, and `adep keys rotate` moves it on.
    #[serde(default = "default_key_epoch")]
    pub key_epoch: u32,
    /// How long a hit reference issued to a peer stays valid, like `7d` or `12h`.
    /// Default 7d.
    #[serde(default = "default_hit_ref_ttl", with = "crate::config::duration")]
    pub hit_ref_ttl: Duration,
    /// After a rotation switches, how long a Match under the previous epoch is still
    /// answered (searches evaluated just before the switch), like `10m`. Default 10m.
    #[serde(
        default = "default_previous_epoch_grace",
        with = "crate::config::duration"
    )]
    pub previous_epoch_grace: Duration,
}

fn default_key_epoch() -> u32 {
    1
}

fn default_previous_epoch_grace() -> Duration {
    Duration::from_secs(600)
}

fn default_hit_ref_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// A peer node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's country.
    pub country: Country,
    /// `https://host:port` of the peer's federation listener.
    pub endpoint: String,
    /// The identity (URI SAN) the peer's certificate must carry. Default `adep://node/<CC>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The name checked against the peer's server certificate. Default: the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl PeerConfig {
    /// The certificate identity this peer must present.
    pub fn expected_identity(&self) -> String {
        self.identity
            .clone()
            .unwrap_or_else(|| crate::domain::principals::node_identity(self.country))
    }
}

/// A national user.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's id: their certificate carries SAN `adep://user/<CC>/<id>`.
    pub id: String,
    /// What the user may do.
    pub role: Role,
}

/// Bounds on inputs and waits. Every field has a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message accepted or sent, in bytes. Default 4 MiB.
    pub max_message_bytes: usize,
    /// How long a TLS handshake may take before the connection is dropped. Default 5000 ms.
    pub handshake_timeout_ms: u64,
    /// Deadline of one call to a peer. Default 3000 ms.
    pub peer_timeout_ms: u64,
    /// Most TCP connections open at once per listener. Default 1024.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight calls before closing. Default 10000 ms.
    pub shutdown_grace_ms: u64,
    /// Most subjects in one Match or Evaluate batch from a peer. Default 1000.
    pub max_subjects_per_match: usize,
    /// Most match keys of one subject in a Match or Evaluate batch; a search refuses
    /// a subject that derives more. Default 1024.
    pub max_keys_per_subject: usize,
    /// Most subjects in one national Search. Default 1000.
    pub max_subjects_per_search: usize,
    /// Most records in one import or sync. Default 5000000.
    pub max_import_records: usize,
    /// Match calls one peer may make per minute (bursts up to the same number).
    /// Default 600.
    pub matches_per_minute_per_peer: u32,
    /// Blinded elements one peer may have evaluated per minute (bursts up to the
    /// same number): every guess at this node's index costs one. Default 200000.
    pub evaluations_per_minute_per_peer: u32,
    /// Searches one officer may make per minute (bursts up to the same number).
    /// Default 120.
    pub searches_per_minute_per_officer: u32,
    /// Most connections per listener that have not (yet) proven a certificate of the
    /// listener's CA: in their TLS handshake, anonymous (health probes), or with a
    /// certificate the listener refuses. They never count toward `max_connections`.
    /// Default 256.
    pub max_unverified_connections: usize,
    /// Most such connections from one remote address. Default 8.
    pub max_unverified_per_address: usize,
    /// How long a connection without a verified certificate stays open after its
    /// handshake: enough for one health probe or one refused call. Default 3000 ms.
    pub unverified_lifetime_ms: u64,
    /// HTTP/2 streams (calls) one connection may have open at once; the client is told
    /// in its SETTINGS, and a stream over it is refused. Default 100.
    pub max_streams_per_connection: u32,
    /// Calls of one connection handled at once; the others wait, their data held
    /// within the flow-control windows. Default 16.
    pub max_calls_per_connection: usize,
    /// Largest HTTP/2 header list of a call, in bytes. Default 16384.
    pub max_header_list_bytes: u32,
    /// HTTP/2 flow-control window of one stream, in bytes. Default 1048576.
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window of a whole connection, in bytes: data a client sent
    /// and the node has not read yet. With `max_calls_per_connection` and
    /// `max_message_bytes` it bounds a connection's memory: about
    /// `connection_window_bytes + max_calls_per_connection × max_message_bytes`.
    /// Default 4194304.
    pub connection_window_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            handshake_timeout_ms: 5_000,
            peer_timeout_ms: 3_000,
            max_connections: 1024,
            shutdown_grace_ms: 10_000,
            max_subjects_per_match: 1_000,
            max_keys_per_subject: 1_024,
            max_subjects_per_search: 1_000,
            max_import_records: 5_000_000,
            matches_per_minute_per_peer: 600,
            evaluations_per_minute_per_peer: 200_000,
            searches_per_minute_per_officer: 120,
            max_unverified_connections: 256,
            max_unverified_per_address: 8,
            unverified_lifetime_ms: 3_000,
            max_streams_per_connection: 100,
            max_calls_per_connection: 16,
            max_header_list_bytes: 16 * 1024,
            stream_window_bytes: 1024 * 1024,
            connection_window_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Deadline of one call to a peer.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
    /// Deadline of a TLS handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Grace period of shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// How long a connection without a verified certificate stays open.
    pub fn unverified_lifetime(&self) -> Duration {
        Duration::from_millis(self.unverified_lifetime_ms)
    }
}

/// Operational log settings. `RUST_LOG`, when set, overrides `level`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`. Default `plain`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `adep_node=debug`. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GOOD: &str = r#"
country = "FR"
data_dir = "data"
data_key = "data.key"
[federation]
listen = "127.0.0.1:7100"
[national]
listen = "127.0.0.1:7101"
[tls]
network_ca = "../network-ca.pem"
node_cert = "node.pem"
node_key = "node.key.pem"
national_ca = "national-ca.pem"
national_cert = "national-node.pem"
national_key = "national-node.key.pem"
[matching]
seed_file = "key-seed"
[audit]
signing_key = "audit.key"
[[peers]]
country = "DE"
endpoint = "https://127.0.0.1:7110"
[[users]]
id = "fr-officer"
role = "officer"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("node.toml"), Path::new("/etc/adep"))
    }

    #[test]
    fn good_config_loads_with_defaults_and_resolved_paths() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.country.as_str(), "FR");
        assert_eq!(c.data_dir, Path::new("/etc/adep/data"));
        assert_eq!(c.tls.network_ca, Path::new("/etc/adep/../network-ca.pem"));
        assert_eq!(c.limits.peer_timeout_ms, 3000);
        assert_eq!(c.peers[0].expected_identity(), "adep://node/DE");
        assert_eq!(c.log.format, LogFormat::Plain);
    }

    #[test]
    fn names_the_field_of_a_bad_country() {
        let e = load(&GOOD.replace("country = \"DE\"", "country = \"de\"")).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("node.toml:"), "{m}");
        assert!(m.contains("`de` is not a country code"), "{m}");
        assert!(m.contains("line 21"), "{m}");
    }

    #[test]
    fn names_a_missing_field() {
        let e = load(&GOOD.replace("data_dir = \"data\"\n", "")).unwrap_err();
        assert!(e.to_string().contains("missing field `data_dir`"), "{e}");
    }

    #[test]
    fn refuses_unknown_fields() {
        let e = load(&GOOD.replace("[matching]", "[matching]\nsecret = \"abc\"")).unwrap_err();
        assert!(e.to_string().contains("unknown field `secret`"), "{e}");
        let e = load(&GOOD.replace("[matching]", "[matching]\nsecret_file = \"../s\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field `matching.secret_file`: the network matching secret is gone")
                && e.contains("matching.seed_file"),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_peer_endpoint_naming_the_field() {
        let e = load(&GOOD.replace("https://127.0.0.1:7110", "http://127.0.0.1:7110")).unwrap_err();
        assert!(
            e.to_string().contains(
                "field `peers[0].endpoint`: `http://127.0.0.1:7110` must start with https://"
            ),
            "{e}"
        );
    }

    #[test]
    fn refuses_own_country_as_peer_and_duplicate_users() {
        let e = load(&GOOD.replace("country = \"DE\"", "country = \"FR\"")).unwrap_err();
        assert!(e.to_string().contains("peers[0].country"), "{e}");
        let dup = format!("{GOOD}[[users]]\nid = \"fr-officer\"\nrole = \"reviewer\"\n");
        let e = load(&dup).unwrap_err();
        assert!(e.to_string().contains("users[1].id"), "{e}");
    }

    #[test]
    fn refuses_out_of_range_limits() {
        let e = load(&format!("{GOOD}[limits]\npeer_timeout_ms = 1\n")).unwrap_err();
        assert!(e.to_string().contains("limits.peer_timeout_ms"), "{e}");
    }

    #[test]
    fn a_parse_error_names_line_and_column_never_the_text() {
        let record = "\n{\"record_id\":\"DE-9\",\"family_name\":\"Kowalski\",\"date_of_birth\":\"1977-03-04\"}\n";
        let e = load(record).expect_err("not TOML").to_string();
        assert!(
            e.starts_with("node.toml: invalid TOML at line 2, column 1: "),
            "{e}"
        );
        assert!(!e.contains("Kowalski") && !e.contains("1977"), "{e}");
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_endpoint("https://[::1]:443").unwrap(),
            Endpoint {
                host: "::1".into(),
                port: 443
            }
        );
        assert!(parse_endpoint("https://host").is_err());
        assert!(parse_endpoint("https://host:0").is_err());
        assert!(parse_endpoint("https://host:1/path").is_err());
    }
}
