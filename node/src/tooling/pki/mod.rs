//! Development PKI: a network CA, one national CA per country, node, national server and
//! user certificates, each node's own key seed, data key and audit key, ready node
//! configurations and CLI profiles, so a test network needs no external tool.
//!
//! Certificates are ECDSA P-256. Identities are URI SANs (see `auth`); node certificates
//! also carry `localhost`, `adep-<cc>` and the loopback addresses so that a network on
//! one machine, in compose or in Kubernetes verifies by name.

use std::{
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::{
    config::{
        AuditConfig, Config, FollowUpConfig, Limits, ListenerConfig, LogConfig, MatchingConfig,
        PeerConfig, TlsConfig, UserConfig,
    },
    domain::principals::{Country, Role},
    domain::principals::{node_identity, user_identity},
};

mod revoke;
pub use revoke::{Revocation, revoke};

/// A PKI generation failure.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The output directory already holds a PKI.
    #[error("{0} already holds a PKI (network-ca.pem); choose another directory")]
    Exists(PathBuf),
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// The system random generator failed.
    #[error("cannot generate {0}: the system random generator failed")]
    Random(&'static str),
}

/// Validity of CA certificates.
const CA_DAYS: i64 = 3650;
/// Validity of node and user certificates.
const LEAF_DAYS: i64 = 365;

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").finish_non_exhaustive()
    }
}

/// A certificate authority that can issue adep certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pair: CertPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Debug)]
pub enum Leaf {
    /// A node: server on the federation listener and client to peers (network CA).
    Node(Country),
    /// A node's server certificate on the national listener (national CA).
    NationalServer(Country),
    /// A national user (national CA).
    User(Country, String),
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "adep");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    Ok(params)
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let params = ca_params(common_name)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pair,
        })
    }

    /// A CA made by [`Ca::generate`] with the same `common_name`, from its PEM files.
    pub fn from_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            issuer: Issuer::new(ca_params(common_name)?, key),
            pair: CertPair {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// The CA's own certificate and key.
    pub fn pair(&self) -> &CertPair {
        &self.pair
    }

    /// Issues a leaf certificate, valid for the development PKI's usual term.
    pub fn issue(&self, leaf: &Leaf) -> Result<CertPair, PkiError> {
        self.issue_for_days(leaf, LEAF_DAYS)
    }

    /// Issues a leaf certificate valid for `days` from now (tests of expiry warnings).
    pub fn issue_for_days(&self, leaf: &Leaf, days: i64) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "adep");
        let (cn, uri, server, client) = match leaf {
            Leaf::Node(cc) => (format!("adep node {cc}"), node_identity(*cc), true, true),
            Leaf::NationalServer(cc) => (
                format!("adep node {cc} (national)"),
                node_identity(*cc),
                true,
                false,
            ),
            Leaf::User(cc, id) => (
                format!("adep user {id}"),
                user_identity(*cc, id),
                false,
                true,
            ),
        };
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let ia5 = |s: String| rcgen::string::Ia5String::try_from(s);
        params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        if server {
            let cc = match leaf {
                Leaf::Node(cc) | Leaf::NationalServer(cc) | Leaf::User(cc, _) => cc,
            };
            params.subject_alt_names.extend([
                SanType::DnsName(ia5("localhost".into())?),
                SanType::DnsName(ia5(format!("adep-{}", cc.as_str().to_ascii_lowercase()))?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ]);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Common name of the network CA.
pub const NETWORK_CA_NAME: &str = "adep network CA";

/// Common name of a country's national CA.
pub fn national_ca_name(country: Country) -> String {
    format!("adep national CA {country}")
}

/// Where one country's node listens.
#[derive(Clone, Debug)]
pub struct NodePlan {
    /// The country.
    pub country: Country,
    /// Federation listener address.
    pub federation: SocketAddr,
    /// National listener address.
    pub national: SocketAddr,
    /// Metrics endpoint address, if any.
    pub metrics: Option<SocketAddr>,
    /// How the node is reached when it does not run on loopback; `None`: peers and
    /// users call the listen addresses, and data lives beside the configuration.
    pub reach: Option<Reach>,
}

/// Where a node is reached when it runs in a container network.
#[derive(Clone, Debug)]
pub struct Reach {
    /// The federation endpoint peers call, like `adep-de:7100`.
    pub peer_endpoint: String,
    /// The national endpoint the CLI profiles name, like `localhost:7111`.
    pub user_endpoint: String,
    /// The data directory inside the node's file system.
    pub data_dir: PathBuf,
}

impl NodePlan {
    /// Loopback plans from a base port: country i gets federation `base + 10 i`,
    /// national `base + 10 i + 1` and metrics `base + 10 i + 2`.
    pub fn loopback(countries: &[Country], base_port: u16) -> Result<Vec<NodePlan>, PkiError> {
        if base_port < 1024 {
            return Err(PkiError::Invalid(format!(
                "--base-port {base_port}: use 1024 or above (lower ports need privileges, and 0 would name no port)"
            )));
        }
        countries
            .iter()
            .enumerate()
            .map(|(i, cc)| {
                let fed = u16::try_from(i * 10)
                    .ok()
                    .and_then(|off| base_port.checked_add(off))
                    .and_then(|p| p.checked_add(2).map(|m| (p, p + 1, m)))
                    .ok_or_else(|| {
                        PkiError::Invalid(format!(
                            "--base-port {base_port} leaves no room for {} countries",
                            countries.len()
                        ))
                    })?;
                Ok(NodePlan {
                    country: *cc,
                    federation: SocketAddr::from((Ipv4Addr::LOCALHOST, fed.0)),
                    national: SocketAddr::from((Ipv4Addr::LOCALHOST, fed.1)),
                    metrics: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, fed.2))),
                    reach: None,
                })
            })
            .collect()
    }
}

impl NodePlan {
    /// Plans for one container per country on a shared network (deploy/compose.yaml):
    /// every node listens on all addresses at federation 7100, national 7101 and
    /// metrics 9464; peers call `adep-cc:7100` (a name in every node certificate);
    /// country i's national port is published on the host as `7101 + 10 i`, which the
    /// CLI profiles name as `localhost`; data lives in `/var/lib/adep`.
    pub fn containers(countries: &[Country]) -> Result<Vec<NodePlan>, PkiError> {
        let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        countries
            .iter()
            .enumerate()
            .map(|(i, cc)| {
                let published = u16::try_from(7101 + 10 * i).map_err(|_| {
                    PkiError::Invalid(format!("{} countries is too many", countries.len()))
                })?;
                Ok(NodePlan {
                    country: *cc,
                    federation: any(7100),
                    national: any(7101),
                    metrics: Some(any(9464)),
                    reach: Some(Reach {
                        peer_endpoint: format!("adep-{}:7100", cc.as_str().to_ascii_lowercase()),
                        user_endpoint: format!("localhost:{published}"),
                        data_dir: "/var/lib/adep".into(),
                    }),
                })
            })
            .collect()
    }
}

/// The user id `adep pki init` gives a country's user of a role, like `fr-officer`.
pub fn dev_user_id(country: Country, role: Role) -> String {
    format!("{}-{}", country.as_str().to_ascii_lowercase(), role)
}

/// What `init` wrote.
#[derive(Debug)]
pub struct PkiSummary {
    /// Per country, in the order given.
    pub nodes: Vec<NodeFiles>,
}

/// The files `init` wrote for one country that its users need.
#[derive(Debug)]
pub struct NodeFiles {
    /// The country.
    pub country: Country,
    /// Its node configuration.
    pub config: PathBuf,
    /// Its CLI profiles, by role.
    pub profiles: Vec<(Role, PathBuf)>,
}

/// Writes a complete development PKI for `plans` under `out` (see the README of the
/// directory it writes, `out/README.txt`). Refuses a directory that already holds one.
pub fn init(out: &Path, plans: &[NodePlan]) -> Result<PkiSummary, PkiError> {
    if plans.is_empty() {
        return Err(PkiError::Invalid("at least one country is needed".into()));
    }
    for (i, p) in plans.iter().enumerate() {
        if plans[..i].iter().any(|q| q.country == p.country) {
            return Err(PkiError::Invalid(format!(
                "country {} is named twice",
                p.country
            )));
        }
    }
    if out.join("network-ca.pem").exists() {
        return Err(PkiError::Exists(out.to_owned()));
    }
    let network = Ca::generate(NETWORK_CA_NAME)?;
    write(&out.join("network-ca.pem"), &network.pair.cert_pem, false)?;
    write(&out.join("network-ca.key.pem"), &network.pair.key_pem, true)?;
    revoke::write_list(&network, Vec::new(), 1, &out.join("network-ca.crl.pem"))?;
    write(&out.join("README.txt"), README, false)?;

    let mut summary = PkiSummary { nodes: Vec::new() };
    for plan in plans {
        let cc = plan.country;
        let dir = out.join(cc.as_str());
        let national = Ca::generate(&national_ca_name(cc))?;
        write(&dir.join("national-ca.pem"), &national.pair.cert_pem, false)?;
        write(
            &dir.join("national-ca.key.pem"),
            &national.pair.key_pem,
            true,
        )?;
        revoke::write_list(&national, Vec::new(), 1, &dir.join("national-ca.crl.pem"))?;
        let node = network.issue(&Leaf::Node(cc))?;
        write(&dir.join("node.pem"), &node.cert_pem, false)?;
        write(&dir.join("node.key.pem"), &node.key_pem, true)?;
        let audit_key = crate::domain::audit::generate_key()
            .map_err(|_| PkiError::Random("the audit signing key"))?;
        write_bytes(&dir.join("audit.key"), &audit_key)?;
        write(&dir.join("data.key"), &new_secret_hex(), true)?;
        write(&dir.join("key-seed"), &new_secret_hex(), true)?;
        let server = national.issue(&Leaf::NationalServer(cc))?;
        write(&dir.join("national-node.pem"), &server.cert_pem, false)?;
        write(&dir.join("national-node.key.pem"), &server.key_pem, true)?;

        let mut profiles = Vec::new();
        for role in Role::ALL {
            let id = dev_user_id(cc, role);
            let user = national.issue(&Leaf::User(cc, id.clone()))?;
            write(
                &dir.join(format!("users/{role}.pem")),
                &user.cert_pem,
                false,
            )?;
            write(
                &dir.join(format!("users/{role}.key.pem")),
                &user.key_pem,
                true,
            )?;
            let profile = dir.join(format!("{role}.toml"));
            write(&profile, &profile_toml(plan, &id, role), false)?;
            profiles.push((role, profile));
        }
        let config = node_config(plan, plans);
        let text = toml::to_string_pretty(&config)
            .map_err(|e| PkiError::Invalid(format!("cannot write the configuration: {e}")))?;
        let path = dir.join("node.toml");
        write(
            &path,
            &format!(
                "# adep node configuration for {cc}, written by `adep pki init`.\n\
                 # Every field is documented in docs/operator-guide.md; relative paths are\n\
                 # resolved against this file's directory.\n\n{text}"
            ),
            false,
        )?;
        summary.nodes.push(NodeFiles {
            country: cc,
            config: path,
            profiles,
        });
    }
    Ok(summary)
}

fn node_config(plan: &NodePlan, all: &[NodePlan]) -> Config {
    let cc = plan.country;
    Config {
        country: cc,
        data_dir: plan
            .reach
            .as_ref()
            .map_or_else(|| "data".into(), |r| r.data_dir.clone()),
        data_key: "data.key".into(),
        federation: ListenerConfig {
            listen: plan.federation,
        },
        national: ListenerConfig {
            listen: plan.national,
        },
        tls: TlsConfig {
            network_ca: "../network-ca.pem".into(),
            node_cert: "node.pem".into(),
            node_key: "node.key.pem".into(),
            national_ca: "national-ca.pem".into(),
            national_cert: "national-node.pem".into(),
            national_key: "national-node.key.pem".into(),
            // The lists `adep pki revoke` updates: a reload applies them.
            crls: vec!["../network-ca.crl.pem".into(), "national-ca.crl.pem".into()],
        },
        matching: MatchingConfig {
            seed_file: "key-seed".into(),
            key_epoch: 1,
            hit_ref_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            previous_epoch_grace: std::time::Duration::from_secs(600),
        },
        followup: FollowUpConfig::default(),
        audit: AuditConfig {
            signing_key: "audit.key".into(),
            retention: std::time::Duration::from_secs(1096 * 24 * 3600),
            prune_interval: std::time::Duration::from_secs(3600),
        },
        peers: all
            .iter()
            .filter(|p| p.country != cc)
            .map(|p| PeerConfig {
                country: p.country,
                endpoint: format!(
                    "https://{}",
                    p.reach
                        .as_ref()
                        .map_or_else(|| p.federation.to_string(), |r| r.peer_endpoint.clone())
                ),
                identity: None,
                server_name: None,
            })
            .collect(),
        users: Role::ALL
            .iter()
            .map(|role| UserConfig {
                id: dev_user_id(cc, *role),
                role: *role,
            })
            .collect(),
        limits: Limits::default(),
        metrics: crate::config::MetricsConfig {
            listen: plan.metrics,
        },
        log: LogConfig::default(),
    }
}

fn profile_toml(plan: &NodePlan, user: &str, role: Role) -> String {
    format!(
        "# adep CLI profile: user {user} ({role}) of the {cc} node.\n\
         # Use it as `adep COMMAND --profile THIS_FILE` or set ADEP_PROFILE.\n\
         country = \"{cc}\"\n\
         user = \"{user}\"\n\
         node = \"https://{addr}\"\n\
         national_ca = \"national-ca.pem\"\n\
         cert = \"users/{role}.pem\"\n\
         key = \"users/{role}.key.pem\"\n",
        cc = plan.country,
        addr = plan
            .reach
            .as_ref()
            .map_or_else(|| plan.national.to_string(), |r| r.user_endpoint.clone()),
    )
}

/// A new 256-bit secret (a key seed, a data key) as hexadecimal text.
pub fn new_secret_hex() -> String {
    let mut bytes = [0u8; 32];
    // SystemRandom reads the OS generator; failure there means no randomness at all.
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the operating system's random generator failed"));
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.push('\n');
    hex
}

/// Writes a file, creating parent directories; `private` files are readable by the owner only.
pub fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    write_file(path, contents.as_bytes(), private)
}

/// Writes a private binary file (mode 0600).
fn write_bytes(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, true)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        cause: source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

const README: &str = "\
adep development PKI, written by `adep pki init`. FOR TESTS AND DEVELOPMENT ONLY.

network-ca.pem        network CA certificate: every node trusts it for its peers
network-ca.key.pem    network CA PRIVATE KEY: keep it here, never deploy it to a node
CC/node.toml          node configuration of country CC: adep-node --config CC/node.toml
CC/node.pem, .key.pem node certificate (network CA), identity adep://node/CC
CC/national-ca.pem    national CA of CC; CC/national-ca.key.pem is its PRIVATE KEY
CC/national-node.pem  the node's server certificate on the national listener (national CA)
CC/<role>.toml        CLI profile of CC's user of that role: adep status --profile CC/officer.toml
CC/users/             user certificates and keys, identity adep://user/CC/<cc>-<role>
CC/audit.key          the node's Ed25519 audit signing key (PKCS#8): it signs every audit entry
CC/data.key           the node's data key (hex): its store is encrypted under it; back it up apart
CC/key-seed           the node's own key seed (hex): its match keys derive from it; never shared
CC/data/              created by the node on first start: its store

network-ca.crl.pem    the network CA's revocation list, empty at first; every node names it in tls.crls
CC/national-ca.crl.pem the national CA's revocation list, empty at first; CC's node names it

To revoke a certificate: adep pki revoke --ca CC/national-ca.pem --cert CC/users/officer.pem
adds it to CC/national-ca.crl.pem; then adep certs reload (as CC's operator) applies it.
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::principals::CertIdentity, grpc::auth::identity_of_certificate};
    use rustls_pki_types::{CertificateDer, pem::PemObject};

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = Ca::generate(NETWORK_CA_NAME).unwrap();
        let fr: Country = "FR".parse().unwrap();
        let node = ca.issue(&Leaf::Node(fr)).unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            identity_of_certificate(&der).unwrap(),
            CertIdentity::Node(fr)
        );
        let user = ca.issue(&Leaf::User(fr, "fr-officer".into())).unwrap();
        let der = CertificateDer::from_pem_slice(user.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            identity_of_certificate(&der).unwrap(),
            CertIdentity::User(fr, "fr-officer".into())
        );
    }

    #[test]
    fn loopback_plans_leave_ten_ports_per_country() {
        let cc: Vec<Country> = ["FR", "DE"].iter().map(|c| c.parse().unwrap()).collect();
        let plans = NodePlan::loopback(&cc, 7100).unwrap();
        assert_eq!(plans[1].federation.port(), 7110);
        assert_eq!(plans[1].national.port(), 7111);
        assert!(NodePlan::loopback(&cc, 65530).is_err());
        let low = NodePlan::loopback(&cc, 0).expect_err("port 0");
        assert!(low.to_string().contains("use 1024 or above"), "{low}");
    }
}
