//! The owner's outbox: each decision (and each hold) is sent to its requesting node
//! and removed (the follow-up marked delivered when approved) once that node
//! acknowledges it; a failed attempt is retried after a doubling wait. News replaced
//! while it was on its way (a decision after a hold) is neither removed nor
//! rescheduled by the older delivery.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events, owner::commit},
    domain::followup::{Book, Direction, OutboxEntry, delivered_event},
};

/// Delivers every entry that is due at `now`; returns when the next one is due (at
/// most `now + max_wait`).
pub async fn deliver_due(state: &Arc<NodeState>, now: i64, max_wait: i64) -> i64 {
    let entries =
        events::followup_work(state, |state| Ok(Book::new(state.store.as_ref()).outbox()?))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the follow-up outbox");
                Vec::new()
            });
    let mut next = now + max_wait;
    for mut entry in entries {
        if entry.next_attempt > now {
            next = next.min(entry.next_attempt);
            continue;
        }
        let mut notice = entry.notice();
        notice.audit_head = Some(state.audit.checkpoint(now));
        let result = match state.peers.deliver(entry.country, notice).await {
            Ok(()) => acknowledged(state, entry.clone()).await.map(|()| {
                tracing::info!(followup = %entry.id, peer = %entry.country, "decision delivered");
            }),
            Err(why) => {
                entry.retry_later(now, max_wait);
                next = next.min(entry.next_attempt);
                tracing::warn!(followup = %entry.id, peer = %entry.country, attempts = entry.attempts, error = %why, "decision not delivered; will retry");
                events::followup_work(state, move |state| {
                    let book = Book::new(state.store.as_ref());
                    // Newer news (a decision after a hold) keeps its own schedule.
                    if book
                        .outbox_entry(&entry.id)?
                        .is_some_and(|current| current.same_news(&entry))
                    {
                        book.reschedule(&entry)?;
                    }
                    Ok(())
                })
                .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "outbox update failed");
        }
    }
    next
}

/// The requesting node acknowledged `entry`: the released data leaves the outbox as
/// the delivery is recorded, in one durable write.
async fn acknowledged(state: &Arc<NodeState>, entry: OutboxEntry) -> Result<(), AppError> {
    events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let superseded = book
            .outbox_entry(&entry.id)?
            .is_some_and(|current| !current.same_news(&entry));
        match book.get(Direction::Incoming, &entry.id)? {
            Some(mut f) => {
                let effects = f.delivered(&entry, superseded);
                commit(state, &f, &effects)?;
            }
            None => {
                if let Some(event) = delivered_event(&entry) {
                    events::commit(state, Book::drop_outbox_entry(&entry.id), &event)?;
                }
            }
        }
        Ok(())
    })
    .await
}
