//! Bulk loading: entries gathered in a [`Run`], grouped by partition, and counted into
//! a frozen table one partition per core.

use super::*;

/// Top bits of an entry's bucket that choose its partition when a [`Run`] is counted
/// into a table.
pub(super) const PART_BITS: u32 = 8;
pub(super) const PARTS: usize = 1 << PART_BITS;
/// Buckets per partition.
pub(super) const PART_BUCKETS: usize = BUCKETS >> PART_BITS;
/// Entries appended to a run before they are grouped by partition.
pub(super) const BLOCK_ENTRIES: usize = 1 << 16;

pub(super) fn partition(position: u64) -> usize {
    (position >> (32 + BUCKET_BITS - PART_BITS)) as usize
}

/// Entries waiting to be absorbed into an index: (bucket and fingerprint, ordinal).
///
/// The entries are kept in two flat arrays (which grow and shrink in place) and
/// grouped by partition in blocks of [`BLOCK_ENTRIES`], so that counting them into a
/// table reads each partition's entries from every block and writes one range of the
/// table small enough to stay in cache; the partitions are done on every core.
#[derive(Debug, Default)]
pub struct Run {
    pub(super) positions: Vec<u64>,
    pub(super) ordinals: Vec<u32>,
    /// For each grouped block, the start of each partition in it, and its end.
    pub(super) blocks: Vec<[usize; PARTS + 1]>,
    /// Entries before this index are grouped.
    pub(super) grouped: usize,
}

impl Run {
    /// An empty run.
    pub fn new() -> Run {
        Run::default()
    }

    /// Entries in the run.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the run is empty.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub(super) fn push(&mut self, position: u64, ordinal: u32) {
        self.positions.push(position);
        self.ordinals.push(ordinal);
        if self.positions.len() - self.grouped >= BLOCK_ENTRIES {
            self.group();
        }
    }

    /// Groups the entries appended since the last call by partition (a counting sort
    /// of one block through a scratch copy).
    pub(super) fn group(&mut self) {
        let start = self.grouped;
        let end = self.positions.len();
        if start == end {
            return;
        }
        let mut bounds = [0usize; PARTS + 1];
        for &p in &self.positions[start..end] {
            bounds[partition(p) + 1] += 1;
        }
        bounds[0] = start;
        for i in 0..PARTS {
            bounds[i + 1] += bounds[i];
        }
        let positions = self.positions[start..end].to_vec();
        let ordinals = self.ordinals[start..end].to_vec();
        let mut next = bounds;
        for (p, o) in positions.into_iter().zip(ordinals) {
            let at = &mut next[partition(p)];
            self.positions[*at] = p;
            self.ordinals[*at] = o;
            *at += 1;
        }
        self.blocks.push(bounds);
        self.grouped = end;
    }

    /// All entries, in no particular order.
    pub(super) fn into_entries(self) -> impl Iterator<Item = (u64, u32)> {
        self.positions.into_iter().zip(self.ordinals)
    }

    /// The entries of one partition, block by block.
    pub(super) fn part(&self, part: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.blocks.iter().flat_map(move |bounds| {
            let (start, end) = (bounds[part], bounds[part + 1]);
            self.positions[start..end]
                .iter()
                .copied()
                .zip(self.ordinals[start..end].iter().copied())
        })
    }
}

/// One partition of a [`Run`] and the part of the table it fills (see
/// [`Index::counted`]).
pub(super) struct PartJob<'t> {
    pub(super) part: usize,
    /// Where the partition starts in the table.
    pub(super) base: u32,
    pub(super) fingerprints: &'t mut [u32],
    pub(super) ordinals: &'t mut [u32],
    /// The partition's bucket offsets.
    pub(super) offsets: &'t mut [u32],
}

impl PartJob<'_> {
    pub(super) fn fill(self, run: &Run, live: impl Fn(u32) -> bool) {
        let PartJob {
            part,
            base,
            fingerprints: fps,
            ordinals: ords,
            offsets,
        } = self;
        let local = |p: u64| (p >> 32) as usize & (PART_BUCKETS - 1);
        let mut next = vec![0u32; PART_BUCKETS + 1];
        for (p, o) in run.part(part) {
            if live(o) {
                next[local(p) + 1] += 1;
            }
        }
        for b in 0..PART_BUCKETS {
            next[b + 1] += next[b];
            offsets[b] = base + next[b];
        }
        let starts: Vec<u32> = next[..PART_BUCKETS].to_vec();
        for (p, o) in run.part(part) {
            if live(o) {
                let at = &mut next[local(p)];
                fps[*at as usize] = p as u32;
                ords[*at as usize] = o;
                *at += 1;
            }
        }
        for (b, &start) in starts.iter().enumerate() {
            let (start, end) = (start as usize, next[b] as usize);
            for i in start + 1..end {
                let mut j = i;
                while j > start && (fps[j - 1], ords[j - 1]) > (fps[j], ords[j]) {
                    fps.swap(j - 1, j);
                    ords.swap(j - 1, j);
                    j -= 1;
                }
            }
        }
    }
}

/// A merged frozen table, ready to install (see [`Index::merged`]).
#[derive(Debug)]
pub struct MergedTable(pub(super) Frozen);

/// Entries per run before a bulk load absorbs it (64 MiB of run).
pub const RUN_ENTRIES: usize = 4 << 20;
