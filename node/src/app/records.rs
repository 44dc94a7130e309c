//! The operator's records: import (add and update), sync (make the index equal to a
//! full export), delete, count. Imports and erasures wait while a key rotation is
//! under way: they would change one epoch's index and not the other's.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::Event,
        identity::{Record, RecordId},
        index::{Counts, ImportMode, ImportSummary, Progress},
    },
    store::Batch,
};

/// Most ids in one delete.
pub const MAX_DELETE_IDS: usize = 100_000;

/// Refuses imports and erasures while a key rotation is under way.
pub fn refuse_during_rotation(state: &NodeState) -> Result<(), AppError> {
    let status = state.index.status();
    match status.next {
        Some(next) => Err(AppError::FailedPrecondition(format!(
            "a key rotation to epoch {next} is under way ({}); imports and erasures wait until `adep keys rotate --finish`",
            status.phase()
        ))),
        None => Ok(()),
    }
}

/// Checks an import's size against `limits.max_import_records` as records arrive.
pub fn check_import_size(state: &NodeState, records: usize) -> Result<(), AppError> {
    let max = state.config.limits.max_import_records;
    if records > max {
        return Err(AppError::Invalid(format!(
            "field `records`: more than {max} records (limits.max_import_records)"
        )));
    }
    Ok(())
}

/// What an import did, with the records the index holds after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// Records received.
    pub received: u64,
    /// What changed.
    pub summary: ImportSummary,
    /// Records in the index after the import.
    pub records: u64,
}

/// Stores and indexes validated records (unique ids), reporting progress; records the
/// import as an audit event. Blocks for as long as the work takes: call it from a
/// blocking task.
pub fn import(
    state: &NodeState,
    operator: &str,
    records: Vec<Record>,
    mode: ImportMode,
    progress: &mut dyn FnMut(Progress),
) -> Result<Imported, AppError> {
    refuse_during_rotation(state)?;
    let index = state.index.active();
    let received = records.len() as u64;
    let summary = index.import(records, mode, progress)?;
    tracing::info!(
        received,
        added = summary.added,
        updated = summary.updated,
        unchanged = summary.unchanged,
        erased = summary.erased,
        "records imported"
    );
    let event = Event::new(
        "records.imported",
        serde_json::json!({
            "operator": operator,
            "mode": match mode {
                ImportMode::Import => "import",
                ImportMode::Sync => "sync",
            },
            "received": received,
            "added": summary.added,
            "updated": summary.updated,
            "unchanged": summary.unchanged,
            "erased": summary.erased,
        }),
    );
    if let Err(e) = events::commit(state, Batch::new(), &event) {
        tracing::error!(error = %e, "cannot record an audit event");
    }
    Ok(Imported {
        received,
        summary,
        records: index.counts().records as u64,
    })
}

/// Erases records by id; returns those erased (the others were unknown).
pub async fn delete(
    state: &Arc<NodeState>,
    operator: &str,
    ids: Vec<RecordId>,
) -> Result<Vec<RecordId>, AppError> {
    refuse_during_rotation(state)?;
    if ids.is_empty() || ids.len() > MAX_DELETE_IDS {
        return Err(AppError::Invalid(format!(
            "field `record_ids` must hold 1 to {MAX_DELETE_IDS} ids"
        )));
    }
    let index = state.index.active();
    let requested = ids.len();
    let erased = tokio::task::spawn_blocking(move || index.delete(&ids)).await??;
    tracing::info!(erased = erased.len(), "records erased");
    events::record_durably(
        state,
        Event::new(
            "records.erased",
            serde_json::json!({
                "operator": operator,
                "requested": requested,
                "erased": erased.len(),
            }),
        ),
    )
    .await;
    Ok(erased)
}

/// Records and keys in the active index.
pub fn count(state: &NodeState) -> Counts {
    state.index.active().counts()
}
