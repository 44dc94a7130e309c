//! Rotation of this node's own match key (`adep keys rotate`): the next epoch's key is
//! derived from the seed file (read again, so a replaced seed takes effect here) and
//! its index built in the background while the active one answers; then the next
//! epoch becomes active, and the previous one answers a Match for a short grace.
//! No other node does anything.

use std::{sync::Arc, time::Duration};

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::Event,
        epochs::{self, EpochStatus, RotationError},
        index::{self, NationalIndex},
        pseudonymise::oprf::NodeKey,
    },
    secret::KeySeed,
    store::unix_now,
};

/// Where the rotation stands.
pub fn status(state: &NodeState) -> EpochStatus {
    state.index.status()
}

/// Starts a rotation to the next epoch. Audit events at the start and at the switch.
pub async fn start(state: &Arc<NodeState>, operator: &str) -> Result<EpochStatus, AppError> {
    let next = state.index.next_epoch();
    let seed = KeySeed::from_file(&state.config.matching.seed_file).map_err(RotationError::from)?;
    let key = NodeKey::derive(seed.expose(), next)
        .ok_or_else(|| AppError::Internal("the key seed cannot derive a key".into()))?;
    drop(seed);
    state.index.begin(next)?;
    let from = state.index.active().epoch().0;
    let recorded = events::record_durably(
        state,
        Event::new(
            "keys.rotation_started",
            serde_json::json!({ "operator": operator, "from": from, "to": next.0 }),
        ),
    )
    .await;
    if let Err(e) = recorded {
        state.index.abandon();
        return Err(e);
    }
    tracing::info!(
        from,
        to = next.0,
        "key rotation started: building the next index"
    );
    tokio::spawn(build_next(state.clone(), key, operator.to_owned(), from));
    Ok(state.index.status())
}

/// Builds the next epoch's index (keying every stored record under the new key and
/// storing the digests), then switches to it; on a failure the rotation is
/// abandoned and the active epoch goes on alone.
async fn build_next(state: Arc<NodeState>, key: NodeKey, operator: String, from: u32) {
    let epoch = key.epoch();
    let store = state.store.clone();
    let built = tokio::task::spawn_blocking(move || {
        // Digests left by an abandoned attempt may be another seed's: start clean.
        index::erase_digests(store.as_ref(), epoch)?;
        epochs::forget_key(store.as_ref(), epoch)?;
        epochs::check_key(store.as_ref(), &key)?;
        NationalIndex::load(store, key, &mut |p| {
            tracing::info!(
                epoch = epoch.0,
                stage = p.stage.name(),
                done = p.done,
                "building the next match index"
            );
        })
    })
    .await;
    let fields = serde_json::json!({ "from": from, "to": epoch.0 });
    let grace = state.config.matching.previous_epoch_grace;
    let s = state.clone();
    let switched = match built {
        Ok(Ok(index)) => tokio::task::spawn_blocking(move || {
            let until = unix_now() + grace.as_secs() as i64;
            s.index.switch(Arc::new(index), until, &|batch, old, new| {
                let event = Event::new(
                    "keys.epoch_changed",
                    serde_json::json!({
                        "operator": operator,
                        "from": old.0,
                        "to": new.0,
                        "rotation": true,
                        "previous_answers_until": until,
                    }),
                );
                events::commit(&s, batch, &event)
            })
        })
        .await
        .is_ok_and(|r| r.is_ok()),
        _ => false,
    };
    if !switched {
        state.index.abandon();
        tracing::error!(
            epoch = epoch.0,
            "key rotation abandoned: the next index could not be built or recorded"
        );
        events::record(&state, Event::new("keys.rotation_failed", fields)).await;
        return;
    }
    tracing::info!(
        from,
        to = epoch.0,
        "key rotation switched: the previous epoch answers during its grace"
    );
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    end_grace(&state).await;
}

/// Retires the previous epoch once its grace has passed and erases its digests.
pub async fn end_grace(state: &Arc<NodeState>) {
    let Some(previous) = state.index.end_grace(unix_now()) else {
        return;
    };
    let epoch = previous.epoch();
    let erased = tokio::task::spawn_blocking(move || previous.erase_digests()).await;
    match erased {
        Ok(Ok(n)) => tracing::info!(epoch = epoch.0, records = n, "previous key epoch retired"),
        _ => tracing::warn!(
            epoch = epoch.0,
            "previous key epoch retired; its stored digests are erased at the next start"
        ),
    }
    events::record(
        state,
        Event::new(
            "keys.epoch_retired",
            serde_json::json!({ "epoch": epoch.0 }),
        ),
    )
    .await;
}
