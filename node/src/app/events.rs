//! Recording the audit events of the use cases, and running store work off the async
//! threads.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState},
    domain::audit::Event,
    store::{Batch, StoreError, unix_now},
};

/// Applies `batch` and `event` in one atomic write (durable when `batch` is): a step
/// and its audit entry are stored together or not at all. Blocks: call it from a
/// blocking task.
pub fn commit(state: &NodeState, batch: Batch, event: &Event) -> Result<(), StoreError> {
    state.audit.apply_with(
        state.store.as_ref(),
        unix_now(),
        batch,
        event.kind,
        &event.fields,
    )?;
    state.metrics.audit_entries.inc();
    Ok(())
}

/// Records the event of a frequent step (a search, a Match, a refusal) without
/// waiting for the disk: flushed within half a second. The step has happened; a
/// failure to record is logged as an error (the chain stays intact).
pub async fn record(state: &Arc<NodeState>, event: Event) {
    write(state, Batch::relaxed(), event).await;
}

/// Records the event of an operator's step (a reload, a rotation, a pruning), durable
/// when this returns Ok. The caller does the step only once it is recorded, or undoes
/// it: a step and its event succeed or fail together.
pub async fn record_durably(state: &Arc<NodeState>, event: Event) -> Result<(), AppError> {
    let kind = event.kind;
    let s = state.clone();
    tokio::task::spawn_blocking(move || commit(&s, Batch::new(), &event))
        .await?
        .map_err(|e| {
            tracing::error!(kind, error = %e, "cannot record an audit event");
            AppError::Unavailable(format!(
                "the step could not be recorded in the audit log ({kind}); nothing was done"
            ))
        })
}

async fn write(state: &Arc<NodeState>, batch: Batch, event: Event) {
    let kind = event.kind;
    let s = state.clone();
    match tokio::task::spawn_blocking(move || commit(&s, batch, &event)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(kind, error = %e, "cannot record an audit event"),
        Err(_) => tracing::error!(kind, "the audit task failed"),
    }
}

/// Runs follow-up store work off the async threads, one piece at a time: each piece
/// reads, changes and writes follow-ups, and two must not interleave (a decision
/// arriving while a poll updates the same request).
pub async fn followup_work<T: Send + 'static>(
    state: &Arc<NodeState>,
    work: impl FnOnce(&NodeState) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _one_at_a_time = state
            .followup_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        work(&state)
    })
    .await?
}
