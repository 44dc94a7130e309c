//! Step 1 on the answering node: a peer's Match. Its digests are looked up in the
//! index of the epoch it names, each hit gets a fresh hit reference bound to that
//! peer, and the answer carries references and qualities only.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::{Checkpoint, Event},
        hitref::{self, HitRef},
        identity::RecordId,
        principals::Country,
        pseudonymise::{HashedKey, KeyEpoch, Quality},
        reason::Reason,
    },
    store::unix_now,
};

/// A peer's Match call, validated.
#[derive(Clone, Debug)]
pub struct MatchCall {
    /// The peer's request id.
    pub request_id: String,
    /// The reason of the peer's search.
    pub reason: Reason,
    /// The epoch the digests were made under.
    pub epoch: KeyEpoch,
    /// Each subject's keys, in the order of the call.
    pub subjects: Vec<Vec<HashedKey>>,
    /// The calling node's audit head, recorded with the call.
    pub peer_head: Option<Checkpoint>,
}

/// A hit this node reports to the calling peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedHitRef {
    /// The subject's position in the call.
    pub subject: u32,
    /// The reference, resolvable by the calling peer only.
    pub hit_ref: HitRef,
    /// The hit's quality.
    pub quality: Quality,
    /// When the reference stops resolving.
    pub expires_at: i64,
}

/// Checks a Match or Evaluate call against the node's limits: subjects per call, and
/// keys (or elements: `what` names the field) per subject.
pub fn check_bounds(
    state: &NodeState,
    subjects: usize,
    keys: &[usize],
    what: &str,
) -> Result<(), AppError> {
    let limits = &state.config.limits;
    if subjects == 0 {
        return Err(AppError::Invalid("field `subjects` is empty".into()));
    }
    if subjects > limits.max_subjects_per_match {
        return Err(AppError::Invalid(format!(
            "field `subjects`: {subjects} subjects exceed the limit of {} per batch (limits.max_subjects_per_match)",
            limits.max_subjects_per_match
        )));
    }
    if let Some((i, n)) = keys
        .iter()
        .enumerate()
        .find(|(_, n)| **n > limits.max_keys_per_subject)
    {
        return Err(AppError::Invalid(format!(
            "field `subjects[{i}].{what}`: {n} {what} exceed the limit of {} per subject (limits.max_keys_per_subject)",
            limits.max_keys_per_subject
        )));
    }
    Ok(())
}

/// Answers a peer's Match: hits with fresh references, or none.
pub async fn answer(
    state: &Arc<NodeState>,
    peer: Country,
    call: MatchCall,
) -> Result<Vec<IssuedHitRef>, AppError> {
    let index = state.index.for_match(call.epoch.0, unix_now())?;
    let found = index.lookup(&call.subjects);
    let hits: Vec<(RecordId, Quality)> = found
        .iter()
        .flatten()
        .map(|f| (f.record.clone(), f.quality))
        .collect();
    let now = unix_now();
    let expires_at = now + state.config.matching.hit_ref_ttl.as_secs() as i64;
    let store = state.store.clone();
    let request_id = call.request_id.clone();
    let reason = call.reason.clone();
    let hit_count = hits.len();
    for (_, quality) in &hits {
        state.metrics.hits("issued", quality.name(), 1);
    }
    let refs = tokio::task::spawn_blocking(move || {
        hitref::issue(
            store.as_ref(),
            &hits,
            peer,
            now,
            expires_at,
            &request_id,
            &reason,
        )
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot store hit references");
        AppError::Unavailable("cannot store hit references; try again".into())
    })?;
    let mut refs = refs.into_iter();
    let mut issued = Vec::with_capacity(hit_count);
    for (subject, found) in found.iter().enumerate() {
        for (f, hit_ref) in found.iter().zip(refs.by_ref()) {
            issued.push(IssuedHitRef {
                subject: subject as u32,
                hit_ref,
                quality: f.quality,
                expires_at,
            });
        }
    }
    tracing::info!(hits = hit_count, "match answered");
    events::record(
        state,
        Event::new(
            "match.received",
            serde_json::json!({
                "request_id": call.request_id,
                "peer": peer.as_str(),
                "reason": call.reason.audit_fields(),
                "subjects": call.subjects.len(),
                "subjects_with_hits": found.iter().filter(|f| !f.is_empty()).count(),
                "hit_refs_issued": hit_count,
                "peer_audit_head": call.peer_head.as_ref().map(Checkpoint::fields),
            }),
        ),
    )
    .await;
    Ok(issued)
}
