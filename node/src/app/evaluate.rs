//! Step 1 on the answering node, first call: a peer's blinded match keys evaluated
//! under this node's own key (RFC 9497). The node learns nothing of the key texts;
//! the peer learns the epoch and one element per element it sent. Every element
//! counts against the peer's evaluation rate, and each call is an audit event with
//! its counts.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, answer, events, limits},
    domain::{
        audit::Event,
        index::NationalIndex,
        principals::Country,
        pseudonymise::{
            KeyEpoch,
            oprf::{Element, ElementError},
        },
    },
};

/// A peer's Evaluate call, validated.
#[derive(Clone, Debug)]
pub struct EvaluateCall {
    /// The peer's request id (its search's).
    pub request_id: String,
    /// Each subject's blinded elements.
    pub subjects: Vec<Vec<Element>>,
}

/// The evaluated elements, and the epoch of the key that made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The epoch to name in the Match that follows.
    pub epoch: KeyEpoch,
    /// One element per element asked, subject by subject.
    pub subjects: Vec<Vec<Element>>,
}

/// Checks an Evaluate call's size against the node's limits: subjects per call and
/// elements per subject, as for a Match.
pub fn check_bounds(state: &NodeState, elements: &[usize]) -> Result<(), AppError> {
    answer::check_bounds(state, elements.len(), elements, "elements")
}

/// Elements below which one core evaluates a whole call.
const PARALLEL_ELEMENTS: usize = 4_096;

/// Evaluates subjects under the index's key, a large call split over every core (a
/// search of many subjects would otherwise outlast the peer's deadline).
fn evaluate_on_every_core(
    index: &NationalIndex,
    subjects: &[Vec<Element>],
) -> Result<Vec<Vec<Element>>, ElementError> {
    let elements: usize = subjects.iter().map(Vec::len).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if elements < PARALLEL_ELEMENTS || threads == 1 || subjects.len() < 2 {
        return index.key().evaluate(subjects);
    }
    let chunk = subjects.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = subjects
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    // Positions in errors count from the whole call's first subject.
                    index.key().evaluate(part).map_err(|e| match e {
                        ElementError::Malformed { subject, element } => ElementError::Malformed {
                            subject: subject + n * chunk,
                            element,
                        },
                        other => other,
                    })
                })
            })
            .collect();
        let mut all = Vec::with_capacity(subjects.len());
        for h in handles {
            all.extend(h.join().unwrap_or_else(|_| Ok(Vec::new()))?);
        }
        Ok(all)
    })
}

/// Evaluates a peer's blinded elements under the active epoch's key.
pub async fn evaluate(
    state: &Arc<NodeState>,
    peer: Country,
    call: EvaluateCall,
) -> Result<Evaluation, AppError> {
    let elements: usize = call.subjects.iter().map(Vec::len).sum();
    limits::admit_evaluations(state, peer, elements).await?;
    let index = state.index.active();
    let epoch = index.epoch();
    let subjects = call.subjects;
    let evaluated = tokio::task::spawn_blocking(move || evaluate_on_every_core(&index, &subjects))
        .await?
        .map_err(|e| AppError::Invalid(e.to_string()))?;
    tracing::info!(elements, epoch = epoch.0, "evaluation answered");
    events::record(
        state,
        Event::new(
            "evaluate.received",
            serde_json::json!({
                "request_id": call.request_id,
                "peer": peer.as_str(),
                "subjects": evaluated.len(),
                "elements": elements,
                "key_epoch": epoch.0,
            }),
        ),
    )
    .await;
    Ok(Evaluation {
        epoch,
        subjects: evaluated,
    })
}
