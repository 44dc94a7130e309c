//! The auditor's use cases: export the audit log for a period, verify it whole.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState},
    domain::audit::{self, AuditLog, Broken, Entry, Verified},
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

/// Verifies the whole log under the node's public key; returns the key with the
/// outcome.
pub async fn verify(
    state: &Arc<NodeState>,
) -> Result<(Result<Verified, Broken>, Vec<u8>), AppError> {
    let s = state.clone();
    let outcome =
        tokio::task::spawn_blocking(move || audit::verify(s.store.as_ref(), s.audit.public_key()))
            .await
            .map_err(|_| AppError::Internal("the verification task failed".into()))?
            .map_err(|e| AppError::Unavailable(format!("the store failed: {e}")))?;
    Ok((outcome, state.audit.public_key().to_vec()))
}
