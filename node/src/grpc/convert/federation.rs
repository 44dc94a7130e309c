//! The federation API's messages: the calls peers make to this node (checked here
//! into domain types) and this node's answers; the calls this node makes to peers
//! (built here for the peer clients) and the answers it gets back (checked here).

use std::collections::BTreeMap;

use adep_proto::v1;

use super::{
    Invalid, checkpoint, followup_id, hit_ref, identity_of, justification, quality, reason, state,
    text,
};
use crate::{
    app::{
        answer::{IssuedHitRef, MatchCall},
        evaluate::{EvaluateCall, Evaluation},
        peers::{EvaluateQuery, MatchQuery, PeerHit},
    },
    domain::{
        followup::{DecisionNotice, Filing, MAX_OFFICER_ID_BYTES, MAX_TEXT_BYTES, Receipt, State},
        identity,
        principals::Country,
        pseudonymise::{
            DIGEST_BYTES, Digest, HashedKey, KeyEpoch, KeyKind,
            oprf::{ELEMENT_BYTES, Element},
        },
    },
};

/// Longest request id of a Match, in bytes.
pub const REQUEST_ID_BYTES: usize = 64;

/// Checks a Match's request id: 1-64 bytes of `A-Za-z0-9-_`.
pub fn request_id(id: &str) -> Result<String, Invalid> {
    if id.is_empty()
        || id.len() > REQUEST_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Invalid(
            "field `request_id` must be 1-64 characters of A-Z a-z 0-9 - _".into(),
        ));
    }
    Ok(id.to_owned())
}

/// The keys of `subjects[i]` as hashed keys.
fn keys(i: usize, subject: &v1::MatchSubject) -> Result<Vec<HashedKey>, Invalid> {
    subject
        .keys
        .iter()
        .enumerate()
        .map(|(j, key)| {
            let kind = KeyKind::from_code(key.kind).ok_or_else(|| {
                Invalid(format!(
                    "field `subjects[{i}].keys[{j}].kind`: {} is not a key kind of scheme v2",
                    key.kind
                ))
            })?;
            let digest = Digest::try_from(key.digest.as_ref()).map_err(|len| {
                Invalid(format!(
                    "field `subjects[{i}].keys[{j}].digest`: {len} bytes, expected {DIGEST_BYTES}"
                ))
            })?;
            Ok(HashedKey { kind, digest })
        })
        .collect()
}

impl TryFrom<&v1::MatchRequest> for MatchCall {
    type Error = Invalid;

    /// The call, once its subjects and keys are within the limits
    /// ([`crate::app::answer::check_bounds`], checked before this).
    fn try_from(m: &v1::MatchRequest) -> Result<MatchCall, Invalid> {
        Ok(MatchCall {
            request_id: request_id(&m.request_id)?,
            reason: reason(m.reason.as_ref())?,
            epoch: KeyEpoch(m.key_epoch),
            peer_head: checkpoint("audit_head", m.audit_head.as_ref())?,
            subjects: m
                .subjects
                .iter()
                .enumerate()
                .map(|(i, s)| keys(i, s))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Elements as 32-byte arrays; `field` names them in an error (`subjects[0].elements`).
fn elements(field: &str, elements: &[prost::bytes::Bytes]) -> Result<Vec<Element>, Invalid> {
    elements
        .iter()
        .enumerate()
        .map(|(j, e)| {
            Element::try_from(e.as_ref()).map_err(|len| {
                Invalid(format!(
                    "field `{field}[{j}]`: {len} bytes, expected {ELEMENT_BYTES}"
                ))
            })
        })
        .collect()
}

fn bytes_of(elements: &[Element]) -> Vec<prost::bytes::Bytes> {
    elements
        .iter()
        .map(|e| prost::bytes::Bytes::copy_from_slice(&e.0))
        .collect()
}

impl TryFrom<&v1::EvaluateRequest> for EvaluateCall {
    type Error = Invalid;

    /// The call, once its subjects and elements are within the limits
    /// ([`crate::app::evaluate::check_bounds`], checked before this). Whether each
    /// element is a group element is checked when it is evaluated.
    fn try_from(m: &v1::EvaluateRequest) -> Result<EvaluateCall, Invalid> {
        Ok(EvaluateCall {
            request_id: request_id(&m.request_id)?,
            subjects: m
                .subjects
                .iter()
                .enumerate()
                .map(|(i, s)| elements(&format!("subjects[{i}].elements"), &s.elements))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&Evaluation> for v1::EvaluateResponse {
    fn from(e: &Evaluation) -> v1::EvaluateResponse {
        v1::EvaluateResponse {
            key_epoch: e.epoch.0,
            subjects: e
                .subjects
                .iter()
                .map(|s| v1::EvaluatedSubject {
                    elements: bytes_of(s),
                })
                .collect(),
        }
    }
}

/// An Evaluate call from `own` country.
pub fn evaluate_request(own: Country, query: &EvaluateQuery) -> v1::EvaluateRequest {
    v1::EvaluateRequest {
        request_id: query.request_id.clone(),
        country: own.to_string(),
        subjects: query
            .subjects
            .iter()
            .map(|s| v1::BlindedSubject {
                elements: bytes_of(s),
            })
            .collect(),
    }
}

/// A peer's evaluation, its elements of the right length (whether they are group
/// elements, and one per element asked, is checked when they are finalized).
pub fn peer_evaluation(answer: v1::EvaluateResponse) -> Result<Evaluation, String> {
    Ok(Evaluation {
        epoch: KeyEpoch(answer.key_epoch),
        subjects: answer
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| elements(&format!("subjects[{i}].elements"), &s.elements))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the peer's evaluation is malformed: {}", e.0))?,
    })
}

/// The answer to `request`: for each of its subjects, the hits issued for it.
pub fn match_response(request: &v1::MatchRequest, issued: &[IssuedHitRef]) -> v1::MatchResponse {
    v1::MatchResponse {
        results: request
            .subjects
            .iter()
            .enumerate()
            .map(|(i, subject)| v1::SubjectResult {
                subject: subject.subject,
                hits: issued
                    .iter()
                    .filter(|h| h.subject as usize == i)
                    .map(|h| v1::Hit {
                        hit_ref: h.hit_ref.to_string(),
                        quality: v1::Quality::from(h.quality) as i32,
                        expires_at: h.expires_at,
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl TryFrom<v1::FollowUpFiling> for Filing {
    type Error = Invalid;

    fn try_from(f: v1::FollowUpFiling) -> Result<Filing, Invalid> {
        Ok(Filing {
            id: followup_id("request_id", &f.request_id)?,
            hit_ref: hit_ref(&f.hit_ref)?,
            reason: reason(f.reason.as_ref())?,
            justification: justification(&f.justification)?,
            offence_description: text(
                "offence_description",
                &f.offence_description,
                MAX_TEXT_BYTES,
                true,
            )?,
            subject: identity_of("subject", f.subject.as_ref())?,
            officer_id: text("officer_id", &f.officer_id, MAX_OFFICER_ID_BYTES, true)?,
            audit_head: checkpoint("audit_head", f.audit_head.as_ref())?,
        })
    }
}

impl From<&Receipt> for v1::FollowUpReceipt {
    fn from(r: &Receipt) -> v1::FollowUpReceipt {
        v1::FollowUpReceipt {
            request_id: r.id.to_string(),
            state: v1::FollowUpState::from(r.state) as i32,
            deadline_at: r.deadline_at,
            expires_at: r.expires_at,
        }
    }
}

impl TryFrom<v1::FollowUpDecision> for DecisionNotice {
    type Error = Invalid;

    fn try_from(d: v1::FollowUpDecision) -> Result<DecisionNotice, Invalid> {
        let id = followup_id("request_id", &d.request_id)?;
        let new_state = match state(d.state) {
            Some(s @ (State::OnHold | State::Approved | State::Refused | State::Expired)) => s,
            _ => {
                return Err(Invalid(
                    "field `state` must be ON_HOLD, APPROVED, REFUSED or EXPIRED".into(),
                ));
            }
        };
        if new_state != State::Approved && !d.core_data.is_empty() {
            return Err(Invalid(
                "field `core_data`: only an approval releases data".into(),
            ));
        }
        let reason = text("reason", &d.reason, MAX_TEXT_BYTES, false)?;
        let max_fields = identity::limits::COLUMNS + 16;
        if d.core_data.len() > max_fields {
            return Err(Invalid(format!(
                "field `core_data`: more than {max_fields} fields"
            )));
        }
        for (k, v) in &d.core_data {
            identity::check_column_name(k)
                .map_err(|p| Invalid(format!("field `core_data`: a key {p}")))?;
            text(
                "core_data value",
                v,
                identity::limits::PAYLOAD_VALUE_BYTES,
                false,
            )?;
        }
        let audit_head = checkpoint("audit_head", d.audit_head.as_ref())?;
        Ok(DecisionNotice {
            audit_head,
            id,
            state: new_state,
            reason,
            core_data: d.core_data.into_iter().collect::<BTreeMap<_, _>>(),
            decided_at: d.decided_at,
        })
    }
}

// ---- What this node sends to peers, and their answers ----

/// A Match call from `own` country.
pub fn match_request(own: Country, query: &MatchQuery) -> v1::MatchRequest {
    v1::MatchRequest {
        request_id: query.request_id.clone(),
        country: own.to_string(),
        key_epoch: query.epoch.0,
        audit_head: Some(v1::AuditCheckpoint::from(&query.head)),
        reason: Some(v1::Reason::from(&query.reason)),
        subjects: query
            .subjects
            .iter()
            .enumerate()
            .map(|(i, keys)| v1::MatchSubject {
                subject: i as u32,
                keys: keys
                    .iter()
                    .map(|k| v1::MatchKey {
                        kind: k.kind.code(),
                        digest: prost::bytes::Bytes::copy_from_slice(&k.digest.0),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The hits of a peer's Match answer; an answer with a malformed hit is refused
/// whole, naming what is wrong.
pub fn peer_hits(answer: v1::MatchResponse) -> Result<Vec<PeerHit>, String> {
    let mut hits = Vec::new();
    for result in answer.results {
        for hit in result.hits {
            hits.push(PeerHit {
                subject: result.subject,
                hit_ref: hit
                    .hit_ref
                    .parse()
                    .map_err(|_| "the peer answered with a malformed hit reference")?,
                quality: quality(hit.quality)
                    .ok_or("the peer answered with a hit of no known quality")?,
                expires_at: hit.expires_at,
            });
        }
    }
    Ok(hits)
}

/// A filing from `own` country.
pub fn filing(own: Country, f: &Filing) -> v1::FollowUpFiling {
    v1::FollowUpFiling {
        request_id: f.id.to_string(),
        country: own.to_string(),
        hit_ref: f.hit_ref.to_string(),
        justification: f.justification.clone(),
        offence_description: f.offence_description.clone(),
        offence_category: String::new(),
        reason: Some(v1::Reason::from(&f.reason)),
        subject: Some(v1::Identity::from(&f.subject)),
        officer_id: f.officer_id.clone(),
        audit_head: f.audit_head.as_ref().map(v1::AuditCheckpoint::from),
    }
}

/// An owner's receipt for a filing: the request is stored there whatever state it
/// names, so one this node cannot read counts as pending.
pub fn filed_receipt(r: v1::FollowUpReceipt) -> Result<Receipt, String> {
    let known = state(r.state).unwrap_or(State::Pending);
    peer_receipt(v1::FollowUpReceipt {
        state: v1::FollowUpState::from(known) as i32,
        ..r
    })
}

/// An owner's receipt; a malformed one is refused, naming what is wrong.
pub fn peer_receipt(r: v1::FollowUpReceipt) -> Result<Receipt, String> {
    Ok(Receipt {
        id: followup_id("request_id", &r.request_id).map_err(|e| e.0)?,
        state: state(r.state).ok_or("the peer answered with no known follow-up state")?,
        deadline_at: r.deadline_at,
        expires_at: r.expires_at,
    })
}

/// A decision from `own` country.
pub fn decision(own: Country, d: &DecisionNotice) -> v1::FollowUpDecision {
    v1::FollowUpDecision {
        request_id: d.id.to_string(),
        state: v1::FollowUpState::from(d.state) as i32,
        reason: d.reason.clone(),
        core_data: d.core_data.clone().into_iter().collect(),
        country: own.to_string(),
        decided_at: d.decided_at,
        audit_head: d.audit_head.as_ref().map(v1::AuditCheckpoint::from),
    }
}
