//! Key rotation on this node (`adep keys rotate`): the next epoch's index is built
//! in the background while the active one answers; then both answer; finishing makes
//! the next one active and retires the old one.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::Event,
        epochs::{EpochStatus, RotationError},
        index::NationalIndex,
        pseudonymise::{KeyEpoch, Pseudonymiser},
    },
    secret::MatchingSecret,
};

/// Where the rotation stands.
pub fn status(state: &NodeState) -> EpochStatus {
    state.index.status()
}

/// Starts a rotation to `matching.next_*`: the next epoch's index is built in the
/// background, then both epochs answer. Audit events at the start and when the
/// index is ready.
pub async fn start(state: &Arc<NodeState>, operator: &str) -> Result<EpochStatus, AppError> {
    let Some((path, epoch)) = state.config.matching.next() else {
        return Err(RotationError::NoNextSecret.into());
    };
    let secret = MatchingSecret::from_file(path).map_err(RotationError::from)?;
    let pseudonymiser = Pseudonymiser::new(&secret, KeyEpoch(epoch));
    drop(secret);
    state.index.begin(KeyEpoch(epoch))?;
    let from = state.index.active().epoch().0;
    let recorded = events::record_durably(
        state,
        Event::new(
            "keys.rotation_started",
            serde_json::json!({ "by": operator, "from": from, "to": epoch }),
        ),
    )
    .await;
    if let Err(e) = recorded {
        state.index.abandon();
        return Err(e);
    }
    tracing::info!(
        from,
        to = epoch,
        "key rotation started: building the next index"
    );
    tokio::spawn(build_next(state.clone(), pseudonymiser, from, epoch));
    Ok(state.index.status())
}

/// Builds the next epoch's index from the store, then lets both epochs answer; on a
/// failure the rotation is abandoned and the active epoch goes on alone.
async fn build_next(state: Arc<NodeState>, pseudonymiser: Pseudonymiser, from: u32, epoch: u32) {
    let store = state.store.clone();
    let built = tokio::task::spawn_blocking(move || {
        NationalIndex::load(store, pseudonymiser, &mut |p| {
            tracing::info!(
                epoch,
                stage = p.stage.name(),
                done = p.done,
                "building the next match index"
            );
        })
    })
    .await;
    let s = state.clone();
    let fields = serde_json::json!({ "from": from, "to": epoch });
    let event = Event::new("keys.rotation_ready", fields.clone());
    let ready = match built {
        // Both epochs answer once the transition and its event are stored together.
        Ok(Ok(index)) => tokio::task::spawn_blocking(move || {
            s.index
                .ready(Arc::new(index), &|batch| events::commit(&s, batch, &event))
        })
        .await
        .is_ok_and(|r| r.is_ok()),
        _ => false,
    };
    if ready {
        tracing::info!(epoch, "key rotation: both epochs answer");
    } else {
        state.index.abandon();
        tracing::error!(
            epoch,
            "key rotation abandoned: the next index could not be built or recorded"
        );
        events::record(&state, Event::new("keys.rotation_failed", fields)).await;
    }
}

/// Finishes a rotation: the next epoch becomes active and the old one is refused
/// from now on.
pub async fn finish(state: &Arc<NodeState>, operator: &str) -> Result<EpochStatus, AppError> {
    let s = state.clone();
    let operator = operator.to_owned();
    // The epochs change only once stored together with their event.
    let (from, to) = tokio::task::spawn_blocking(move || {
        s.index.finish(&|batch, from, to| {
            let event = Event::new(
                "keys.epoch_changed",
                serde_json::json!({ "by": operator, "from": from.0, "to": to.0, "rotation": true }),
            );
            events::commit(&s, batch, &event)
        })
    })
    .await
    .map_err(|_| RotationError::Task)?
    .map_err(AppError::from)?;
    tracing::info!(
        from = from.0,
        to = to.0,
        "key rotation finished: old epoch retired"
    );
    Ok(state.index.status())
}
