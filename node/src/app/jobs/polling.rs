//! The requesting node asks each owner about its undecided requests: an owner resends
//! any decision not yet acknowledged at once, and a hold shows here. At start-up and
//! then at most every `followup.retry_max`.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    app::{NodeState, events, owner::MAX_POLL_IDS},
    domain::{
        followup::{Book, Direction, FollowUpId, State},
        principals::Country,
    },
};

/// Polls every owner of an open request of this node.
pub async fn poll_owners(state: &Arc<NodeState>) {
    let open = events::followup_work(state, |state| {
        Ok(Book::new(state.store.as_ref())
            .list(Direction::Outgoing)?
            .into_iter()
            .filter(|f| f.state().is_open())
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    let mut by_owner: BTreeMap<Country, Vec<FollowUpId>> = BTreeMap::new();
    for f in open {
        by_owner.entry(f.country).or_default().push(f.id);
    }
    let configured = state.peers.peers();
    for (owner, ids) in by_owner {
        if !configured.iter().any(|p| p.country == owner) {
            continue;
        }
        for chunk in ids.chunks(MAX_POLL_IDS) {
            let receipts = match state.peers.poll(owner, chunk.to_vec()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(peer = %owner, "follow-up poll got no answer");
                    continue;
                }
            };
            // Holds show here at once; decisions arrive with their reason through the
            // owner's outbox.
            let changed: Vec<(FollowUpId, State)> = receipts
                .into_iter()
                .filter(|r| r.state.is_open())
                .map(|r| (r.id, r.state))
                .collect();
            if changed.is_empty() {
                continue;
            }
            let asked: std::collections::HashSet<&FollowUpId> = chunk.iter().collect();
            let changed: Vec<(FollowUpId, State)> = changed
                .into_iter()
                .filter(|(id, _)| asked.contains(id))
                .collect();
            let result = events::followup_work(state, move |state| {
                let book = Book::new(state.store.as_ref());
                for (id, owner_state) in changed {
                    // Only this owner's answer about its own requests counts.
                    if let Some(mut f) = book
                        .get(Direction::Outgoing, &id)?
                        .filter(|f| f.country == owner)
                        && let Some(effects) = f.follow_owner(owner_state)
                    {
                        book.save(&f, &effects)?;
                    }
                }
                Ok(())
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot store polled follow-up states");
            }
        }
    }
}
