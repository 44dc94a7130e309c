//! The national index: the node's records in the store, and the in-memory match index
//! kept in step with them.
//!
//! The store is the record of truth. The match index is derived from it (at start-up,
//! and for a new key epoch) and updated after each durable write, so a crash can lose
//! nothing that was acknowledged: on restart the index is rebuilt from what is stored.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard},
    time::{Duration, Instant},
};

pub use crate::domain::digests::erase_digests;
use crate::{
    domain::digests::{digests_key, digests_of, encode_digests},
    domain::identity::{Identity, Record, RecordId},
    domain::matching::{Found, Index, RUN_ENTRIES, Run},
    domain::pseudonymise::{HashedKey, KeyEpoch, KeyedDigest, Side, oprf::NodeKey},
    store::{Batch, Entry, Store, StoreError, Table},
};

/// Records written per atomic store batch during an import.
pub const WRITE_CHUNK: usize = 5_000;
/// Entries a build gathers before absorbing them (12 bytes each: 576 MiB).
const BUILD_RUN_ENTRIES: usize = 48 << 20;
/// Records decoded and hashed together when building an index.
const BUILD_CHUNK: usize = 20_000;

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The store failed; what was written before stays written and indexed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record cannot be decoded.
    #[error("stored record {0} cannot be decoded")]
    Corrupt(String),
}

/// What an import or sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Records not stored before.
    pub added: usize,
    /// Stored records whose content changed.
    pub updated: usize,
    /// Records already stored as they are in the file.
    pub unchanged: usize,
    /// Records erased because the synced file no longer holds them.
    pub erased: usize,
}

/// What one atomic write of an import or an erasure does, for the audit event that
/// is stored with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Records stored: new ones and changed ones.
    Stored {
        /// Records not stored before.
        added: usize,
        /// Stored records whose content changed.
        updated: usize,
    },
    /// Records erased.
    Erased {
        /// Ids asked for in this write.
        requested: usize,
        /// Of those, the ones that were stored.
        erased: usize,
    },
}

/// Applies one write of an import or an erasure together with what attributes it (the
/// caller's audit event), atomically and durably: a record is never stored or erased
/// without it.
pub type Commit<'a> = &'a (dyn Fn(Batch, Written) -> Result<(), StoreError> + Sync);

/// How an import treats stored records absent from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// Keep them: add and update only.
    Import,
    /// Erase them: the index becomes equal to the file.
    Sync,
}

/// Where a long operation is, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub stage: Stage,
    /// Records done so far.
    pub done: usize,
    /// Records to do in this stage.
    pub total: usize,
}

/// Stages of an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Comparing with the stored records.
    Comparing,
    /// Storing and indexing.
    Writing,
    /// Erasing records absent from a synced file.
    Erasing,
    /// Rebuilding the match index from the stored records.
    Rebuilding,
}

impl Stage {
    /// Lower-case name for output.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Comparing => "comparing",
            Stage::Writing => "writing",
            Stage::Erasing => "erasing",
            Stage::Rebuilding => "rebuilding",
        }
    }
}

/// Counts of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Records stored and indexed.
    pub records: usize,
    /// Keys in the match index.
    pub keys: usize,
    /// The key epoch the index is built for.
    pub epoch: KeyEpoch,
}

/// The node's records and their match index.
#[derive(Debug)]
pub struct NationalIndex {
    store: Arc<dyn Store>,
    key: NodeKey,
    index: RwLock<Index>,
    /// Serialises writers (imports, syncs, deletes); readers only take `index`.
    writer: Mutex<()>,
}

/// Format of a stored record value: this byte, then the record in postcard.
const RECORD_FORMAT: u8 = 1;

fn encode(record: &Record) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    // Serialising owned strings, numbers and enums into a Vec cannot fail.
    out.extend(postcard::to_allocvec(record).unwrap_or_default());
    out
}

fn decode(key: &[u8], value: &[u8]) -> Result<Record, IndexError> {
    let corrupt = || IndexError::Corrupt(String::from_utf8_lossy(key).into_owned());
    match value.split_first() {
        Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

/// The leading fields of a stored [`Record`]: what indexing needs, decoded without
/// the payload behind them.
#[derive(serde::Deserialize)]
pub(crate) struct RecordHead {
    // Decoded because it comes first; the id is the entry's key too.
    _id: RecordId,
    pub(crate) identity: Identity,
}

pub(crate) fn decode_head(key: &[u8], value: &[u8]) -> Result<RecordHead, IndexError> {
    let corrupt = || IndexError::Corrupt(String::from_utf8_lossy(key).into_owned());
    match value.split_first() {
        Some((&RECORD_FORMAT, rest)) => postcard::take_from_bytes(rest)
            .map(|(head, _)| head)
            .map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

/// Hashes the keys of many records, using every core.
fn hash_all(p: &dyn KeyedDigest, records: &[Record]) -> Vec<Vec<HashedKey>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if records.len() < 256 || threads == 1 {
        return records
            .iter()
            .map(|r| p.hash_identity(&r.identity, Side::Record))
            .collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|r| p.hash_identity(&r.identity, Side::Record))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl NationalIndex {
    /// Opens the index over `store`, building the match index from every stored record.
    pub fn load(
        store: Arc<dyn Store>,
        key: NodeKey,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<NationalIndex, IndexError> {
        let index = build(store.as_ref(), &key, progress)?;
        Ok(NationalIndex {
            store,
            key,
            index: RwLock::new(index),
            writer: Mutex::new(()),
        })
    }

    /// The key epoch of the index.
    pub fn epoch(&self) -> KeyEpoch {
        self.key.epoch()
    }

    /// This node's key of the index's epoch (a peer's evaluation uses it).
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// Erases this epoch's stored digests, once it is retired. Blocks: call it from a
    /// blocking task.
    pub fn erase_digests(&self) -> Result<usize, IndexError> {
        erase_digests(self.store.as_ref(), self.epoch())
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts of records and keys.
    pub fn counts(&self) -> Counts {
        let index = self.read();
        Counts {
            records: index.records(),
            keys: index.keys(),
            epoch: self.epoch(),
        }
    }

    /// The records matching each subject's keys.
    pub fn lookup(&self, subjects: &[Vec<HashedKey>]) -> Vec<Vec<Found>> {
        let index = self.read();
        subjects.iter().map(|keys| index.lookup(keys)).collect()
    }

    /// Stores and indexes records (validated, with unique ids). In [`ImportMode::Sync`]
    /// stored records absent from `records` are erased afterwards. Records are written
    /// in atomic chunks through `commit`, each with what attributes it; each chunk is
    /// durable and indexed before the next one starts.
    ///
    /// Blocks for as long as the work takes: call it from a blocking task.
    pub fn import(
        &self,
        records: Vec<Record>,
        mode: ImportMode,
        progress: &mut dyn FnMut(Progress),
        commit: Commit<'_>,
    ) -> Result<ImportSummary, IndexError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summary = ImportSummary::default();
        let total = records.len();
        let mut changed: Vec<(Record, Option<Record>)> = Vec::new();
        let keep: HashSet<RecordId> = match mode {
            ImportMode::Sync => records.iter().map(|r| r.id.clone()).collect(),
            ImportMode::Import => HashSet::new(),
        };
        for (i, record) in records.into_iter().enumerate() {
            let key = record.id.as_str().as_bytes();
            match self.store.get(Table::Records, key)? {
                None => {
                    summary.added += 1;
                    changed.push((record, None));
                }
                Some(bytes) => {
                    let old = decode(key, &bytes)?;
                    if old == record {
                        summary.unchanged += 1;
                    } else {
                        summary.updated += 1;
                        changed.push((record, Some(old)));
                    }
                }
            }
            if i % 50_000 == 0 {
                progress(Progress {
                    stage: Stage::Comparing,
                    done: i,
                    total,
                });
            }
        }
        let to_write = changed.len();
        let mut written = 0;
        progress(Progress {
            stage: Stage::Writing,
            done: 0,
            total: to_write,
        });
        // A writer thread stores and indexes chunk N while this thread encodes and
        // hashes chunk N+1. New entries gather in a run that is absorbed every few
        // million keys and at the end, also when a write fails: what is stored is
        // always indexed.
        let mut changed = changed.into_iter();
        let index = &self.index;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(
                Batch,
                Written,
                Vec<Record>,
                Vec<Vec<HashedKey>>,
                Vec<RecordId>,
            )>(1);
            let writer = scope.spawn(move || {
                let mut run = Run::new();
                let mut result = Ok(());
                for (batch, written, new, keys, old) in rx {
                    if let Err(e) = commit(batch, written) {
                        result = Err(IndexError::from(e));
                        break;
                    }
                    let mut guard = index.write().unwrap_or_else(PoisonError::into_inner);
                    for id in &old {
                        guard.remove(id);
                    }
                    for (record, keys) in new.into_iter().zip(&keys) {
                        guard.insert_into_run(record.id, keys, &mut run);
                    }
                    let due = run.len() >= RUN_ENTRIES.max(guard.keys() / 2);
                    drop(guard);
                    if due {
                        absorb(index, std::mem::take(&mut run));
                    }
                }
                absorb(index, run);
                result
            });
            loop {
                let chunk: Vec<_> = changed.by_ref().take(WRITE_CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                let (new, old): (Vec<Record>, Vec<Option<Record>>) = chunk.into_iter().unzip();
                let keys = hash_all(&self.key, &new);
                // Each record is stored with its digests, in one write.
                let mut batch = Batch::new();
                for (record, keys) in new.iter().zip(&keys) {
                    let id = record.id.as_str().as_bytes();
                    batch.put(Table::Records, id, encode(record));
                    batch.put(
                        Table::Digests,
                        digests_key(self.epoch(), id),
                        encode_digests(keys),
                    );
                }
                let old: Vec<RecordId> = old.into_iter().flatten().map(|r| r.id).collect();
                let stored = Written::Stored {
                    added: new.len() - old.len(),
                    updated: old.len(),
                };
                written += new.len();
                if tx.send((batch, stored, new, keys, old)).is_err() {
                    break;
                }
                progress(Progress {
                    stage: Stage::Writing,
                    done: written,
                    total: to_write,
                });
            }
            drop(tx);
            writer
                .join()
                .unwrap_or_else(|_| Err(IndexError::Corrupt("(writer thread)".into())))
        })?;
        if mode == ImportMode::Sync {
            let mut absent = Vec::new();
            for entry in self.store.scan_prefix(Table::Records, b"") {
                let entry = entry?;
                let id = String::from_utf8_lossy(&entry.key).into_owned();
                match RecordId::try_from(id) {
                    Ok(id) if keep.contains(&id) => {}
                    Ok(id) => absent.push(id),
                    Err(_) => {
                        return Err(IndexError::Corrupt(
                            String::from_utf8_lossy(&entry.key).into_owned(),
                        ));
                    }
                }
            }
            let erase_total = absent.len();
            for (i, ids) in absent.chunks(WRITE_CHUNK).enumerate() {
                summary.erased += self.erase(ids, commit)?.len();
                progress(Progress {
                    stage: Stage::Erasing,
                    done: (i * WRITE_CHUNK + ids.len()).min(erase_total),
                    total: erase_total,
                });
            }
        }
        Ok(summary)
    }

    /// Erases records by id, in atomic chunks through `commit`; returns the ids that
    /// were stored (and are now erased). Blocks: call it from a blocking task.
    pub fn delete(
        &self,
        ids: &[RecordId],
        commit: Commit<'_>,
    ) -> Result<Vec<RecordId>, IndexError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut erased = Vec::new();
        for chunk in ids.chunks(WRITE_CHUNK) {
            erased.extend(self.erase(chunk, commit)?);
        }
        Ok(erased)
    }

    /// Erases one chunk atomically (the caller holds the writer lock).
    fn erase(&self, ids: &[RecordId], commit: Commit<'_>) -> Result<Vec<RecordId>, IndexError> {
        let mut batch = Batch::new();
        let mut old = Vec::new();
        for id in ids {
            let key = id.as_str().as_bytes();
            if let Some(bytes) = self.store.get(Table::Records, key)? {
                old.push(decode(key, &bytes)?);
                batch.delete(Table::Records, key);
                batch.delete(Table::Digests, digests_key(self.epoch(), key));
            }
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        commit(
            batch,
            Written::Erased {
                requested: ids.len(),
                erased: old.len(),
            },
        )?;
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for record in &old {
            index.remove(&record.id);
        }
        Ok(old.into_iter().map(|r| r.id).collect())
    }

    /// A stored record.
    pub fn record(&self, id: &RecordId) -> Result<Option<Record>, IndexError> {
        let key = id.as_str().as_bytes();
        self.store
            .get(Table::Records, key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }
}

/// Merges a run into a shared index: the merge is computed under the read lock (so
/// lookups go on) and installed under a short write lock. Only the single writer
/// (imports hold `NationalIndex::writer`) calls it, so nothing changes in between.
fn absorb(index: &RwLock<Index>, run: Run) {
    if run.is_empty() {
        return;
    }
    let table = index
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .merged(run);
    index
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .install(table);
}

/// Builds a match index from every stored record and its digests under `key`'s
/// epoch. A record without stored digests (a new epoch, or a store written by scheme
/// v1) is keyed now and its digests stored, so the next start loads them.
pub fn build(
    store: &dyn Store,
    key: &NodeKey,
    progress: &mut dyn FnMut(Progress),
) -> Result<Index, IndexError> {
    let started = Instant::now();
    let mut index = Index::new();
    let mut run = Run::new();
    let mut done = 0;
    let mut last_report = Instant::now();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    // A pipeline: one thread scans the store, `workers` threads decode and hash, and
    // this thread fills the index, so no core waits for another stage.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(workers);
    let raw_rx = Mutex::new(raw_rx);
    std::thread::scope(|scope| {
        let (hashed_tx, hashed_rx) = std::sync::mpsc::sync_channel::<
            Result<Vec<(RecordId, Vec<HashedKey>)>, IndexError>,
        >(workers);
        let scan_tx = hashed_tx.clone();
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(BUILD_CHUNK);
            for entry in store.scan_prefix(Table::Records, b"") {
                match entry {
                    Ok(e) => chunk.push(e),
                    Err(e) => {
                        let _ = scan_tx.send(Err(e.into()));
                        return;
                    }
                }
                if chunk.len() == BUILD_CHUNK
                    && raw_tx
                        .send(std::mem::replace(
                            &mut chunk,
                            Vec::with_capacity(BUILD_CHUNK),
                        ))
                        .is_err()
                {
                    return;
                }
            }
            let _ = raw_tx.send(chunk);
        });
        for _ in 0..workers {
            let raw_rx = &raw_rx;
            let hashed_tx = hashed_tx.clone();
            scope.spawn(move || {
                loop {
                    let next = raw_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(chunk)) = next else { return };
                    let hashed = digests_of(store, key, &chunk);
                    if hashed_tx.send(hashed).is_err() {
                        return;
                    }
                }
            });
        }
        drop(hashed_tx);
        for hashed in hashed_rx {
            let hashed = hashed?;
            done += hashed.len();
            for (id, keys) in hashed {
                index.insert_into_run(id, &keys, &mut run);
            }
            // One absorb at the end builds the table by a linear counting sort; only
            // a very large file is absorbed in parts, to bound the run's memory.
            if run.len() >= BUILD_RUN_ENTRIES {
                index.absorb(std::mem::take(&mut run));
            }
            if last_report.elapsed() > Duration::from_millis(500) {
                progress(Progress {
                    stage: Stage::Rebuilding,
                    done,
                    total: 0,
                });
                last_report = Instant::now();
            }
        }
        Ok::<(), IndexError>(())
    })?;
    index.absorb(run);
    index.compact();
    progress(Progress {
        stage: Stage::Rebuilding,
        done,
        total: done,
    });
    tracing::info!(
        records = index.records(),
        keys = index.keys(),
        ms = started.elapsed().as_millis() as u64,
        "match index built"
    );
    Ok(index)
}
