//! Who is calling: the identity carried by a certificate's URI SAN, and what that
//! identity may do on each listener.
//!
//! Identities are URIs of two forms:
//! * `adep://node/<CC>`: a node of country CC, issued by the network CA;
//! * `adep://user/<CC>/<id>`: a national user of country CC, issued by that country's
//!   national CA.
//!
//! The chain of a client certificate is verified against the listener's own CA
//! (see `tls`), then [`Authorizer`] maps the verified identity to a [`Principal`] or a
//! [`Refusal`]. The certificate's CN is never used.

use std::collections::HashMap;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{
    config::Config,
    domain::principals::{CertIdentity, Country, Principal, Role},
};

/// Reads the adep identity from a DER certificate's URI SANs. Exactly one URI SAN of the
/// `adep://` scheme must be present.
pub fn identity_of_certificate(der: &[u8]) -> Result<CertIdentity, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| "the certificate cannot be parsed".to_owned())?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "the certificate's subject alternative names cannot be parsed".to_owned())?
        .ok_or_else(|| "the certificate has no subject alternative name".to_owned())?;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("adep://") => Some(*u),
        _ => None,
    });
    let uri = found
        .next()
        .ok_or_else(|| "the certificate carries no adep:// URI identity".to_owned())?;
    if found.next().is_some() {
        return Err("the certificate carries more than one adep:// URI identity".into());
    }
    CertIdentity::parse(uri)
}

/// The listener a call arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Peer nodes, network CA.
    Federation,
    /// National users, national CA.
    National,
}

impl Listener {
    /// Name used in messages and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Listener::Federation => "federation",
            Listener::National => "national",
        }
    }
}

/// The outcome of TLS-level authentication of one connection.
#[derive(Clone, Debug)]
pub enum Authn {
    /// The client presented no certificate.
    Anonymous,
    /// The client's certificate did not verify against the listener's CA.
    Untrusted(String),
    /// The client's certificate chains to the listener's CA, which has revoked it
    /// (`tls.crls`); with the identity its SAN names, if any.
    Revoked(Option<CertIdentity>),
    /// The chain verified; the identity was read from the leaf's SAN.
    Verified(CertIdentity),
    /// The chain verified but carries no usable identity.
    NoIdentity(String),
}

/// Why a caller was refused. Maps to gRPC UNAUTHENTICATED or PERMISSION_DENIED.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No certificate, or one that does not verify: UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A verified certificate whose identity may not use this listener: PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
}

/// Maps verified identities to principals for one listener.
#[derive(Clone, Debug)]
pub struct Authorizer {
    listener: Listener,
    country: Country,
    peers: HashMap<String, Country>,
    users: HashMap<String, Role>,
}

impl Authorizer {
    /// The authoriser of `listener` under `config`.
    pub fn new(listener: Listener, config: &Config) -> Authorizer {
        Authorizer {
            listener,
            country: config.country,
            peers: config
                .peers
                .iter()
                .map(|p| (p.expected_identity(), p.country))
                .collect(),
            users: config
                .users
                .iter()
                .map(|u| (u.id.clone(), u.role))
                .collect(),
        }
    }

    /// Decides who the caller of a connection is, or why it is refused.
    pub fn authorize(&self, authn: &Authn) -> Result<Principal, Refusal> {
        let ca = match self.listener {
            Listener::Federation => "the network CA",
            Listener::National => "the national CA",
        };
        let identity = match authn {
            Authn::Anonymous => {
                return Err(Refusal::Unauthenticated(format!(
                    "the {} listener requires a client certificate issued by {ca}",
                    self.listener.as_str()
                )));
            }
            Authn::Untrusted(why) => {
                return Err(Refusal::Unauthenticated(format!(
                    "client certificate refused on the {} listener: not issued by {ca} ({why})",
                    self.listener.as_str()
                )));
            }
            Authn::Revoked(_) => {
                return Err(Refusal::Unauthenticated(format!(
                    "client certificate refused on the {} listener: revoked by {ca}",
                    self.listener.as_str()
                )));
            }
            Authn::NoIdentity(why) => {
                return Err(Refusal::PermissionDenied(format!(
                    "client certificate refused: {why}"
                )));
            }
            Authn::Verified(id) => id,
        };
        match (self.listener, identity) {
            (Listener::Federation, CertIdentity::Node(_)) => self
                .peers
                .get(&identity.uri())
                .map(|cc| Principal::Peer(*cc))
                .ok_or_else(|| {
                    Refusal::PermissionDenied(format!(
                        "{} is not a configured peer of this node",
                        identity.uri()
                    ))
                }),
            (Listener::Federation, CertIdentity::User(..)) => Err(Refusal::PermissionDenied(
                "a national user certificate cannot call the federation listener".into(),
            )),
            (Listener::National, CertIdentity::Node(_)) => Err(Refusal::PermissionDenied(
                "a node certificate cannot call the national listener".into(),
            )),
            (Listener::National, CertIdentity::User(cc, id)) => {
                if *cc != self.country {
                    return Err(Refusal::PermissionDenied(format!(
                        "user certificate of country {cc} cannot call a node of {}",
                        self.country
                    )));
                }
                self.users
                    .get(id)
                    .map(|role| Principal::User {
                        id: id.clone(),
                        role: *role,
                    })
                    .ok_or_else(|| {
                        Refusal::PermissionDenied(format!("user `{id}` has no role on this node"))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Country {
        "FR".parse().unwrap()
    }

    fn authorizer(listener: Listener) -> Authorizer {
        Authorizer {
            listener,
            country: fr(),
            peers: [("adep://node/DE".to_owned(), "DE".parse().unwrap())].into(),
            users: [("fr-officer".to_owned(), Role::Officer)].into(),
        }
    }

    #[test]
    fn parses_identities() {
        assert_eq!(
            CertIdentity::parse("adep://node/FR").unwrap(),
            CertIdentity::Node(fr())
        );
        assert_eq!(
            CertIdentity::parse("adep://user/FR/fr-officer").unwrap(),
            CertIdentity::User(fr(), "fr-officer".into())
        );
        for bad in [
            "adep://node/fr",
            "adep://node/FR/x",
            "https://node/FR",
            "adep://user/FR/",
            "adep://user/FR/Upper",
            "adep://admin/FR",
        ] {
            assert!(CertIdentity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn federation_admits_configured_peers_only() {
        let a = authorizer(Listener::Federation);
        let de = Authn::Verified(CertIdentity::Node("DE".parse().unwrap()));
        assert_eq!(a.authorize(&de), Ok(Principal::Peer("DE".parse().unwrap())));
        let it = Authn::Verified(CertIdentity::Node("IT".parse().unwrap()));
        assert!(matches!(
            a.authorize(&it),
            Err(Refusal::PermissionDenied(_))
        ));
        let user = Authn::Verified(CertIdentity::User(fr(), "fr-officer".into()));
        assert!(matches!(
            a.authorize(&user),
            Err(Refusal::PermissionDenied(_))
        ));
        assert!(matches!(
            a.authorize(&Authn::Anonymous),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn national_admits_users_with_a_role_only() {
        let a = authorizer(Listener::National);
        let officer = Authn::Verified(CertIdentity::User(fr(), "fr-officer".into()));
        assert_eq!(
            a.authorize(&officer),
            Ok(Principal::User {
                id: "fr-officer".into(),
                role: Role::Officer
            })
        );
        let nobody = Authn::Verified(CertIdentity::User(fr(), "fr-nobody".into()));
        assert!(matches!(
            a.authorize(&nobody),
            Err(Refusal::PermissionDenied(_))
        ));
        let foreign = Authn::Verified(CertIdentity::User(
            "DE".parse().unwrap(),
            "fr-officer".into(),
        ));
        assert!(matches!(
            a.authorize(&foreign),
            Err(Refusal::PermissionDenied(_))
        ));
        let node = Authn::Verified(CertIdentity::Node("DE".parse().unwrap()));
        assert!(matches!(
            a.authorize(&node),
            Err(Refusal::PermissionDenied(_))
        ));
        assert!(matches!(
            a.authorize(&Authn::Untrusted("unknown issuer".into())),
            Err(Refusal::Unauthenticated(_))
        ));
    }
}
