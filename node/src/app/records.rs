//! The operator's records: import (add and update), sync (make the index equal to a
//! full export), delete, count. Imports and erasures are refused while a key rotation
//! is under way: they would change one epoch's index and not the other's.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::Event,
        followup::random_hex_id,
        identity::{Record, RecordId},
        index::{Counts, ImportMode, ImportSummary, Progress, Written},
    },
    store::Batch,
};

/// Most ids in one delete.
pub const MAX_DELETE_IDS: usize = 100_000;

/// Refuses imports and erasures while a key rotation is under way.
pub fn refuse_during_rotation(state: &NodeState) -> Result<(), AppError> {
    let status = state.index.status();
    if let Some(next) = status.building {
        return Err(AppError::FailedPrecondition(format!(
            "a key rotation to epoch {next} is under way (building); imports and erasures are refused until it has switched and the previous epoch's grace has ended: run this again then (`adep keys rotate --status` tells when)"
        )));
    }
    if let Some((previous, until)) = status.previous {
        return Err(AppError::FailedPrecondition(format!(
            "epoch {previous} still answers in its grace for {} s; imports and erasures are refused until then: run this again after it (`adep keys rotate --status` tells when)",
            (until - crate::store::unix_now()).max(0)
        )));
    }
    Ok(())
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

/// The audit event stored with one write of an import or an erasure by `operator`
/// (`import`: the import's id, None for a delete).
fn attribution(operator: &str, import: Option<&str>, written: Written) -> Event {
    match written {
        Written::Stored { added, updated } => Event::new(
            "records.stored",
            serde_json::json!({
                "operator": operator,
                "import": import,
                "added": added,
                "updated": updated,
            }),
        ),
        Written::Erased { requested, erased } => Event::new(
            "records.erased",
            serde_json::json!({
                "operator": operator,
                "import": import,
                "requested": requested,
                "erased": erased,
            }),
        ),
    }
}

/// Stores and indexes validated records (unique ids), reporting progress. Each chunk
/// written and each chunk erased (sync) is one durable write with its audit event, so
/// no record is stored or erased unattributed; the import's summary is an event too,
/// and the import fails if it cannot be recorded. Blocks for as long as the work
/// takes: call it from a blocking task.
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
    let import = random_hex_id()
        .ok_or_else(|| AppError::Internal("the system random generator failed".into()))?;
    let commit = |batch: Batch, written: Written| {
        events::commit(state, batch, &attribution(operator, Some(&import), written))
    };
    let summary = index.import(records, mode, progress, &commit)?;
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
            "import": import,
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
    events::commit(state, Batch::new(), &event).map_err(|e| {
        tracing::error!(error = %e, "cannot record the import's summary");
        AppError::Unavailable(
            "the records are stored and attributed, but the import's summary could not be recorded; run the import again".into(),
        )
    })?;
    Ok(Imported {
        received,
        summary,
        records: index.counts().records as u64,
    })
}

/// Erases records by id, each chunk one durable write with its audit event; returns
/// those erased (the others were unknown). A delete that erases nothing is recorded
/// too.
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
    let s = state.clone();
    let operator = operator.to_owned();
    let erased = tokio::task::spawn_blocking(move || {
        let commit = |batch: Batch, written: Written| {
            events::commit(&s, batch, &attribution(&operator, None, written))
        };
        let erased = index.delete(&ids, &commit)?;
        if erased.is_empty() {
            let nothing = Written::Erased {
                requested,
                erased: 0,
            };
            commit(Batch::new(), nothing)?;
        }
        Ok::<_, AppError>(erased)
    })
    .await??;
    tracing::info!(erased = erased.len(), "records erased");
    Ok(erased)
}

/// Records and keys in the active index.
pub fn count(state: &NodeState) -> Counts {
    state.index.active().counts()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::testkit::{FakePeers, audit_kinds, mueller, node_with},
        store::Table,
    };

    #[tokio::test]
    async fn an_import_or_erasure_whose_audit_event_fails_stores_nothing() {
        let node = node_with("DE", FakePeers::default(), |_| {});
        node.store.fail_writes_to(Table::Audit);
        let refused = import(
            &node.state,
            "operator-1",
            vec![mueller("de-1"), mueller("de-2")],
            ImportMode::Import,
            &mut |_| {},
        );
        assert!(
            matches!(refused, Err(AppError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(count(&node.state).records, 0, "no record without its event");
        assert!(audit_kinds(&node).is_empty());

        node.store.fail_writes(false);
        let imported = import(
            &node.state,
            "operator-1",
            vec![mueller("de-1"), mueller("de-2")],
            ImportMode::Import,
            &mut |_| {},
        )
        .expect("imported");
        assert_eq!(imported.summary.added, 2);
        assert_eq!(audit_kinds(&node), ["records.stored", "records.imported"]);

        node.store.fail_writes_to(Table::Audit);
        let ids = vec![mueller("de-1").id];
        assert!(
            delete(&node.state, "operator-1", ids.clone())
                .await
                .is_err()
        );
        assert_eq!(
            count(&node.state).records,
            2,
            "no erasure without its event"
        );
        node.store.fail_writes(false);
        assert_eq!(
            delete(&node.state, "operator-1", ids)
                .await
                .expect("erased")
                .len(),
            1
        );
        assert_eq!(count(&node.state).records, 1);
        assert_eq!(
            audit_kinds(&node).last().map(String::as_str),
            Some("records.erased")
        );
    }

    #[tokio::test]
    async fn imports_and_erasures_wait_for_a_rotation() {
        let node = node_with("DE", FakePeers::default(), |_| {});
        node.state
            .index
            .begin(crate::domain::pseudonymise::KeyEpoch(2))
            .expect("a rotation begins");
        let refused = import(
            &node.state,
            "operator-1",
            vec![mueller("de-1")],
            ImportMode::Import,
            &mut |_| {},
        );
        assert!(matches!(refused, Err(AppError::FailedPrecondition(m)) if m.contains("rotation")));
    }
}
