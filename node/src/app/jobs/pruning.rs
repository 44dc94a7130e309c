//! Deleting what has expired: hit references this node issued, hits its searches
//! received (with the subjects they remember), and audit entries past
//! `audit.retention`. Every batch of audit entries deleted carries its own
//! `audit.pruned` entry in the same write ([`crate::domain::audit::AuditLog::prune`]).

use std::sync::Arc;

use crate::{
    app::NodeState,
    domain::{followup::Book, hitref},
    store::StoreError,
};

/// Deletes everything expired at `now`.
pub async fn prune(state: &Arc<NodeState>, now: i64) {
    let store = state.store.clone();
    let s = state.clone();
    let ttl = state.config.matching.hit_ref_ttl.as_secs() as i64;
    let before = now.saturating_sub(state.config.audit.retention.as_secs() as i64);
    let pruned = tokio::task::spawn_blocking(move || {
        let issued = hitref::prune(store.as_ref(), now, ttl)?;
        let received = Book::new(store.as_ref()).prune_received_hits(now)?;
        let audit = s
            .audit
            .prune(store.as_ref(), before, &crate::store::unix_now)?;
        Ok::<_, StoreError>((issued, received, audit))
    })
    .await;
    match pruned {
        Ok(Ok((issued, received, audit))) => {
            if issued + received > 0 {
                tracing::info!(issued, received, "expired hit references deleted");
            }
            if audit > 0 {
                tracing::info!(entries = audit, "audit entries past retention deleted");
                let batches = audit.div_ceil(crate::domain::audit::PRUNE_BATCH as u64);
                state.metrics.audit_entries.inc_by(batches);
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot delete expired data"),
        Err(_) => tracing::error!("the clean-up task failed"),
    }
}
