//! The in-memory match index: keyed digests to the records that produced them, and
//! lookup with grading.
//!
//! The index is derived data. The store holds the records; the node builds the index
//! from them at start-up and after a key rotation, and keeps it in step with every
//! import, sync and erasure. Keeping it in memory lets a 2-core machine index a million
//! records in seconds; its size is bounded by 12-16 bytes per key (see
//! docs/benchmarks.md for the measured figure).
//!
//! Each entry is keyed by the first 64 bits of a digest with the low 4 bits replaced by
//! the key kind, so a digest presented under another kind than the one it was made
//! for finds nothing (a peer cannot upgrade a weak key to an exact one). Collisions of
//! 60-bit prefixes among tens of millions of keys are negligible (about 1e-4 expected
//! in a 10M-key index for a whole batch), and would at worst add a spurious hit.

use std::collections::HashMap;

use crate::{
    identity::RecordId,
    pseudonymise::{HashedKey, KeyKind, KindSet, Quality},
};

/// Most hits returned for one subject, best first.
pub const MAX_HITS_PER_SUBJECT: usize = 16;

/// A record's slot in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ordinal(u32);

const OVERFLOW: u32 = 1 << 31;

/// The match index of one key epoch.
#[derive(Debug, Default)]
pub struct Index {
    /// Entry key to an ordinal, or (with [`OVERFLOW`] set) to a slot of `overflow`.
    postings: HashMap<u64, u32>,
    overflow: Vec<Vec<u32>>,
    free_overflow: Vec<u32>,
    ids: Vec<Option<RecordId>>,
    ordinals: HashMap<RecordId, Ordinal>,
    free_ordinals: Vec<u32>,
    keys: usize,
}

/// One record found for a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The record.
    pub record: RecordId,
    /// The best quality among the keys that matched it.
    pub quality: Quality,
}

fn entry_key(key: &HashedKey) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&key.digest.0[..8]);
    (u64::from_be_bytes(prefix) & !0xF) | u64::from(key.kind.code() & 0xF)
}

fn kind_of(entry: u64) -> Option<KeyKind> {
    KeyKind::from_code((entry & 0xF) as u32)
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// An empty index with room for about `keys` keys.
    pub fn with_capacity(records: usize, keys: usize) -> Index {
        Index {
            postings: HashMap::with_capacity(keys),
            ids: Vec::with_capacity(records),
            ordinals: HashMap::with_capacity(records),
            ..Index::default()
        }
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

    /// Adds a record under its hashed keys. A record already present is replaced, so
    /// the caller must pass the keys it was indexed under to [`Index::remove`] first;
    /// `insert` refuses (returns false) instead of guessing.
    pub fn insert(&mut self, id: RecordId, keys: &[HashedKey]) -> bool {
        if self.ordinals.contains_key(&id) {
            return false;
        }
        let ordinal = match self.free_ordinals.pop() {
            Some(o) => {
                self.ids[o as usize] = Some(id.clone());
                o
            }
            None => {
                self.ids.push(Some(id.clone()));
                (self.ids.len() - 1) as u32
            }
        };
        self.ordinals.insert(id, Ordinal(ordinal));
        for key in keys {
            self.add_posting(entry_key(key), ordinal);
        }
        self.keys += keys.len();
        true
    }

    /// Removes a record, given the keys it was indexed under. Returns false when the
    /// record was not indexed.
    pub fn remove(&mut self, id: &RecordId, keys: &[HashedKey]) -> bool {
        let Some(Ordinal(ordinal)) = self.ordinals.remove(id) else {
            return false;
        };
        for key in keys {
            self.remove_posting(entry_key(key), ordinal);
        }
        self.keys = self.keys.saturating_sub(keys.len());
        self.ids[ordinal as usize] = None;
        self.free_ordinals.push(ordinal);
        true
    }

    /// The records matching any of a subject's keys, each with the best quality of
    /// the kinds that matched, best first (then by record id), at most
    /// [`MAX_HITS_PER_SUBJECT`].
    pub fn lookup(&self, keys: &[HashedKey]) -> Vec<Found> {
        let mut matched: HashMap<u32, KindSet> = HashMap::new();
        for key in keys {
            let entry = entry_key(key);
            let Some(kind) = kind_of(entry) else { continue };
            let mut note = |o: u32| matched.entry(o).or_default().insert(kind);
            match self.postings.get(&entry) {
                None => {}
                Some(&v) if v & OVERFLOW == 0 => note(v),
                Some(&v) => self.overflow[(v & !OVERFLOW) as usize]
                    .iter()
                    .for_each(|&o| note(o)),
            }
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

    fn add_posting(&mut self, entry: u64, ordinal: u32) {
        match self.postings.get_mut(&entry) {
            None => {
                self.postings.insert(entry, ordinal);
            }
            Some(v) if *v & OVERFLOW == 0 => {
                if *v == ordinal {
                    return;
                }
                let list = vec![*v, ordinal];
                let slot = match self.free_overflow.pop() {
                    Some(s) => {
                        self.overflow[s as usize] = list;
                        s
                    }
                    None => {
                        self.overflow.push(list);
                        (self.overflow.len() - 1) as u32
                    }
                };
                *v = slot | OVERFLOW;
            }
            Some(v) => {
                let list = &mut self.overflow[(*v & !OVERFLOW) as usize];
                if !list.contains(&ordinal) {
                    list.push(ordinal);
                }
            }
        }
    }

    fn remove_posting(&mut self, entry: u64, ordinal: u32) {
        let Some(&v) = self.postings.get(&entry) else {
            return;
        };
        if v & OVERFLOW == 0 {
            if v == ordinal {
                self.postings.remove(&entry);
            }
            return;
        }
        let slot = v & !OVERFLOW;
        let list = &mut self.overflow[slot as usize];
        list.retain(|&o| o != ordinal);
        if list.len() == 1 {
            let last = list[0];
            list.clear();
            list.shrink_to_fit();
            self.free_overflow.push(slot);
            self.postings.insert(entry, last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::Identity,
        pseudonymise::{KeyEpoch, Pseudonymiser, Side},
    };

    fn keys(p: &Pseudonymiser, family: &str, given: &str, dob: &str) -> Vec<HashedKey> {
        p.hash_identity(
            &Identity::from_fields(family, given, dob, &[]).expect("valid"),
            Side::Query,
        )
    }

    fn id(s: &str) -> RecordId {
        RecordId::try_from(s).expect("valid id")
    }

    #[test]
    fn finds_grades_and_forgets_records() {
        let p = Pseudonymiser::from_secret_bytes(&[1; 32], KeyEpoch(1));
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
        assert!(index.remove(&id("a"), &a));
        let found = index.lookup(&keys(&p, "MUELLER", "hans", "1970-05-12"));
        assert_eq!(found.len(), 1);
        assert_eq!(index.records(), 1);
        assert!(index.remove(&id("b"), &b));
        assert!(index.postings.is_empty());
        assert_eq!(index.keys(), 0);
    }

    #[test]
    fn a_digest_under_another_kind_finds_nothing() {
        let p = Pseudonymiser::from_secret_bytes(&[1; 32], KeyEpoch(1));
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
