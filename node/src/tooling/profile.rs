//! CLI profiles: how a national user reaches their node. A profile is a small TOML file
//! (written by `adep pki init`) naming the node's national endpoint, the national CA and
//! the user's certificate and key. Relative paths are resolved against the profile's
//! directory.

use std::path::{Path, PathBuf};

use adep_proto::v1::national_client::NationalClient;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{
    config::parse_endpoint,
    domain::principals::CertIdentity,
    domain::principals::Country,
    grpc::tls::{self, Target},
};

/// A CLI profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The node's country; when set, the node's certificate must carry `adep://node/<CC>`.
    #[serde(default)]
    pub country: Option<Country>,
    /// The user id, for display only: the node reads identity from the certificate.
    #[serde(default)]
    pub user: Option<String>,
    /// `https://host:port` of the node's national listener.
    pub node: String,
    /// Name checked against the node's certificate (default: the host of `node`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The national CA certificate.
    pub national_ca: PathBuf,
    /// The user's certificate.
    pub cert: PathBuf,
    /// The user's private key.
    pub key: PathBuf,
}

/// A profile that cannot be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read.
    #[error("{path}: cannot read the profile: {cause}")]
    Read {
        /// The profile.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is malformed or a field is invalid.
    #[error("{path}: {message}")]
    Invalid {
        /// The profile.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate or key file is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            cause: source,
        })?;
        let invalid = |message: String| ProfileError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut p: Profile = toml::from_str(&text).map_err(|e| {
            // A node's configuration given as a profile: say so, not which field.
            let node_config = toml::from_str::<toml::Table>(&text).is_ok_and(|t| {
                ["federation", "national", "data_dir", "audit"]
                    .iter()
                    .any(|k| t.contains_key(*k))
            });
            if node_config {
                invalid(
                    "this is a node configuration (for `adep-node --config`), not a CLI profile; \
                     the profiles are the <role>.toml files `adep pki init` wrote beside it"
                        .into(),
                )
            } else {
                invalid(crate::config::toml_error(&text, &e))
            }
        })?;
        parse_endpoint(&p.node).map_err(|m| invalid(format!("field `node`: {m}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for f in [&mut p.national_ca, &mut p.cert, &mut p.key] {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        Ok(p)
    }

    /// A channel to the node over mutual TLS as this profile's user.
    pub fn channel(&self) -> Result<Channel, ProfileError> {
        let roots = tls::root_store(&self.national_ca)?;
        let identity = (tls::load_certs(&self.cert)?, tls::load_key(&self.key)?);
        let config = tls::client_config(roots, Some(identity))?;
        let ep = parse_endpoint(&self.node).map_err(|message| ProfileError::Invalid {
            path: "profile".into(),
            message,
        })?;
        tls::channel(
            Target {
                host: ep.host,
                port: ep.port,
                server_name: self.server_name.clone(),
                identity: self.country.map(CertIdentity::Node),
            },
            config,
            std::time::Duration::from_secs(10),
        )
        .map_err(|message| ProfileError::Invalid {
            path: "profile".into(),
            message: format!("field `node`: {message}"),
        })
    }

    /// A client of the national API.
    pub fn national_client(&self) -> Result<NationalClient<Channel>, ProfileError> {
        Ok(NationalClient::new(self.channel()?))
    }
}
