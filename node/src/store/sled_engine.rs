//! The sled engine: the only module that names the database crate.

use std::{collections::HashMap, path::Path};

use sled::Transactional as _;

use super::{Batch, Entry, Op, Scan, Store, StoreError, Table};

/// A [`Store`] on sled 0.34: one sled tree per table; batches are a sled transaction
/// over the trees they touch, followed by a flush (fsync) before `apply` returns.
#[derive(Debug)]
pub(super) struct SledStore {
    db: sled::Db,
    trees: HashMap<Table, sled::Tree>,
}

/// Whether opening failed on sled's file lock. sled 0.34 reports a busy lock as an
/// `ErrorKind::Other` error whose message says so (config.rs, `try_lock`), not as
/// `WouldBlock`, so the message is what tells.
fn lock_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Page cache of the sled store.
const CACHE_BYTES: u64 = 128 << 20;

fn engine_err(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    /// Opens the engine's files. The caller holds the data directory's own lock, so
    /// no other store is open on it. sled's file lock can still be held by the
    /// background threads of a store this process has just closed (a node restarted
    /// in place, as the tests do: sled does not join them on drop, sled issues #1234
    /// and #1289); on a loaded machine that has taken over ten seconds. So a busy
    /// lock is retried for up to a minute, saying so after the first second.
    pub(super) fn open(path: &Path) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // Records are read in bulk only at start-up and on rotation; the match index
            // lives in memory. sled's default 1 GiB page cache would double the footprint.
            .cache_capacity(CACHE_BYTES);
        let started = std::time::Instant::now();
        let mut said = false;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if lock_busy(&e) && started.elapsed() < std::time::Duration::from_secs(60) =>
                {
                    if !said && started.elapsed() > std::time::Duration::from_secs(1) {
                        tracing::warn!(
                            "waiting for the store this process closed to release its files"
                        );
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(StoreError::Directory {
                        path: path.to_owned(),
                        message: format!("cannot open the sled store: {e}"),
                    });
                }
            }
        };
        let trees = Table::ALL
            .iter()
            .map(|t| Ok((*t, db.open_tree(t.name()).map_err(engine_err)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(SledStore { db, trees })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        // Every table is opened in `open`.
        &self.trees[&table]
    }

    fn iter<'a>(iter: sled::Iter) -> Scan<'a> {
        Box::new(iter.map(|r| {
            r.map(|(k, v)| Entry {
                key: k.to_vec(),
                value: v.to_vec(),
            })
            .map_err(engine_err)
        }))
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(table)
            .get(key)
            .map_err(engine_err)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Scan<'_> {
        Self::iter(self.tree(table).scan_prefix(prefix))
    }

    fn scan_range(&self, table: Table, start: &[u8], end: Option<&[u8]>) -> Scan<'_> {
        let tree = self.tree(table);
        match end {
            Some(end) => Self::iter(tree.range(start..end)),
            None => Self::iter(tree.range(start..)),
        }
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One sled batch per table touched, applied in one transaction over those trees.
        let mut per_table: Vec<(Table, sled::Batch)> = Vec::new();
        for op in batch.ops() {
            let table = match op {
                Op::Put { table, .. } | Op::Delete { table, .. } => *table,
            };
            let slot = match per_table.iter().position(|(t, _)| *t == table) {
                Some(i) => i,
                None => {
                    per_table.push((table, sled::Batch::default()));
                    per_table.len() - 1
                }
            };
            match op {
                Op::Put { key, value, .. } => {
                    per_table[slot].1.insert(key.as_slice(), value.as_slice())
                }
                Op::Delete { key, .. } => per_table[slot].1.remove(key.as_slice()),
            }
        }
        if per_table.len() == 1 {
            if let Some((table, b)) = per_table.pop() {
                self.tree(table).apply_batch(b).map_err(engine_err)?;
            }
        } else {
            let trees: Vec<sled::Tree> = per_table
                .iter()
                .map(|(t, _)| self.tree(*t).clone())
                .collect();
            trees
                .as_slice()
                .transaction(|txs| {
                    for (tx, (_, b)) in txs.iter().zip(&per_table) {
                        tx.apply_batch(b)?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => engine_err(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Engine("transaction aborted".into())
                    }
                })?;
        }
        if batch.synced() {
            self.db.flush().map_err(engine_err)?;
        }
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "sled-0.34"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_waits_for_a_store_this_process_is_closing() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(700));
            drop(first);
        });
        // sled's lock is busy until `first` is dropped; the open waits for it.
        let second = SledStore::open(dir.path());
        closer.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }
}
