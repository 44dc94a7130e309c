//! Offline test matching (`adep match-test`): the node's own normalise, derive and
//! lookup code run over two files, keyed with a fast PRF under a throwaway secret (which
//! keys coincide does not depend on the PRF), and an evaluation against a truth file.

use std::{collections::HashMap, io::Read};

use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{
    domain::identity::{Record, RecordId},
    domain::matching::Index,
    domain::pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Quality, Side},
};

/// One returned (query, record) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The query's record id.
    pub query: RecordId,
    /// The matched record.
    pub record: RecordId,
    /// The hit's quality.
    pub quality: Quality,
}

/// The outcome of [`match_records`].
#[derive(Debug, Default)]
pub struct MatchRun {
    /// Returned pairs, in query order, best quality first within a query.
    pub pairs: Vec<Pair>,
    /// Keys in the index.
    pub index_keys: usize,
}

/// Matches every query against an index of `records`, under a fresh random secret.
pub fn match_records(records: &[Record], queries: &[Record]) -> MatchRun {
    let mut secret = [0u8; 32];
    // A failing system RNG would make every secret predictable; refuse to go on.
    if SystemRandom::new().fill(&mut secret).is_err() {
        return MatchRun::default();
    }
    let p = HmacKey::from_secret_bytes(&secret, KeyEpoch(1));
    let mut index = Index::new();
    for record in records {
        index.insert(
            record.id.clone(),
            &p.hash_identity(&record.identity, Side::Record),
        );
    }
    let mut pairs = Vec::new();
    for query in queries {
        for found in index.lookup(&p.hash_identity(&query.identity, Side::Query)) {
            pairs.push(Pair {
                query: query.id.clone(),
                record: found.record,
                quality: found.quality,
            });
        }
    }
    MatchRun {
        pairs,
        index_keys: index.keys(),
    }
}

/// The expected record of each query; `None` when a query must get no hit.
#[derive(Debug, Default)]
pub struct Truth(HashMap<RecordId, Option<RecordId>>);

/// A truth file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    /// The file is not `query_id,record_id` CSV.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        problem: String,
    },
}

impl Truth {
    /// Reads `query_id,record_id` CSV with a header row.
    pub fn read(input: impl Read) -> Result<Truth, TruthError> {
        let mut reader = csv::ReaderBuilder::new().from_reader(input);
        let bad = |line: u64, problem: &str| TruthError::Line {
            line,
            problem: problem.to_owned(),
        };
        let header = reader
            .headers()
            .map_err(|_| bad(1, "cannot read the header"))?;
        if header.iter().collect::<Vec<_>>() != ["query_id", "record_id"] {
            return Err(bad(1, "the header must be query_id,record_id"));
        }
        let mut truth = HashMap::new();
        for row in reader.records() {
            let row = row.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                bad(line, "is not query_id,record_id")
            })?;
            let line = row.position().map_or(0, csv::Position::line);
            let query =
                RecordId::try_from(&row[0]).map_err(|p| bad(line, &format!("query_id {p}")))?;
            let record = match row[1].trim() {
                "" => None,
                r => Some(RecordId::try_from(r).map_err(|p| bad(line, &format!("record_id {p}")))?),
            };
            if truth.insert(query, record).is_some() {
                return Err(bad(line, "repeats a query_id"));
            }
        }
        Ok(Truth(truth))
    }
}

/// Recall and precision of the hits at or above one quality.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// The lowest quality counted.
    pub floor: Quality,
    /// Pairs returned at or above `floor`.
    pub pairs: usize,
    /// Of those, pairs that are true.
    pub true_pairs: usize,
    /// Queries with a true record.
    pub queries_with_truth: usize,
    /// Queries whose true record is among their hits at or above `floor`.
    pub queries_found: usize,
}

impl Level {
    /// Share of queries with a true record that found it.
    pub fn recall(&self) -> f64 {
        ratio(self.queries_found, self.queries_with_truth)
    }

    /// Share of returned pairs that are true.
    pub fn precision(&self) -> f64 {
        ratio(self.true_pairs, self.pairs)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Recall and precision cumulatively: exact; exact and strong; all.
pub fn evaluate(pairs: &[Pair], truth: &Truth) -> Vec<Level> {
    let queries_with_truth = truth.0.values().filter(|r| r.is_some()).count();
    [Quality::Exact, Quality::Strong, Quality::Weak]
        .into_iter()
        .map(|floor| {
            let counted = pairs.iter().filter(|p| p.quality >= floor);
            let mut level = Level {
                floor,
                pairs: 0,
                true_pairs: 0,
                queries_with_truth,
                queries_found: 0,
            };
            for pair in counted {
                level.pairs += 1;
                if truth.0.get(&pair.query) == Some(&Some(pair.record.clone())) {
                    level.true_pairs += 1;
                    // A query has one true record and a record appears once per query.
                    level.queries_found += 1;
                }
            }
            level
        })
        .collect()
}
