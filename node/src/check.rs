//! `adep-node check-config`: everything a start would refuse, and what would fail
//! later (a certificate that does not chain, a key of another certificate, one about
//! to expire), checked without starting the node or opening its store.
//!
//! Each check names the configuration field and the file, and says exactly what is
//! wrong. No check prints a secret or a key.

use std::path::Path;

use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;

use crate::{
    app::certificates::CERTIFICATE_WARNING_SECONDS,
    config::Config,
    domain::principals::CertIdentity,
    grpc::auth::identity_of_certificate,
    grpc::tls,
    secret::{DataKey, KeySeed},
};

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Holds.
    Ok,
    /// Holds today but needs attention (a certificate expiring soon).
    Warning,
    /// Would refuse a start or break calls.
    Failed,
}

/// One check: the field it is about, the verdict and what was found.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The configuration field, such as `tls.node_cert`.
    pub field: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found, or what is wrong.
    pub detail: String,
}

impl Check {
    fn new(field: &str, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            field: field.to_owned(),
            verdict,
            detail: detail.into(),
        }
    }
}

fn result(field: &str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check::new(field, Verdict::Ok, detail),
        Err(detail) => Check::new(field, Verdict::Failed, detail),
    }
}

/// Checks the configuration at `path` and every file it names.
pub fn check_config(path: &Path) -> Vec<Check> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return vec![Check::new("configuration", Verdict::Failed, e.to_string())],
    };
    let mut checks = vec![Check::new(
        "configuration",
        Verdict::Ok,
        format!(
            "{}: node of {}, {}, {}",
            path.display(),
            config.country,
            count(config.peers.len(), "peer", "peers"),
            count(config.users.len(), "user", "users")
        ),
    )];
    // A node running with this configuration holds its ports and data directory:
    // then the checks are of its files (before `adep certs reload`, say).
    // A node that holds data_dir but not these listeners runs with another
    // configuration: this one could not start beside it.
    let holder = crate::store::running_node(&config.data_dir);
    let listening = [config.federation.listen, config.national.listen]
        .into_iter()
        .filter(|a| a.port() != 0)
        .all(|a| matches!(bind_check(a), Err(Unbound::InUse)));
    let running = holder.is_some() && listening;
    match &holder {
        Some(pid) if running => checks.push(Check::new(
            RUNNING,
            Verdict::Ok,
            format!(
                "a node is running with this configuration{pid}: its listeners and data_dir are in use by it"
            ),
        )),
        Some(pid) => checks.push(Check::new(
            RUNNING,
            Verdict::Failed,
            format!(
                "data_dir {} is in use by another node{pid}, which does not listen on this configuration's addresses: each node needs a data_dir of its own",
                config.data_dir.display()
            ),
        )),
        None => {}
    }
    checks.extend(check_listeners(&config, running));
    let now = UnixTime::now();
    let network_ca = tls::root_store(&config.tls.network_ca).map_err(|e| e.to_string());
    let national_ca = tls::root_store(&config.tls.national_ca).map_err(|e| e.to_string());
    checks.push(result(
        "tls.network_ca",
        network_ca
            .as_ref()
            .map(|r| count(r.len(), "CA certificate", "CA certificates"))
            .map_err(Clone::clone),
    ));
    checks.push(result(
        "tls.national_ca",
        national_ca
            .as_ref()
            .map(|r| count(r.len(), "CA certificate", "CA certificates"))
            .map_err(Clone::clone),
    ));
    let node_identity = CertIdentity::Node(config.country).uri();
    checks.extend(check_pair(
        ("tls.node_cert", &config.tls.node_cert),
        ("tls.node_key", &config.tls.node_key),
        network_ca
            .as_ref()
            .ok()
            .map(|r| (r.as_ref(), "the network CA")),
        Some(&node_identity),
        now,
    ));
    checks.extend(check_pair(
        ("tls.national_cert", &config.tls.national_cert),
        ("tls.national_key", &config.tls.national_key),
        national_ca
            .as_ref()
            .ok()
            .map(|r| (r.as_ref(), "the national CA")),
        None,
        now,
    ));
    for path in &config.tls.crls {
        checks.push(result(
            "tls.crls",
            tls::load_crls(path)
                .map(|lists| {
                    let described: Vec<String> = lists
                        .iter()
                        .map(|l| format!("{} revoked by {}", l.revoked, l.issuer))
                        .collect();
                    format!("{}: {}", path.display(), described.join("; "))
                })
                .map_err(|e| e.to_string()),
        ));
    }
    checks.push(result(
        "matching.seed_file",
        KeySeed::from_file(&config.matching.seed_file)
            .map(|_| "256 bits, this node's own".to_owned())
            .map_err(|e| e.to_string()),
    ));
    checks.push(result(
        "data_key",
        DataKey::from_file(&config.data_key)
            .map(|_| "256 bits".to_owned())
            .map_err(|e| e.to_string()),
    ));
    checks.push(result(
        "audit.signing_key",
        check_audit_key(&config.audit.signing_key),
    ));
    checks.push(result("data_dir", check_data_dir(&config.data_dir)));
    checks
}

/// `n` and the noun that goes with it: `1 peer`, `2 peers`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The field of the check that says a node runs with the configuration.
pub const RUNNING: &str = "node";

fn check_listeners(config: &Config, running: bool) -> Vec<Check> {
    let mut addrs = vec![
        ("federation.listen", config.federation.listen),
        ("national.listen", config.national.listen),
    ];
    if let Some(m) = config.metrics.listen {
        addrs.push(("metrics.listen", m));
    }
    let mut checks = Vec::new();
    for (i, (field, addr)) in addrs.iter().enumerate() {
        match addrs[..i]
            .iter()
            .find(|(_, other)| other == addr && addr.port() != 0)
        {
            Some((other, _)) => checks.push(Check::new(
                field,
                Verdict::Failed,
                format!("{addr} is also {other}"),
            )),
            None => checks.push(match bind_check(*addr) {
                Ok(()) => Check::new(field, Verdict::Ok, addr.to_string()),
                Err(Unbound::InUse) if running => Check::new(
                    field,
                    Verdict::Ok,
                    format!("{addr} is served by the running node"),
                ),
                Err(Unbound::InUse) => Check::new(
                    field,
                    Verdict::Failed,
                    format!("{addr} is in use: is a node already running with this configuration? It would also hold data_dir"),
                ),
                Err(Unbound::NotHere) => Check::new(
                    field,
                    Verdict::Failed,
                    format!("{addr} is not an address of this machine"),
                ),
                Err(Unbound::Untried(e)) => Check::new(
                    field,
                    Verdict::Warning,
                    format!("{addr} cannot be tried here: {e}"),
                ),
            }),
        }
    }
    checks
}

/// Why a node could not listen on an address now.
enum Unbound {
    /// Another socket holds it: most often a node running with this configuration.
    InUse,
    /// Not an address of this machine.
    NotHere,
    /// Not tried (no permission for a low port, say).
    Untried(std::io::Error),
}

/// Whether a node could listen on `addr` now.
fn bind_check(addr: std::net::SocketAddr) -> Result<(), Unbound> {
    if addr.port() == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Unbound::InUse),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Unbound::NotHere),
        Err(e) => Err(Unbound::Untried(e)),
    }
}

/// A certificate and its key: readable, matching, chaining to `ca`, carrying
/// `identity`, and not expired or about to.
fn check_pair(
    (cert_field, cert_path): (&str, &Path),
    (key_field, key_path): (&str, &Path),
    ca: Option<(&RootCertStore, &str)>,
    identity: Option<&str>,
    now: UnixTime,
) -> Vec<Check> {
    let certs = match tls::load_certs(cert_path) {
        Ok(c) => c,
        Err(e) => return vec![Check::new(cert_field, Verdict::Failed, e.to_string())],
    };
    let mut checks = Vec::new();
    let leaf = certs[0].clone();
    let mut cert_problems = Vec::new();
    match tls::not_after(cert_path) {
        Ok(not_after) => {
            let left = not_after - now.as_secs() as i64;
            if left <= 0 {
                cert_problems.push((Verdict::Failed, "has expired".to_owned()));
            } else if left < CERTIFICATE_WARNING_SECONDS {
                cert_problems.push((
                    Verdict::Warning,
                    format!(
                        "expires in {}; renew it",
                        count((left / 86_400) as usize, "day", "days")
                    ),
                ));
            }
        }
        Err(e) => cert_problems.push((Verdict::Failed, e.to_string())),
    }
    if let Some(want) = identity {
        match identity_of_certificate(&leaf) {
            Ok(id) if id.uri() == want => {}
            Ok(id) => cert_problems.push((
                Verdict::Failed,
                format!("carries the identity {}, not {want}", id.uri()),
            )),
            Err(why) => cert_problems.push((Verdict::Failed, why)),
        }
    }
    if let Some((roots, name)) = ca
        && let Err(e) = chains_to(&leaf, &certs[1..], roots, now)
    {
        cert_problems.push((Verdict::Failed, format!("does not chain to {name}: {e}")));
    }
    checks.push(
        match cert_problems
            .iter()
            .map(|(v, _)| *v)
            .max_by_key(|v| *v as u8)
        {
            None => Check::new(
                cert_field,
                Verdict::Ok,
                format!(
                    "{}{}",
                    cert_path.display(),
                    ca.map(|(_, n)| format!(", chains to {n}"))
                        .unwrap_or_default()
                ),
            ),
            Some(worst) => Check::new(
                cert_field,
                worst,
                format!(
                    "{}: {}",
                    cert_path.display(),
                    cert_problems
                        .iter()
                        .map(|(_, p)| p.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        },
    );
    checks.push(result(key_field, key_matches(certs, key_path, cert_path)));
    checks
}

/// Whether `leaf` (with `intermediates`) chains to one of `roots` now.
fn chains_to(
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    roots: &RootCertStore,
    now: UnixTime,
) -> Result<(), String> {
    let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        tls::provider().signature_verification_algorithms.all,
    )
    .or_else(|e| {
        // Node certificates serve and call; user certificates only call. A chain
        // that verifies for either usage chains to the CA.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots.clone()),
            tls::provider(),
        )
        .build()
        .map_err(|_| e.to_string())?;
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|_| e.to_string())
    })
}

fn key_matches(
    certs: Vec<CertificateDer<'static>>,
    key_path: &Path,
    cert_path: &Path,
) -> Result<String, String> {
    let key = tls::load_key(key_path).map_err(|e| e.to_string())?;
    let signing = tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: not a usable private key: {e}", key_path.display()))?;
    CertifiedKey::new(certs, signing)
        .keys_match()
        .map(|()| format!("{} matches its certificate", key_path.display()))
        .map_err(|_| {
            format!(
                "{} is not the key of {}",
                key_path.display(),
                cert_path.display()
            )
        })
}

fn check_audit_key(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    ring::signature::Ed25519KeyPair::from_pkcs8(&bytes)
        .map(|_| format!("{}: an Ed25519 key", path.display()))
        .map_err(|_| format!("{}: not a PKCS#8 Ed25519 key", path.display()))
}

fn check_data_dir(dir: &Path) -> Result<String, String> {
    if dir.is_dir() {
        let probe = dir.join(".adep-check-config");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map(|()| format!("{}: exists and is writable", dir.display()))
            .map_err(|e| format!("{}: not writable: {e}", dir.display()))
    } else if dir.exists() {
        Err(format!("{}: exists but is not a directory", dir.display()))
    } else {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if parent.is_dir() {
            Ok(format!("{}: will be created on first start", dir.display()))
        } else {
            Err(format!(
                "{}: neither it nor its parent directory exists",
                dir.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tooling::pki::{self, NodePlan};

    /// Plans for `countries` on ports the system hands out now. A fixed port can be
    /// held by another test or be the local port of an outgoing connection (47100 is
    /// in Linux's ephemeral range), and check-config fails on a port in use.
    fn plans(countries: &[&str]) -> Vec<NodePlan> {
        let listeners: Vec<std::net::TcpListener> = (0..countries.len() * 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut ports = listeners.iter().map(|l| l.local_addr().unwrap());
        countries
            .iter()
            .map(|cc| NodePlan {
                country: cc.parse().unwrap(),
                federation: ports.next().unwrap(),
                national: ports.next().unwrap(),
                metrics: ports.next(),
                reach: None,
            })
            .collect()
    }

    fn failed(checks: &[Check]) -> Vec<(String, String)> {
        checks
            .iter()
            .filter(|c| c.verdict == Verdict::Failed)
            .map(|c| (c.field.clone(), c.detail.clone()))
            .collect()
    }

    #[test]
    fn a_pki_init_configuration_passes_and_each_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), &plans(&["FR", "DE"])).unwrap();
        let fr = dir.path().join("FR/node.toml");
        let checks = check_config(&fr);
        assert_eq!(
            failed(&checks),
            Vec::<(String, String)>::new(),
            "{checks:#?}"
        );
        assert!(
            checks.iter().any(
                |c| c.field == "tls.node_cert" && c.detail.contains("chains to the network CA")
            )
        );

        // DE's key under FR's certificate; DE's certificate; a short data key; a
        // national certificate from the wrong CA.
        let de = dir.path().join("DE");
        let f = dir.path().join("FR");
        std::fs::copy(de.join("node.key.pem"), f.join("node.key.pem")).unwrap();
        std::fs::copy(de.join("national-node.pem"), f.join("national-node.pem")).unwrap();
        std::fs::write(f.join("data.key"), "abcd").unwrap();
        let failed = failed(&check_config(&fr));
        let fields: Vec<&str> = failed.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tls.node_key",
                "tls.national_cert",
                "tls.national_key",
                "data_key"
            ],
            "{failed:#?}"
        );
        assert!(failed[0].1.contains("is not the key of"), "{failed:?}");
        assert!(
            failed[1].1.contains("does not chain to the national CA"),
            "{failed:?}"
        );
        assert!(failed[3].1.contains("exactly 64 digits"), "{failed:?}");
    }

    #[test]
    fn a_revocation_list_is_described_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), &plans(&["FR"])).unwrap();
        let fr = dir.path().join("FR");
        let good = fr.join("national-ca.crl.pem");
        pki::revoke(
            &fr.join("national-ca.pem"),
            &fr.join("national-ca.key.pem"),
            &fr.join("users/officer.pem"),
            &good,
        )
        .unwrap();
        let bad = fr.join("other.crl.pem");
        // A certificate where a list belongs.
        std::fs::copy(fr.join("node.pem"), &bad).unwrap();
        let text = std::fs::read_to_string(fr.join("node.toml")).unwrap();
        // pki init names the network CA's list and the national CA's; one more.
        let text = text.replace(
            "\"national-ca.crl.pem\"",
            "\"national-ca.crl.pem\", \"other.crl.pem\"",
        );
        std::fs::write(fr.join("node.toml"), text).unwrap();
        let checks = check_config(&fr.join("node.toml"));
        let crls: Vec<&Check> = checks.iter().filter(|c| c.field == "tls.crls").collect();
        assert_eq!(crls.len(), 3, "{checks:#?}");
        assert_eq!(crls[0].verdict, Verdict::Ok);
        assert!(
            crls[0].detail.contains("0 revoked by") && crls[0].detail.contains("network CA"),
            "{crls:?}"
        );
        assert_eq!(crls[1].verdict, Verdict::Ok);
        assert!(
            crls[1].detail.contains("1 revoked by") && crls[1].detail.contains("adep national CA"),
            "{crls:?}"
        );
        assert_eq!(
            failed(&checks),
            [(
                "tls.crls".to_owned(),
                format!(
                    "{}: holds no PEM certificate revocation list (X509 CRL)",
                    bad.display()
                )
            )]
        );
    }

    #[test]
    fn an_invalid_configuration_is_one_failed_check_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(&p, "country = \"fr\"\n").unwrap();
        let checks = check_config(&p);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].verdict, Verdict::Failed);
        assert!(checks[0].detail.contains("country"), "{checks:?}");
    }
}
