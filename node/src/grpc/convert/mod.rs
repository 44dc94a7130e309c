//! Every conversion between proto and domain types, once, at the edge: requests as
//! they arrive (`TryFrom`, failing with [`Invalid`] naming the field, with its index
//! in a list, never the value), answers as they leave (`From`), and the federation
//! messages this node sends to peers and the answers it gets back ([`federation`]).
//! The national API's are in [`national`].

pub mod federation;
pub mod national;

use std::collections::BTreeMap;

use adep_proto::v1;
use tonic::Status;

use crate::domain::{
    audit::Checkpoint,
    followup::{
        Decision, FollowUpId, MAX_JUSTIFICATION_BYTES, MAX_TEXT_BYTES, MIN_DECISION_REASON_CHARS,
        MIN_JUSTIFICATION_CHARS, State,
    },
    hitref::HitRef,
    identity::{self, Identity, Record, RecordId, limits},
    pseudonymise::Quality,
    reason::{Aim, PersonCategory, Reason},
};

/// A field of a request that is missing or malformed: INVALID_ARGUMENT, with a
/// message that names the field and never holds the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// `field` with `problem`, like ``field `hit_ref`: a hit reference is 40 ...``.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Invalid {
        Invalid(format!("field `{field}`: {problem}"))
    }
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Status {
        Status::invalid_argument(e.0)
    }
}

/// The domain reason of a request.
pub fn reason(reason: Option<&v1::Reason>) -> Result<Reason, Invalid> {
    let r = reason.ok_or_else(|| Invalid("field `reason` is required".into()))?;
    let person = match v1::PersonCategory::try_from(r.person_category) {
        Ok(v1::PersonCategory::Suspect) => Some(PersonCategory::Suspect),
        Ok(v1::PersonCategory::Convicted) => Some(PersonCategory::Convicted),
        Ok(v1::PersonCategory::Victim) => Some(PersonCategory::Victim),
        Ok(v1::PersonCategory::MissingPerson) => Some(PersonCategory::MissingPerson),
        Ok(v1::PersonCategory::UnidentifiedRemains) => Some(PersonCategory::UnidentifiedRemains),
        _ => None,
    };
    let aim = match v1::Aim::try_from(r.aim) {
        Ok(v1::Aim::Identify) => Some(Aim::Identify),
        Ok(v1::Aim::LearnMore) => Some(Aim::LearnMore),
        _ => None,
    };
    Reason::new(&r.case_reference, &r.offence_category, person, aim)
        .map_err(|e| Invalid(e.to_string()))
}

impl From<&Reason> for v1::Reason {
    fn from(reason: &Reason) -> v1::Reason {
        let person = match reason.person_category {
            PersonCategory::Suspect => v1::PersonCategory::Suspect,
            PersonCategory::Convicted => v1::PersonCategory::Convicted,
            PersonCategory::Victim => v1::PersonCategory::Victim,
            PersonCategory::MissingPerson => v1::PersonCategory::MissingPerson,
            PersonCategory::UnidentifiedRemains => v1::PersonCategory::UnidentifiedRemains,
        };
        let aim = match reason.aim {
            Aim::Identify => v1::Aim::Identify,
            Aim::LearnMore => v1::Aim::LearnMore,
        };
        v1::Reason {
            case_reference: reason.case_reference.clone(),
            offence_category: reason.offence_category.clone(),
            person_category: person as i32,
            aim: aim as i32,
        }
    }
}

impl From<Quality> for v1::Quality {
    fn from(quality: Quality) -> v1::Quality {
        match quality {
            Quality::Exact => v1::Quality::Exact,
            Quality::Strong => v1::Quality::Strong,
            Quality::Weak => v1::Quality::Weak,
        }
    }
}

/// The domain quality of a proto quality, None for UNSPECIFIED or unknown values.
pub fn quality(value: i32) -> Option<Quality> {
    Quality::ALL
        .into_iter()
        .find(|q| v1::Quality::from(*q) as i32 == value)
}

impl From<State> for v1::FollowUpState {
    fn from(state: State) -> v1::FollowUpState {
        match state {
            State::Pending => v1::FollowUpState::Pending,
            State::OnHold => v1::FollowUpState::OnHold,
            State::Approved => v1::FollowUpState::Approved,
            State::Delivered => v1::FollowUpState::Delivered,
            State::Refused => v1::FollowUpState::Refused,
            State::Expired => v1::FollowUpState::Expired,
            State::Withdrawn => v1::FollowUpState::Withdrawn,
        }
    }
}

/// The follow-up state of a proto state, None for UNSPECIFIED or unknown values.
pub fn state(value: i32) -> Option<State> {
    State::ALL
        .into_iter()
        .find(|s| v1::FollowUpState::from(*s) as i32 == value)
}

impl From<Decision> for v1::Decision {
    fn from(d: Decision) -> v1::Decision {
        match d {
            Decision::Approve => v1::Decision::Approve,
            Decision::Refuse => v1::Decision::Refuse,
            Decision::Hold => v1::Decision::Hold,
        }
    }
}

/// Longest checkpoint signature accepted, in bytes (Ed25519's is 64).
const CHECKPOINT_SIGNATURE_BYTES: usize = 128;

/// An audit checkpoint in `field`, if sent.
pub fn checkpoint(
    field: &str,
    c: Option<&v1::AuditCheckpoint>,
) -> Result<Option<Checkpoint>, Invalid> {
    let Some(c) = c else {
        return Ok(None);
    };
    let hash = <[u8; 32]>::try_from(c.hash.as_slice())
        .map_err(|_| Invalid(format!("field `{field}.hash` must be 32 bytes")))?;
    if c.signature.len() > CHECKPOINT_SIGNATURE_BYTES {
        return Err(Invalid(format!(
            "field `{field}.signature` is longer than {CHECKPOINT_SIGNATURE_BYTES} bytes"
        )));
    }
    Ok(Some(Checkpoint {
        seq: c.seq,
        hash,
        time: c.time,
        signature: c.signature.to_vec(),
    }))
}

impl From<&Checkpoint> for v1::AuditCheckpoint {
    fn from(c: &Checkpoint) -> v1::AuditCheckpoint {
        v1::AuditCheckpoint {
            seq: c.seq,
            hash: c.hash.to_vec(),
            time: c.time,
            signature: c.signature.clone(),
        }
    }
}

/// A follow-up id in `field`.
pub fn followup_id(field: &str, id: &str) -> Result<FollowUpId, Invalid> {
    id.parse().map_err(|_| {
        Invalid(format!(
            "field `{field}` must be 32 lower-case hexadecimal digits"
        ))
    })
}

/// A hit reference in field `hit_ref`.
pub fn hit_ref(value: &str) -> Result<HitRef, Invalid> {
    value
        .parse()
        .map_err(|e: &str| Invalid::field("hit_ref", e))
}

/// A bounded free-text field; `required` refuses an empty (or blank) one.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<String, Invalid> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(Invalid(format!("field `{field}` is required")));
    }
    if value.len() > max {
        return Err(Invalid(format!(
            "field `{field}` is longer than {max} bytes"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Invalid(format!(
            "field `{field}` contains control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Required free text a person reads (`field`, at most `max` bytes): at least `min`
/// characters, half as many of them letters; `why` ends the error, saying what it is
/// for.
fn reviewable(
    field: &str,
    value: &str,
    max: usize,
    min: usize,
    why: &str,
) -> Result<String, Invalid> {
    let value = text(field, value, max, true)?;
    if value.chars().count() < min || value.chars().filter(|c| c.is_alphabetic()).count() < min / 2
    {
        return Err(Invalid(format!(
            "field `{field}` must say in at least {min} characters, {} of them letters, {why}",
            min / 2
        )));
    }
    Ok(value)
}

/// A follow-up's justification: required free text of at least
/// [`MIN_JUSTIFICATION_CHARS`] characters, with letters, for its reviewer.
pub fn justification(value: &str) -> Result<String, Invalid> {
    reviewable(
        "justification",
        value,
        MAX_JUSTIFICATION_BYTES,
        MIN_JUSTIFICATION_CHARS,
        "why the record is needed: a reviewer reads it",
    )
}

/// A reviewer's reason for a decision: required free text of at least
/// [`MIN_DECISION_REASON_CHARS`] characters, with letters, for the requesting officer
/// and the auditors.
pub fn decision_reason(value: &str) -> Result<String, Invalid> {
    reviewable(
        "reason",
        value,
        MAX_TEXT_BYTES,
        MIN_DECISION_REASON_CHARS,
        "why: the requesting officer and the auditors read it",
    )
}

/// A single identity field (`field`), which is required.
pub fn identity_of(field: &str, identity: Option<&v1::Identity>) -> Result<Identity, Invalid> {
    let identity = identity.ok_or_else(|| Invalid(format!("field `{field}` is required")))?;
    identity_in(field, identity)
}

/// The domain identity of `subjects[i]` (or another list named by `list`).
pub fn identity(list: &str, i: usize, identity: &v1::Identity) -> Result<Identity, Invalid> {
    identity_in(&format!("{list}[{i}]"), identity)
}

fn identity_in(at: &str, identity: &v1::Identity) -> Result<Identity, Invalid> {
    if identity.aliases.len() > limits::ALIASES {
        return Err(Invalid(format!(
            "{at}: field `aliases` has more than {} items",
            limits::ALIASES
        )));
    }
    let aliases: Vec<(String, String)> = identity
        .aliases
        .iter()
        .map(|a| (a.family_name.clone(), a.given_names.clone()))
        .collect();
    Identity::from_fields(
        &identity.family_name,
        &identity.given_names,
        &identity.date_of_birth,
        &aliases,
    )
    .map_err(|e| Invalid(format!("{at}: {e}")))
}

/// The proto form of the matched part of an identity (names, date of birth, aliases).
impl From<&Identity> for v1::Identity {
    fn from(identity: &Identity) -> v1::Identity {
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
}

/// The proto form of a record (a reviewer sees it next to a request).
impl From<&Record> for v1::RecordData {
    fn from(record: &Record) -> v1::RecordData {
        v1::RecordData {
            record_id: record.id.to_string(),
            identity: Some(v1::Identity {
                sex: record.sex.map(|s| s.code().to_owned()).unwrap_or_default(),
                place_of_birth: record.place_of_birth.clone().unwrap_or_default(),
                nationalities: record.nationalities.clone(),
                ..v1::Identity::from(&record.identity)
            }),
            payload: record.payload.clone().into_iter().collect(),
        }
    }
}

/// The domain record of `records[i]`, with the same checks as a file row.
pub fn record(i: usize, data: v1::RecordData) -> Result<Record, Invalid> {
    let bad =
        |field: &str, problem: String| Invalid(format!("records[{i}]: field `{field}` {problem}"));
    let id = RecordId::try_from(data.record_id).map_err(|p| bad("record_id", p.to_string()))?;
    let proto = data
        .identity
        .ok_or_else(|| bad("identity", "is required".into()))?;
    let identity = identity("records", i, &proto)?;
    let sex = identity::parse_sex(&proto.sex).map_err(|p| bad("sex", p.to_string()))?;
    let place = identity::parse_place_of_birth(&proto.place_of_birth)
        .map_err(|p| bad("place_of_birth", p.to_string()))?;
    let nationalities = identity::parse_nationalities(&proto.nationalities.join(";"))
        .map_err(|p| bad("nationality", p.to_string()))?;
    if data.payload.len() > limits::COLUMNS {
        return Err(bad(
            "payload",
            format!("has more than {} fields", limits::COLUMNS),
        ));
    }
    let mut payload = BTreeMap::new();
    for (name, value) in data.payload {
        let reserved = identity::IDENTITY_COLUMNS.contains(&name.as_str());
        if reserved || identity::check_column_name(&name).is_err() {
            return Err(bad(
                "payload",
                "has a field name that is not allowed".into(),
            ));
        }
        if value.len() > limits::PAYLOAD_VALUE_BYTES {
            return Err(bad(
                "payload",
                format!("has a value longer than {}", limits::PAYLOAD_VALUE_BYTES),
            ));
        }
        if value.contains('\0') {
            return Err(bad("payload", "has a value holding a NUL character".into()));
        }
        if name == "offence_category" && !value.trim().is_empty() {
            let code = crate::domain::reason::offence_category(&value).ok_or_else(|| {
                bad(
                    "payload.offence_category",
                    "is not an ECRIS offence category code such as `0301 00`".into(),
                )
            })?;
            payload.insert(name, code);
        } else if !value.is_empty() {
            payload.insert(name, value);
        }
    }
    Ok(Record {
        id,
        identity,
        sex,
        place_of_birth: place,
        nationalities,
        payload,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn texts_a_person_reads_have_a_documented_minimum() {
        assert!(super::justification("x").is_err());
        assert!(
            super::justification("1234567890 1234567890 123").is_err(),
            "letters"
        );
        assert!(super::justification("Suspect in case FR-2026-1.").is_ok());
        let short = super::decision_reason("ok").expect_err("too short");
        assert!(short.0.contains("at least 10 characters"), "{short:?}");
        assert!(super::decision_reason("2026-12-02").is_err(), "letters");
        assert!(super::decision_reason("Proportionate.").is_ok());
    }
}
