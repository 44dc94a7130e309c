//! The node's background jobs, in one loop: deliver the outbox's decisions, close
//! expired requests, poll owners about this node's open requests, delete what has
//! expired, and warn of expiring certificates.

pub mod expiry;
pub mod outbox;
pub mod polling;
pub mod pruning;

use std::{sync::Arc, time::Duration};

use crate::{
    app::{NodeState, certificates},
    store::unix_now,
};

/// How often entries written without waiting for the disk are made durable, and so
/// covered by the checkpoints the node gives out (sled flushes as often).
const AUDIT_SYNC_EVERY: Duration = Duration::from_millis(500);

/// Runs the jobs until `stop` turns true.
pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(sync_audit(state.clone(), stop.clone()));
    let max_wait = state.config.followup.retry_max.as_secs() as i64;
    let mut last_poll: Option<i64> = None;
    let mut last_prune: Option<i64> = None;
    let prune_every = (state.config.audit.prune_interval.as_secs() as i64).max(1);
    // The server warns of expiring certificates at start-up; this loop at every
    // pruning after.
    let started = unix_now();
    loop {
        let now = unix_now();
        if last_prune.is_none_or(|t| now - t >= prune_every) {
            last_prune = Some(now);
            pruning::prune(&state, now).await;
            if now > started {
                certificates::warn_of_expiring(&state, now);
            }
        }
        if last_poll.is_none_or(|t| now - t >= max_wait) {
            last_poll = Some(now);
            polling::poll_owners(&state).await;
        }
        // The requester polls the owner every retry_max: two silent polls after the
        // expiry and it closes the request itself.
        expiry::expire(&state, now, 2 * max_wait).await;
        // The rotation's own task ends the previous epoch's grace; this catches it
        // should that task have stopped.
        crate::app::rotation::end_grace(&state).await;
        let next = outbox::deliver_due(&state, now, max_wait).await;
        let next = next.min(last_prune.unwrap_or(now) + prune_every);
        let wait = Duration::from_secs((next - now).clamp(1, max_wait.max(1)) as u64);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = state.outbox_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Makes the audit entries written without waiting for the disk (searches, Match
/// calls, refusals) durable every [`AUDIT_SYNC_EVERY`], so that the head this node
/// gives out with its next call covers them. Costs nothing while nothing was written.
async fn sync_audit(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(AUDIT_SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let s = state.clone();
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || s.audit.sync(s.store.as_ref())).await
        {
            tracing::error!(error = %e, "cannot make the audit log durable");
        }
    }
}
