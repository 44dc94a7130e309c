//! The in-memory match index: keyed digests to the records that produced them, and
//! lookup with grading.
//!
//! The index is derived data. The store holds the records; the node builds the index
//! from them at start-up and after a key rotation, and keeps it in step with every
//! import, sync and erasure.
//!
//! Layout, chosen so a million records (about 31 million keys) fit in a few hundred
//! MiB: each key becomes a 64-bit *entry* (its kind in the top 4 bits, then the first
//! 60 bits of its digest). Most entries live in a *frozen* table: 2^22 buckets by the
//! entry's top 22 bits, each holding the next 32 bits as a fingerprint and the record's
//! ordinal, 8 bytes per key. New entries go to a small *delta* hash map first and are
//! merged into the frozen table when the delta grows past a quarter of it. An erased
//! record's ordinal is marked dead and its entries are dropped at the next merge.
//!
//! A digest presented under another kind than the one it was made for finds nothing
//! (a peer cannot upgrade a weak key to an exact one). A lookup compares 54 bits (kind
//! and 50 digest bits): with 31 million keys, the chance that a subject's ~32 keys meet
//! an unrelated record by a collision is at most 32 × 31e6 / 2^50, below one in a
//! million (docs/match-keys.md).

use std::collections::HashMap;

use crate::{
    domain::identity::RecordId,
    domain::pseudonymise::{HashedKey, KeyKind, KindSet, Quality},
};

mod run;
pub use run::{MergedTable, RUN_ENTRIES, Run};
use run::{PART_BUCKETS, PARTS, PartJob};

/// Most hits returned for one subject, best first.
pub const MAX_HITS_PER_SUBJECT: usize = 16;

const BUCKET_BITS: u32 = 22;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// The delta is merged once it holds this many entries, or a quarter of the frozen table.
const MIN_MERGE: usize = 1 << 20;

fn entry(key: &HashedKey) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&key.digest.0[..8]);
    (u64::from(key.kind.code() & 0xF) << 60) | (u64::from_be_bytes(prefix) >> 4)
}

fn kind_of(entry: u64) -> Option<KeyKind> {
    KeyKind::from_code((entry >> 60) as u32)
}

fn bucket(entry: u64) -> usize {
    (entry >> (64 - BUCKET_BITS)) as usize
}

fn fingerprint(entry: u64) -> u32 {
    (entry >> (64 - BUCKET_BITS - 32)) as u32
}

/// The merged part of the index: bucketed fingerprints, sorted within each bucket.
#[derive(Debug, Default)]
struct Frozen {
    /// `offsets[b]..offsets[b + 1]` is bucket `b`; empty when the table is empty.
    offsets: Vec<u32>,
    fingerprints: Vec<u32>,
    ordinals: Vec<u32>,
}

impl Frozen {
    fn len(&self) -> usize {
        self.fingerprints.len()
    }

    fn find(&self, entry: u64, mut found: impl FnMut(u32)) {
        if self.offsets.is_empty() {
            return;
        }
        let b = bucket(entry);
        let (start, end) = (self.offsets[b] as usize, self.offsets[b + 1] as usize);
        let fp = fingerprint(entry);
        let slice = &self.fingerprints[start..end];
        let first = slice.partition_point(|&f| f < fp);
        for (i, &f) in slice.iter().enumerate().skip(first) {
            if f != fp {
                break;
            }
            found(self.ordinals[start + i]);
        }
    }
}

/// The match index of one key epoch.
#[derive(Debug, Default)]
pub struct Index {
    frozen: Frozen,
    /// Entries not merged yet: entry to ordinal, or to a slot of `overflow` when several
    /// records share the entry (flagged by [`MANY`]).
    delta: EntryMap,
    overflow: Vec<Vec<u32>>,
    delta_entries: usize,
    /// Ordinal to record id; `None` once erased. Ordinals are never reused (a rebuild
    /// at start-up or for a new epoch numbers the records densely again).
    ids: Vec<Option<RecordId>>,
    /// Keys per ordinal, to keep [`Index::keys`] exact across erasures.
    key_counts: Vec<u32>,
    ordinals: HashMap<RecordId, u32>,
    dead: usize,
    keys: usize,
}

const MANY: u32 = 1 << 31;

/// Hashes delta entries, which are already uniformly random digest bits, with one
/// multiplication instead of SipHash.
#[derive(Clone, Copy, Debug, Default)]
struct EntryHasher(u64);

impl std::hash::Hasher for EntryHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type EntryMap = HashMap<u64, u32, std::hash::BuildHasherDefault<EntryHasher>>;

/// One record found for a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The record.
    pub record: RecordId,
    /// The quality of the hit (docs/match-keys.md, section 5).
    pub quality: Quality,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// How many records are indexed.
    pub fn records(&self) -> usize {
        self.ordinals.len()
    }

    /// How many (key, record) entries are indexed.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Whether a record is indexed.
    pub fn contains(&self, id: &RecordId) -> bool {
        self.ordinals.contains_key(id)
    }

    /// Gives a new record the next ordinal; None when it is indexed already or the
    /// ordinals are exhausted.
    fn register(&mut self, id: RecordId) -> Option<u32> {
        if self.ordinals.contains_key(&id) {
            return None;
        }
        let ordinal = u32::try_from(self.ids.len()).ok().filter(|&o| o < MANY)?;
        self.ids.push(Some(id.clone()));
        self.ordinals.insert(id, ordinal);
        Some(ordinal)
    }

    /// Adds a record under its hashed keys. Returns false, changing nothing, when the
    /// record is already indexed (remove it first to replace it).
    pub fn insert(&mut self, id: RecordId, keys: &[HashedKey]) -> bool {
        let Some(ordinal) = self.register(id) else {
            return false;
        };
        let mut added = 0u32;
        for key in keys {
            if self.add_delta(entry(key), ordinal) {
                added += 1;
            }
        }
        self.key_counts.push(added);
        self.keys += added as usize;
        if self.delta_entries >= MIN_MERGE.max(self.frozen.len() / 4) {
            self.merge(Run::new());
        }
        true
    }

    /// Registers a record and puts its entries in `run` instead of the delta: the
    /// record is found only once the run is absorbed ([`Index::absorb`]). Bulk loads
    /// use this; it needs no hash map and merges once per run.
    pub fn insert_into_run(&mut self, id: RecordId, keys: &[HashedKey], run: &mut Run) -> bool {
        let Some(ordinal) = self.register(id) else {
            return false;
        };
        let position = |k: &HashedKey| entry(k) >> (64 - BUCKET_BITS - 32);
        // Keys come sorted and deduplicated from the pseudonymiser, so equal entries
        // (almost impossible anyway) are neighbours; count what is really added.
        let mut added = 0u32;
        let mut previous = None;
        let mut push = |p: u64| {
            if previous != Some(p) {
                run.push(p, ordinal);
                added += 1;
                previous = Some(p);
            }
        };
        if keys.is_sorted_by_key(position) {
            keys.iter().map(position).for_each(&mut push);
        } else {
            let mut positions: Vec<u64> = keys.iter().map(position).collect();
            positions.sort_unstable();
            positions.into_iter().for_each(&mut push);
        }
        self.key_counts.push(added);
        self.keys += added as usize;
        true
    }

    /// Makes the records of a run findable.
    pub fn absorb(&mut self, run: Run) {
        if !run.is_empty() {
            self.merge(run);
        }
    }

    /// Removes a record. Returns false when it was not indexed.
    pub fn remove(&mut self, id: &RecordId) -> bool {
        let Some(ordinal) = self.ordinals.remove(id) else {
            return false;
        };
        self.ids[ordinal as usize] = None;
        self.keys -= self.key_counts[ordinal as usize] as usize;
        self.dead += 1;
        if self.dead >= (MIN_MERGE / 32).max(self.ids.len() / 4) {
            self.merge(Run::new());
        }
        true
    }

    /// The records matching any of a subject's keys, each with its quality, best first
    /// (then by record id), at most [`MAX_HITS_PER_SUBJECT`].
    pub fn lookup(&self, keys: &[HashedKey]) -> Vec<Found> {
        let mut matched: HashMap<u32, KindSet> = HashMap::new();
        for key in keys {
            let e = entry(key);
            let Some(kind) = kind_of(e) else { continue };
            let mut note = |o: u32| {
                if self.ids.get(o as usize).is_some_and(Option::is_some) {
                    matched.entry(o).or_default().insert(kind);
                }
            };
            match self.delta.get(&e) {
                None => {}
                Some(&v) if v & MANY == 0 => note(v),
                Some(&v) => self.overflow[(v & !MANY) as usize]
                    .iter()
                    .for_each(|&o| note(o)),
            }
            self.frozen.find(e, &mut note);
        }
        let mut found: Vec<Found> = matched
            .into_iter()
            .filter_map(|(o, kinds)| {
                let record = self.ids.get(o as usize)?.clone()?;
                Some(Found {
                    record,
                    quality: kinds.quality()?,
                })
            })
            .collect();
        found.sort_by(|a, b| b.quality.cmp(&a.quality).then(a.record.cmp(&b.record)));
        found.truncate(MAX_HITS_PER_SUBJECT);
        found
    }

    /// Adds one entry to the delta; false when the record already had it.
    fn add_delta(&mut self, e: u64, ordinal: u32) -> bool {
        match self.delta.get_mut(&e) {
            None => {
                self.delta.insert(e, ordinal);
            }
            Some(v) if *v & MANY == 0 => {
                if *v == ordinal {
                    return false;
                }
                self.overflow.push(vec![*v, ordinal]);
                *v = (self.overflow.len() - 1) as u32 | MANY;
            }
            Some(v) => {
                let list = &mut self.overflow[(*v & !MANY) as usize];
                if list.contains(&ordinal) {
                    return false;
                }
                list.push(ordinal);
            }
        }
        self.delta_entries += 1;
        true
    }

    /// Merges the delta into the frozen table and drops dead records' entries.
    fn merge(&mut self, run: Run) {
        let table = MergedTable(self.merged_inner(run));
        self.install(table);
    }

    /// The frozen table that merging the delta and `run` would give, computed without
    /// changing the index, so a caller can do it under a read lock while lookups go on
    /// and then [`Index::install`] it under a short write lock. The index must not
    /// change in between (one writer at a time).
    pub fn merged(&self, run: Run) -> MergedTable {
        MergedTable(self.merged_inner(run))
    }

    /// Installs a table from [`Index::merged`]: the delta is now in it.
    pub fn install(&mut self, table: MergedTable) {
        self.frozen = table.0;
        self.delta = EntryMap::default();
        self.overflow = Vec::new();
        self.delta_entries = 0;
        self.dead = 0;
    }

    fn merged_inner(&self, run: Run) -> Frozen {
        if self.frozen.len() == 0 && self.delta.is_empty() {
            return self.counted(run);
        }
        let live = |o: u32| self.ids.get(o as usize).is_some_and(Option::is_some);
        // The delta and the run as (bucket and fingerprint, ordinal), sorted.
        let mut delta: Vec<(u64, u32)> = run.into_entries().collect();
        delta.reserve(self.delta_entries);
        for (&e, &v) in &self.delta {
            let position = e >> (64 - BUCKET_BITS - 32);
            if v & MANY == 0 {
                delta.push((position, v));
            } else {
                delta.extend(
                    self.overflow[(v & !MANY) as usize]
                        .iter()
                        .map(|&o| (position, o)),
                );
            }
        }
        delta.retain(|&(_, o)| live(o));
        delta.sort_unstable();

        let old = &self.frozen;
        let capacity = old.len() + delta.len();
        let mut fingerprints = Vec::with_capacity(capacity);
        let mut ordinals = Vec::with_capacity(capacity);
        let mut offsets = Vec::with_capacity(BUCKETS + 1);
        let mut d = 0;
        for b in 0..BUCKETS {
            offsets.push(fingerprints.len() as u32);
            let (start, end) = if old.offsets.is_empty() {
                (0, 0)
            } else {
                (old.offsets[b] as usize, old.offsets[b + 1] as usize)
            };
            let mut i = start;
            loop {
                let from_delta = delta
                    .get(d)
                    .filter(|(p, _)| *p >> 32 == b as u64)
                    .map(|&(p, o)| ((p & 0xFFFF_FFFF) as u32, o));
                let from_old = (i < end).then(|| (old.fingerprints[i], old.ordinals[i]));
                let (fp, o) = match (from_old, from_delta) {
                    (None, None) => break,
                    (Some(x), None) => {
                        i += 1;
                        x
                    }
                    (None, Some(y)) => {
                        d += 1;
                        y
                    }
                    (Some(x), Some(y)) => {
                        if x.0 <= y.0 {
                            i += 1;
                            x
                        } else {
                            d += 1;
                            y
                        }
                    }
                };
                if live(o) {
                    fingerprints.push(fp);
                    ordinals.push(o);
                }
            }
        }
        offsets.push(fingerprints.len() as u32);
        fingerprints.shrink_to_fit();
        ordinals.shrink_to_fit();
        Frozen {
            offsets,
            fingerprints,
            ordinals,
        }
    }

    /// A frozen table from a run alone (the index has no other entries): each
    /// partition is counted into its own range of the table, bucket by bucket, then
    /// each small bucket is sorted. Linear, done on every core, and needs no copy of
    /// the run beside the table it fills.
    fn counted(&self, mut run: Run) -> Frozen {
        let live = |o: u32| self.ids.get(o as usize).is_some_and(Option::is_some);
        run.group();
        // Entries kept per partition, to cut the table into disjoint ranges.
        let mut sizes = vec![0usize; PARTS];
        for bounds in &run.blocks {
            for (part, size) in sizes.iter_mut().enumerate() {
                *size += run.ordinals[bounds[part]..bounds[part + 1]]
                    .iter()
                    .filter(|&&o| live(o))
                    .count();
            }
        }
        let total: usize = sizes.iter().sum();
        let mut fingerprints = vec![0u32; total];
        let mut ordinals = vec![0u32; total];
        let mut offsets = vec![0u32; BUCKETS + 1];
        offsets[BUCKETS] = total as u32;
        let mut jobs = Vec::with_capacity(PARTS);
        {
            let (mut fp_rest, mut ord_rest) = (&mut fingerprints[..], &mut ordinals[..]);
            let mut offset_rest = &mut offsets[..BUCKETS];
            let mut base = 0u32;
            for (part, &size) in sizes.iter().enumerate() {
                let (fp, fp_tail) = std::mem::take(&mut fp_rest).split_at_mut(size);
                let (ord, ord_tail) = std::mem::take(&mut ord_rest).split_at_mut(size);
                let (off, off_tail) = std::mem::take(&mut offset_rest).split_at_mut(PART_BUCKETS);
                jobs.push(PartJob {
                    part,
                    base,
                    fingerprints: fp,
                    ordinals: ord,
                    offsets: off,
                });
                (fp_rest, ord_rest, offset_rest) = (fp_tail, ord_tail, off_tail);
                base += size as u32;
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let jobs = std::sync::Mutex::new(jobs.into_iter());
        let run = &run;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).next();
                        match job {
                            Some(job) => job.fill(run, live),
                            None => break,
                        }
                    }
                });
            }
        });
        Frozen {
            offsets,
            fingerprints,
            ordinals,
        }
    }

    /// Merges everything into the frozen table now (after a bulk build).
    pub fn compact(&mut self) {
        if self.delta_entries > 0 || self.dead > 0 {
            self.merge(Run::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::identity::Identity,
        domain::pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Side},
    };

    fn keys(p: &HmacKey, family: &str, given: &str, dob: &str) -> Vec<HashedKey> {
        p.hash_identity(
            &Identity::from_fields(family, given, dob, &[]).expect("valid"),
            Side::Query,
        )
    }

    fn id(s: &str) -> RecordId {
        RecordId::try_from(s).expect("valid id")
    }

    #[test]
    fn a_subject_gets_at_most_sixteen_records_the_best_first() {
        let p = HmacKey::from_secret_bytes(&[1; 32], KeyEpoch(1));
        let mut index = Index::new();
        // Twenty records of the same person (a common name in a big file), and one
        // with another date of birth, which only a tolerant key reaches.
        for i in 0..20 {
            assert!(index.insert(
                id(&format!("same-{i:02}")),
                &keys(&p, "Smith", "John", "1980-01-01")
            ));
        }
        assert!(index.insert(id("tolerant"), &keys(&p, "Smith", "John", "1981-01-01")));
        let found = index.lookup(&keys(&p, "Smith", "John", "1980-01-01"));
        assert_eq!(found.len(), MAX_HITS_PER_SUBJECT);
        assert!(found.iter().all(|f| f.quality == Quality::Exact));
        assert!(
            found.iter().all(|f| f.record.as_str() != "tolerant"),
            "the best first"
        );
    }

    #[test]
    fn finds_grades_and_forgets_records() {
        let p = HmacKey::from_secret_bytes(&[1; 32], KeyEpoch(1));
        let mut index = Index::new();
        let a = keys(&p, "Müller", "Hans", "1970-05-12");
        let b = keys(&p, "Müller", "Hans", "1971-05-12");
        assert!(index.insert(id("a"), &a));
        assert!(index.insert(id("b"), &b));
        assert!(!index.insert(id("a"), &a));
        let found = index.lookup(&keys(&p, "MUELLER", "hans", "1970-05-12"));
        assert_eq!(
            found[0],
            Found {
                record: id("a"),
                quality: Quality::Exact
            }
        );
        // Same names, another year: found only through a tolerant date.
        assert_eq!(
            found[1],
            Found {
                record: id("b"),
                quality: Quality::Weak
            }
        );
        assert!(index.remove(&id("a")));
        let found = index.lookup(&keys(&p, "MUELLER", "hans", "1970-05-12"));
        assert_eq!(found.len(), 1);
        assert_eq!(index.records(), 1);
        assert!(index.remove(&id("b")));
        index.compact();
        assert_eq!(index.frozen.len(), 0);
        assert_eq!(index.keys(), 0);
    }

    #[test]
    fn merged_and_unmerged_entries_are_found_and_erasures_stick() {
        let p = HmacKey::from_secret_bytes(&[2; 32], KeyEpoch(1));
        let records = crate::tooling::synthetic::records(11, 3_000);
        let hashed: Vec<Vec<HashedKey>> = records
            .iter()
            .map(|r| p.hash_identity(&r.identity, Side::Record))
            .collect();
        let mut index = Index::new();
        for (r, k) in records.iter().zip(&hashed).take(2_000) {
            assert!(index.insert(r.id.clone(), k));
        }
        index.compact();
        for (r, k) in records.iter().zip(&hashed).skip(2_000) {
            assert!(index.insert(r.id.clone(), k));
        }
        for r in records.iter().step_by(7) {
            assert!(index.remove(&r.id));
        }
        let check = |index: &Index| {
            for (i, r) in records.iter().enumerate() {
                let found = index.lookup(&p.hash_identity(&r.identity, Side::Query));
                let hit = found.iter().find(|f| f.record == r.id);
                if i % 7 == 0 {
                    assert!(hit.is_none(), "erased record {i} still found");
                } else {
                    assert_eq!(hit.map(|f| f.quality), Some(Quality::Exact), "record {i}");
                }
            }
        };
        check(&index);
        let keys = index.keys();
        index.compact();
        assert_eq!(index.keys(), keys);
        assert_eq!(index.frozen.len(), keys);
        check(&index);
        // An erased record can come back.
        assert!(index.insert(records[0].id.clone(), &hashed[0]));
        assert_eq!(index.lookup(&hashed[0])[0].record, records[0].id);
    }

    #[test]
    fn runs_build_and_extend_the_table() {
        let p = HmacKey::from_secret_bytes(&[3; 32], KeyEpoch(1));
        let records = crate::tooling::synthetic::records(12, 3_000);
        let hashed: Vec<Vec<HashedKey>> = records
            .iter()
            .map(|r| p.hash_identity(&r.identity, Side::Record))
            .collect();
        let mut index = Index::new();
        let mut run = Run::new();
        for (r, k) in records.iter().zip(&hashed).take(2_000) {
            assert!(index.insert_into_run(r.id.clone(), k, &mut run));
        }
        assert!(
            index.lookup(&hashed[0]).is_empty(),
            "not findable before absorb"
        );
        index.absorb(run);
        let keys = index.keys();
        assert_eq!(index.frozen.len(), keys);
        for r in records.iter().take(2_000).step_by(5) {
            assert!(index.remove(&r.id));
        }
        let mut run = Run::new();
        for (r, k) in records.iter().zip(&hashed).skip(2_000) {
            assert!(index.insert_into_run(r.id.clone(), k, &mut run));
        }
        index.absorb(run);
        for (i, (r, k)) in records.iter().zip(&hashed).enumerate() {
            let found = index.lookup(k).into_iter().find(|f| f.record == r.id);
            if i < 2_000 && i % 5 == 0 {
                assert!(found.is_none(), "erased record {i} still found");
            } else {
                assert_eq!(found.map(|f| f.quality), Some(Quality::Exact), "record {i}");
            }
        }
    }

    #[test]
    fn a_digest_under_another_kind_finds_nothing() {
        let p = HmacKey::from_secret_bytes(&[1; 32], KeyEpoch(1));
        let mut index = Index::new();
        let a = keys(&p, "Doe", "John", "1970-05-12");
        index.insert(id("a"), &a);
        let forged: Vec<HashedKey> = a
            .iter()
            .map(|k| HashedKey {
                kind: KeyKind::Full,
                digest: k.digest,
            })
            .filter(|k| !a.contains(k))
            .collect();
        assert!(!forged.is_empty());
        assert!(index.lookup(&forged).is_empty());
    }
}
