//! Criterion benchmarks of the matching hot paths, each next to its baseline:
//! one OPRF evaluation beside keying a record under a node's key (scheme v2), and an
//! index lookup beside a hash map probe. The whole-system figures (import, rebuild, Match over mTLS, search latency,
//! memory) come from `adep bench`; see docs/benchmarks.md.
//!
//! Run: `cargo bench -p adep-node --bench matching`.

use std::hint::black_box;

use adep_node::{
    domain::matching::Index,
    domain::pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Side, oprf::NodeKey},
    tooling::synthetic,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn keying(c: &mut Criterion) {
    let p = NodeKey::derive(&[9; 32], KeyEpoch(1)).expect("a key");
    let records = synthetic::records(1, 1_000);
    let mut group = c.benchmark_group("keying");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: one OPRF evaluation of 40 bytes", |b| {
        b.iter(|| p.digest_text(black_box(&[7u8; 40])))
    });
    let mut i = 0;
    group.bench_function("normalise, derive and key one record (OPRF)", |b| {
        b.iter(|| {
            i = (i + 1) % records.len();
            p.hash_identity(black_box(&records[i].identity), Side::Record)
        })
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    // Which keys coincide does not depend on the PRF: the fast one builds the index.
    let p = HmacKey::from_secret_bytes(&[9; 32], KeyEpoch(1));
    let records = synthetic::records(2, 100_000);
    let mut index = Index::new();
    for r in &records {
        index.insert(r.id.clone(), &p.hash_identity(&r.identity, Side::Record));
    }
    index.compact();
    let queries: Vec<_> = records
        .iter()
        .take(1_000)
        .map(|r| p.hash_identity(&r.identity, Side::Query))
        .collect();
    let map: std::collections::HashMap<u64, u32> =
        (0..3_000_000u64).map(|k| (k * 7919, k as u32)).collect();
    let mut group = c.benchmark_group("lookup in 100k records");
    group.throughput(Throughput::Elements(1));
    let mut k = 0u64;
    group.bench_function("baseline: one HashMap<u64, u32> probe", |b| {
        b.iter(|| {
            k = (k + 104_729) % 3_000_000;
            map.get(&black_box(k * 7919)).copied()
        })
    });
    let mut i = 0;
    group.bench_function("one subject (about 32 keys), graded", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.lookup(black_box(&queries[i]))
        })
    });
    group.finish();
}

criterion_group!(benches, keying, lookup);
criterion_main!(benches);
