//! Proto to domain types and back, once, at the edge. Every failure is an
//! INVALID_ARGUMENT that names the field (with its index in a list), never the value.

use std::collections::BTreeMap;

use adep_proto::v1;
use tonic::Status;

use crate::{
    domain::identity::{self, Identity, Record, RecordId, limits},
    domain::pseudonymise::Quality,
    domain::reason::{Aim, PersonCategory, Reason},
};

/// The domain reason of a request.
pub fn reason(reason: Option<&v1::Reason>) -> Result<Reason, Status> {
    let r = reason.ok_or_else(|| Status::invalid_argument("field `reason` is required"))?;
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
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The proto form of a reason.
pub fn reason_to_proto(reason: &Reason) -> v1::Reason {
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

/// The proto quality of a domain quality.
pub fn quality_to_proto(quality: Quality) -> v1::Quality {
    match quality {
        Quality::Exact => v1::Quality::Exact,
        Quality::Strong => v1::Quality::Strong,
        Quality::Weak => v1::Quality::Weak,
    }
}

/// The reason fields as an audit event records them.
pub fn reason_json(reason: &Reason) -> serde_json::Value {
    serde_json::json!({
        "case_reference": reason.case_reference,
        "offence_category": reason.offence_category,
        "person_category": reason.person_category.name(),
        "aim": reason.aim.name(),
    })
}

/// The domain quality of a proto quality, None for UNSPECIFIED or unknown values.
pub fn quality_from_proto(value: i32) -> Option<Quality> {
    [Quality::Exact, Quality::Strong, Quality::Weak]
        .into_iter()
        .find(|q| quality_to_proto(*q) as i32 == value)
}

/// A single identity field (`field`), which is required.
pub fn identity_of(field: &str, identity: Option<&v1::Identity>) -> Result<Identity, Status> {
    let identity =
        identity.ok_or_else(|| Status::invalid_argument(format!("field `{field}` is required")))?;
    identity_in(field, identity)
}

/// The domain identity of `subjects[i]` (or another list named by `list`).
pub fn identity(list: &str, i: usize, identity: &v1::Identity) -> Result<Identity, Status> {
    identity_in(&format!("{list}[{i}]"), identity)
}

fn identity_in(at: &str, identity: &v1::Identity) -> Result<Identity, Status> {
    if identity.aliases.len() > limits::ALIASES {
        return Err(Status::invalid_argument(format!(
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
    .map_err(|e| Status::invalid_argument(format!("{at}: {e}")))
}

/// The proto identity of a domain identity (for records sent to the node).
pub fn identity_to_proto(record: &Record) -> v1::Identity {
    v1::Identity {
        sex: record.sex.map(|s| s.code().to_owned()).unwrap_or_default(),
        place_of_birth: record.place_of_birth.clone().unwrap_or_default(),
        nationalities: record.nationalities.clone(),
        ..matched_identity_to_proto(&record.identity)
    }
}

/// The proto form of the matched part of an identity (names, date of birth, aliases).
pub fn matched_identity_to_proto(identity: &Identity) -> v1::Identity {
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

/// The proto form of a record.
pub fn record_to_proto(record: &Record) -> v1::RecordData {
    v1::RecordData {
        record_id: record.id.to_string(),
        identity: Some(identity_to_proto(record)),
        payload: record.payload.clone().into_iter().collect(),
    }
}

/// The domain record of `records[i]`, with the same checks as a file row.
pub fn record(i: usize, data: v1::RecordData) -> Result<Record, Status> {
    let bad = |field: &str, problem: String| {
        Status::invalid_argument(format!("records[{i}]: field `{field}` {problem}"))
    };
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
        if !value.is_empty() {
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
