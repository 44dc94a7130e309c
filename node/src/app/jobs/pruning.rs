//! Deleting what has expired: hit references this node issued, hits its searches
//! received (with the subjects they remember), and audit entries past
//! `audit.retention`. The pruning of audit entries is itself an audit event.

use std::sync::Arc;

use crate::{
    app::{NodeState, events},
    domain::{audit::Event, followup::Book, hitref},
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
        let audit = s.audit.prune(store.as_ref(), before)?;
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
                let event = Event::new(
                    "audit.pruned",
                    serde_json::json!({ "entries": audit, "before": before }),
                );
                // Logged by record_durably when it fails; the entries are gone either way.
                let _ = events::record_durably(state, event).await;
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot delete expired data"),
        Err(_) => tracing::error!("the clean-up task failed"),
    }
}
