//! The metrics a scrape reads: counters as they run, and gauges set from the store
//! and the index at the moment of the scrape.

use std::sync::Arc;

use crate::{
    app::{NodeState, certificates},
    domain::followup::{Book, Direction, State},
    metrics::{CertLabels, FollowUpLabels},
    store::{StoreError, unix_now},
};

/// The metrics in the Prometheus text format, with the gauges set first.
pub async fn scrape(state: Arc<NodeState>) -> String {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || refresh(&s)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the follow-ups"),
        Err(_) => tracing::warn!("metrics: the gauge task failed"),
    }
    state.metrics.encode()
}

fn refresh(state: &NodeState) -> Result<(), StoreError> {
    let m = &state.metrics;
    let counts = state.index.active().counts();
    m.index_records.set(counts.records as i64);
    m.index_keys.set(counts.keys as i64);
    m.key_epoch.set(i64::from(counts.epoch.0));
    let rotation = state.index.status();
    m.key_epoch_next
        .set(rotation.building.map_or(0, |e| i64::from(e.0)));
    m.key_rotation_building
        .set(i64::from(rotation.building.is_some()));
    let now = unix_now();
    for (certificate, not_after) in certificates::loaded(state).certificates {
        m.certificate_expiry_seconds
            .get_or_create(&CertLabels { certificate })
            .set(not_after - now);
    }
    let book = Book::new(state.store.as_ref());
    for (direction, name) in [
        (Direction::Incoming, "incoming"),
        (Direction::Outgoing, "outgoing"),
    ] {
        let list = book.list(direction)?;
        for s in State::ALL {
            let n = list.iter().filter(|f| f.state() == s).count();
            m.followups
                .get_or_create(&FollowUpLabels {
                    direction: name,
                    state: s.name(),
                })
                .set(n as i64);
        }
        if direction == Direction::Incoming {
            let overdue = list.iter().filter(|f| f.overdue(now)).count();
            m.followups_overdue.set(overdue as i64);
        }
    }
    m.outbox_backlog.set(book.outbox()?.len() as i64);
    Ok(())
}
