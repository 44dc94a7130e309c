//! The national API's messages: requests from the state's own users, checked into
//! domain types, and the answers they see.

use adep_proto::v1;

use super::{
    Invalid, checkpoint, decision_reason, followup_id, hit_ref, identity, justification, reason,
    state, text,
};
use crate::{
    app::{
        listing::{Filter, Page},
        records::Imported,
        requester::Request,
        search::{PeerReport, PeerState, Search, SearchOutcome},
        state::LoadedCertificates,
        status::NodeStatus,
    },
    domain::{
        audit::{Broken, Checkpoint, Entry, Verified},
        epochs::EpochStatus,
        followup::{Decision, Direction, FollowUp, FollowUpId, MAX_TEXT_BYTES},
        identity::{Record, RecordId},
        index::{Counts, ImportMode, Progress},
        principals::Role,
    },
    store::StoreInfo,
};

impl From<Role> for v1::Role {
    fn from(role: Role) -> v1::Role {
        match role {
            Role::Officer => v1::Role::Officer,
            Role::Reviewer => v1::Role::Reviewer,
            Role::Operator => v1::Role::Operator,
            Role::Auditor => v1::Role::Auditor,
        }
    }
}

impl TryFrom<&v1::SearchRequest> for Search {
    type Error = Invalid;

    fn try_from(s: &v1::SearchRequest) -> Result<Search, Invalid> {
        Ok(Search {
            reason: reason(s.reason.as_ref())?,
            subjects: s
                .subjects
                .iter()
                .enumerate()
                .map(|(i, subject)| identity("subjects", i, subject))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn peer_status(r: &PeerReport) -> v1::PeerStatus {
    let (state, detail) = match &r.outcome {
        PeerState::Ok => (v1::PeerState::Ok, String::new()),
        PeerState::TimedOut => (
            v1::PeerState::TimedOut,
            "no answer before the deadline".into(),
        ),
        PeerState::Unavailable(m) => (v1::PeerState::Unavailable, m.clone()),
        PeerState::Refused(m) => (v1::PeerState::Refused, m.clone()),
    };
    v1::PeerStatus {
        country: r.peer.country.to_string(),
        endpoint: r.peer.endpoint.clone(),
        state: state as i32,
        detail,
        latency_ms: r.latency_ms,
    }
}

impl From<&SearchOutcome> for v1::SearchResponse {
    fn from(o: &SearchOutcome) -> v1::SearchResponse {
        v1::SearchResponse {
            request_id: o.request_id.clone(),
            peers: o.peers.iter().map(peer_status).collect(),
            hits: o
                .hits
                .iter()
                .map(|h| v1::SearchHit {
                    subject: h.subject,
                    country: h.country.to_string(),
                    hit_ref: h.hit_ref.to_string(),
                    quality: v1::Quality::from(h.quality) as i32,
                    expires_at: h.expires_at,
                })
                .collect(),
        }
    }
}

/// The answer to `Status` from a node of `country`.
pub fn status_response(country: &str, s: &NodeStatus) -> v1::StatusResponse {
    let StoreInfo {
        schema_version,
        engine,
        created_at,
        starts,
    } = s.store.clone();
    v1::StatusResponse {
        country: country.to_owned(),
        node_version: env!("CARGO_PKG_VERSION").to_owned(),
        caller: Some(v1::Caller {
            user_id: s.user.clone(),
            role: v1::Role::from(s.role) as i32,
        }),
        store: Some(v1::StoreInfo {
            schema_version,
            engine: engine.to_owned(),
            created_at,
            starts,
        }),
        peers: s
            .peers
            .iter()
            .map(|(peer, report)| match report {
                Some(r) => peer_status(r),
                None => v1::PeerStatus {
                    country: peer.country.to_string(),
                    endpoint: peer.endpoint.clone(),
                    state: v1::PeerState::Unchecked as i32,
                    detail: String::new(),
                    latency_ms: 0,
                },
            })
            .collect(),
    }
}

/// The import mode of a stream message, None when it names none.
pub fn import_mode(value: i32) -> Option<ImportMode> {
    match v1::ImportMode::try_from(value) {
        Ok(v1::ImportMode::Import) => Some(ImportMode::Import),
        Ok(v1::ImportMode::Sync) => Some(ImportMode::Sync),
        _ => None,
    }
}

impl From<Progress> for v1::ImportProgress {
    fn from(p: Progress) -> v1::ImportProgress {
        v1::ImportProgress {
            stage: p.stage.name().to_owned(),
            done: p.done as u64,
            total: p.total as u64,
            summary: None,
        }
    }
}

impl From<&Imported> for v1::ImportProgress {
    fn from(i: &Imported) -> v1::ImportProgress {
        v1::ImportProgress {
            stage: "done".into(),
            done: i.received,
            total: i.received,
            summary: Some(v1::ImportSummary {
                received: i.received,
                added: i.summary.added as u64,
                updated: i.summary.updated as u64,
                unchanged: i.summary.unchanged as u64,
                erased: i.summary.erased as u64,
                records: i.records,
            }),
        }
    }
}

/// The record ids of a delete.
pub fn record_ids(ids: &[String]) -> Result<Vec<RecordId>, Invalid> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            RecordId::try_from(id.as_str())
                .map_err(|p| Invalid(format!("field `record_ids[{i}]` {p}")))
        })
        .collect()
}

impl From<Counts> for v1::CountRecordsResponse {
    fn from(c: Counts) -> v1::CountRecordsResponse {
        v1::CountRecordsResponse {
            records: c.records as u64,
            keys: c.keys as u64,
            key_epoch: c.epoch.0,
        }
    }
}

impl TryFrom<v1::RequestFollowUpRequest> for Request {
    type Error = Invalid;

    fn try_from(r: v1::RequestFollowUpRequest) -> Result<Request, Invalid> {
        Ok(Request {
            hit_ref: hit_ref(&r.hit_ref)?,
            justification: justification(&r.justification)?,
            offence_description: text(
                "offence_description",
                &r.offence_description,
                MAX_TEXT_BYTES,
                true,
            )?,
        })
    }
}

impl TryFrom<&v1::ListFollowUpsRequest> for Filter {
    type Error = Invalid;

    fn try_from(r: &v1::ListFollowUpsRequest) -> Result<Filter, Invalid> {
        Ok(Filter {
            incoming: r.incoming,
            state: match r.state {
                0 => None,
                s => Some(
                    state(s)
                        .ok_or_else(|| Invalid("field `state` is not a follow-up state".into()))?,
                ),
            },
            overdue: r.overdue,
            limit: (r.limit != 0).then_some(r.limit as usize),
        })
    }
}

/// A reviewer's decision: the follow-up, what they decided, and why.
pub fn decision(r: &v1::DecideFollowUpRequest) -> Result<(FollowUpId, Decision, String), Invalid> {
    let id = followup_id("id", &r.id)?;
    let decision = match v1::Decision::try_from(r.decision) {
        Ok(v1::Decision::Approve) => Decision::Approve,
        Ok(v1::Decision::Refuse) => Decision::Refuse,
        Ok(v1::Decision::Hold) => Decision::Hold,
        _ => {
            return Err(Invalid(
                "field `decision` must be approve, refuse or hold".into(),
            ));
        }
    };
    let reason = decision_reason(&r.reason)?;
    Ok((id, decision, reason))
}

/// What a user sees of a follow-up; `record` only for a reviewer's incoming view.
pub fn followup(f: &FollowUp, record: Option<&Record>, now: i64) -> v1::FollowUp {
    v1::FollowUp {
        id: f.id.to_string(),
        direction: match f.direction {
            Direction::Outgoing => v1::Direction::Outgoing,
            Direction::Incoming => v1::Direction::Incoming,
        } as i32,
        country: f.country.to_string(),
        hit_ref: f.hit_ref.to_string(),
        state: v1::FollowUpState::from(f.state()) as i32,
        overdue: f.overdue(now),
        officer_id: f.officer_id.clone(),
        reason: Some(v1::Reason::from(&f.reason)),
        justification: f.justification.clone(),
        offence_description: f.offence_description.clone(),
        subject: Some(v1::Identity::from(&f.subject)),
        filed_at: f.filed_at,
        deadline_at: f.deadline_at,
        expires_at: f.expires_at,
        steps: f
            .steps
            .iter()
            .map(|s| v1::ReviewStep {
                reviewer: s.reviewer.clone(),
                decision: v1::Decision::from(s.decision) as i32,
                reason: s.reason.clone(),
                at: s.at,
            })
            .collect(),
        decision_reason: f.decision_reason.clone(),
        core_data: f.core_data.clone().into_iter().collect(),
        record: record.map(v1::RecordData::from),
        quality: f
            .quality
            .map_or(v1::Quality::Unspecified, v1::Quality::from) as i32,
        search_request_id: f.search_request_id.clone(),
        withdrawn_at: f.withdrawn_at.unwrap_or(0),
    }
}

impl From<&Page> for v1::ListFollowUpsResponse {
    fn from(p: &Page) -> v1::ListFollowUpsResponse {
        v1::ListFollowUpsResponse {
            total: u32::try_from(p.total).unwrap_or(u32::MAX),
            follow_ups: p
                .follow_ups
                .iter()
                .map(|f| followup(f, None, p.now))
                .collect(),
        }
    }
}

/// The witnesses of a verification (at most [`MAX_WITNESSES`]).
pub fn witnesses(r: &v1::VerifyAuditRequest) -> Result<Vec<Checkpoint>, Invalid> {
    if r.witnesses.len() > MAX_WITNESSES {
        return Err(Invalid(format!(
            "field `witnesses`: more than {MAX_WITNESSES} checkpoints"
        )));
    }
    r.witnesses
        .iter()
        .enumerate()
        .map(|(i, w)| {
            checkpoint(&format!("witnesses[{i}]"), Some(w))
                .map(|c| c.unwrap_or_else(|| unreachable!("a checkpoint was given")))
        })
        .collect()
}

/// Most checkpoints one verification takes.
pub const MAX_WITNESSES: usize = 100_000;

/// An export's period: `until` 0 for no end.
pub fn period(r: &v1::AuditExportRequest) -> (i64, Option<i64>) {
    (r.since, (r.until != 0).then_some(r.until))
}

impl From<Entry> for v1::AuditEntry {
    fn from(e: Entry) -> v1::AuditEntry {
        v1::AuditEntry {
            seq: e.seq,
            time: e.time,
            kind: e.kind,
            fields_json: e.fields,
            hash: e.hash.to_vec(),
            prev_hash: e.prev.to_vec(),
            signature: e.signature,
            checkpoint: None,
        }
    }
}

/// The answer to `VerifyAudit`.
pub fn verified(outcome: Result<Verified, Broken>, public_key: Vec<u8>) -> v1::VerifyAuditResponse {
    match outcome {
        Ok(v) => v1::VerifyAuditResponse {
            ok: true,
            witnesses: v.witnesses,
            foreign_witnesses: v.foreign,
            entries: v.entries,
            first: v.range.map_or(0, |r| r.0),
            last: v.range.map_or(0, |r| r.1),
            public_key,
            ..v1::VerifyAuditResponse::default()
        },
        Err(broken) => v1::VerifyAuditResponse {
            ok: false,
            bad_entry: broken.entry(),
            problem: broken.to_string(),
            public_key,
            ..v1::VerifyAuditResponse::default()
        },
    }
}

impl From<&EpochStatus> for v1::RotateKeysResponse {
    fn from(s: &EpochStatus) -> v1::RotateKeysResponse {
        v1::RotateKeysResponse {
            phase: s.phase().into(),
            active_epoch: s.active.0,
            next_epoch: s.building.map_or(0, |e| e.0),
            retired_epochs: s.retired.clone(),
            previous_epoch: s.previous.map_or(0, |(e, _)| e.0),
            previous_until: s.previous.map_or(0, |(_, until)| until),
        }
    }
}

impl From<&LoadedCertificates> for v1::ReloadCertificatesResponse {
    fn from(l: &LoadedCertificates) -> v1::ReloadCertificatesResponse {
        v1::ReloadCertificatesResponse {
            certificates: l
                .certificates
                .iter()
                .map(|(name, not_after)| v1::CertificateExpiry {
                    name: (*name).into(),
                    not_after: *not_after,
                })
                .collect(),
            revoked: u32::try_from(l.revoked).unwrap_or(u32::MAX),
        }
    }
}
