//! Who acts: countries, national users' roles, the identities certificates carry, and
//! the authenticated caller of a call.
//!
//! Identities are URIs of two forms:
//! * `adep://node/<CC>`: a node of country CC, issued by the network CA;
//! * `adep://user/<CC>/<id>`: a national user of country CC, issued by that country's
//!   national CA.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 3166-1 alpha-2 country code, upper case (`FR`, `DE`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Country([b[0], b[1]]))
        } else {
            Err(format!(
                "`{}` is not a country code: expected two upper-case letters (ISO 3166-1 alpha-2), like FR",
                s.escape_debug()
            ))
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a national user may do. Roles are separate: one role per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Searches and files follow-up requests.
    Officer,
    /// Decides on incoming follow-up requests.
    Reviewer,
    /// Imports records, manages keys and peers, reads health.
    Operator,
    /// Exports and verifies the audit log.
    Auditor,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Officer, Role::Reviewer, Role::Operator, Role::Auditor];

    /// Lower-case name, as in configuration files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Reviewer => "reviewer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity URI of a country's node.
pub fn node_identity(country: Country) -> String {
    format!("adep://node/{country}")
}

/// The identity URI of a national user.
pub fn user_identity(country: Country, id: &str) -> String {
    format!("adep://user/{country}/{id}")
}

/// Checks a national user id: 1-64 characters of `a-z0-9._-`, starting with a letter or digit.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a user id: 1-64 characters of a-z 0-9 . _ -, starting with a letter or digit",
            id.escape_debug()
        ))
    }
}

/// A parsed certificate identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// A node: `adep://node/<CC>`.
    Node(Country),
    /// A national user: `adep://user/<CC>/<id>`.
    User(Country, String),
}

impl CertIdentity {
    /// Parses an identity URI.
    pub fn parse(uri: &str) -> Result<CertIdentity, String> {
        let bad = || {
            format!(
                "`{}` is not an adep identity: expected adep://node/CC or adep://user/CC/ID",
                uri.escape_debug()
            )
        };
        let rest = uri.strip_prefix("adep://").ok_or_else(bad)?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("node"), Some(cc), None, None) => {
                Ok(CertIdentity::Node(cc.parse().map_err(|_| bad())?))
            }
            (Some("user"), Some(cc), Some(id), None) => {
                validate_user_id(id)?;
                Ok(CertIdentity::User(
                    cc.parse().map_err(|_| bad())?,
                    id.to_owned(),
                ))
            }
            _ => Err(bad()),
        }
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        match self {
            CertIdentity::Node(cc) => node_identity(*cc),
            CertIdentity::User(cc, id) => user_identity(*cc, id),
        }
    }
}

/// An authenticated and authorised caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A configured peer node.
    Peer(Country),
    /// A national user with their role.
    User {
        /// The user's id.
        id: String,
        /// The user's role.
        role: Role,
    },
}
