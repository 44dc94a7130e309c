//! What the CLI sends to its node's national API, built from domain types: records
//! to import, subjects to search.

use adep_proto::v1;

use crate::domain::identity::{Identity, Record};

/// Records per message of an import stream (the node accepts any size within its
/// message limit).
pub const IMPORT_BATCH: usize = 1_000;

/// A subject's names, date of birth and aliases.
pub fn identity(identity: &Identity) -> v1::Identity {
    v1::Identity {
        family_name: identity.name.family.clone(),
        given_names: identity.name.given.clone(),
        date_of_birth: identity.date_of_birth.to_string(),
        aliases: identity
            .aliases
            .iter()
            .map(|a| v1::Alias {
                family_name: a.family.clone(),
                given_names: a.given.clone(),
            })
            .collect(),
        ..v1::Identity::default()
    }
}

/// A record's identity with its other identity columns (sex, place of birth,
/// nationalities).
pub fn record_identity(record: &Record) -> v1::Identity {
    v1::Identity {
        sex: record.sex.map(|s| s.code().to_owned()).unwrap_or_default(),
        place_of_birth: record.place_of_birth.clone().unwrap_or_default(),
        nationalities: record.nationalities.clone(),
        ..identity(&record.identity)
    }
}

/// A record to import.
pub fn record(record: &Record) -> v1::RecordData {
    v1::RecordData {
        record_id: record.id.to_string(),
        identity: Some(record_identity(record)),
        payload: record.payload.clone().into_iter().collect(),
    }
}
