//! The auditor's use cases: export the audit log for a period, verify it whole.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState},
    domain::audit::{AuditLog, Broken, Checkpoint, Entry, Verified},
    store::StoreError,
};

/// Checks an export's period: `since` before `until` (seconds since the epoch;
/// `until` None for no end).
pub fn period(since: i64, until: Option<i64>) -> Result<(i64, i64), AppError> {
    let until = until.unwrap_or(i64::MAX);
    if since >= until {
        return Err(AppError::Invalid(
            "field `since` must be before field `until`".into(),
        ));
    }
    Ok((since, until))
}

/// Hands every entry with `since <= time < until` to `sink`, in order, until `sink`
/// returns false or the store fails. Blocks: call it from a blocking task.
pub fn export(
    state: &NodeState,
    since: i64,
    until: i64,
    sink: &mut dyn FnMut(Result<Entry, AppError>) -> bool,
) {
    for entry in AuditLog::export(state.store.as_ref(), since, until) {
        let entry =
            entry.map_err(|e: StoreError| AppError::Unavailable(format!("the store failed: {e}")));
        let failed = entry.is_err();
        if !sink(entry) || failed {
            return;
        }
    }
}

/// This node's signed head now, made durable first, to close an export with (the
/// auditor keeps it, and `verify` checks the log against it later). Blocks: call it
/// from a blocking task. None when the log cannot be made durable.
pub fn head(state: &NodeState) -> Option<Checkpoint> {
    match state.audit.sync(state.store.as_ref()) {
        Ok(()) => Some(state.audit.checkpoint(crate::store::unix_now())),
        Err(e) => {
            tracing::error!(error = %e, "cannot make the audit log durable; the export has no head");
            None
        }
    }
}

/// Verifies the whole log under the node's public key, and against `witnesses`
/// (checkpoints of this node's head kept elsewhere); returns the key with the outcome.
pub async fn verify(
    state: &Arc<NodeState>,
    witnesses: Vec<Checkpoint>,
) -> Result<(Result<Verified, Broken>, Vec<u8>), AppError> {
    let s = state.clone();
    let outcome = tokio::task::spawn_blocking(move || s.audit.verify(s.store.as_ref(), &witnesses))
        .await
        .map_err(|_| AppError::Internal("the verification task failed".into()))?
        .map_err(|e| AppError::Unavailable(format!("the store failed: {e}")))?;
    Ok((outcome, state.audit.public_key().to_vec()))
}
