//! Crash consistency of the store (DESIGN sections 9 and 11): a writer process is
//! killed with SIGKILL in the middle of its work, and the store it leaves behind
//! must open, hold every write it acknowledged, and never half of a multi-part one.
//!
//! A writer is this test binary run again on one of its ignored tests, with
//! `ADEP_CRASH_DIR` set; it prints each acknowledged step on stdout.
//! * `writer` does what the node does for a decision: the follow-up and its
//!   outbox entry with the `followup.decided` event, one durable write; between
//!   steps it appends relaxed events, as searches and Match calls do.
//! * `importer` imports synthetic records through the node's own import code, in
//!   imports of [`IMPORT`] records, each chunk written with its `records.stored`
//!   event as the node writes it.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use adep_node::{
    domain::audit::{self, AuditLog},
    domain::index::{ImportMode, NationalIndex, Written},
    domain::pseudonymise::{KeyEpoch, oprf::NodeKey},
    secret::DataKey,
    store::{self, Batch, Table},
    tooling::synthetic,
};

const DIR: &str = "ADEP_CRASH_DIR";
const DATA_KEY: [u8; 32] = [7; 32];

fn open(dir: &Path) -> store::OpenStore {
    store::open(
        dir,
        "DE".parse().expect("cc"),
        &DataKey::from_bytes(DATA_KEY),
    )
    .expect("the store opens after the crash")
}

fn step_key(n: u64) -> Vec<u8> {
    format!("decision-{n:08}").into_bytes()
}

/// The writer process of [`a_killed_writer_leaves_every_acknowledged_step_with_its_event`].
/// It continues after the last step a killed run left.
#[test]
#[ignore = "the crash test runs it as its writer process"]
fn writer() {
    let dir = std::env::var_os(DIR).expect("ADEP_CRASH_DIR names the test directory");
    let dir = Path::new(&dir);
    let opened = open(&dir.join("store"));
    let store = opened.store.as_ref();
    let key = std::fs::read(dir.join("audit.key")).expect("audit key");
    let log = AuditLog::open(store, &key).expect("audit log");
    let first = stored_steps(store).last().copied().unwrap_or(0) + 1;
    let mut out = std::io::stdout().lock();
    for n in first.. {
        let mut batch = Batch::new();
        batch.put(Table::FollowUps, step_key(n), vec![0xAB; 600]);
        batch.put(Table::Outbox, step_key(n), vec![0xCD; 300]);
        log.apply_with(
            store,
            n as i64,
            batch,
            "followup.decided",
            &serde_json::json!({ "step": n }),
        )
        .expect("commit");
        writeln!(out, "{n}").expect("stdout");
        out.flush().expect("flush");
        for _ in 0..5 {
            log.append(
                store,
                n as i64,
                "match.received",
                &serde_json::json!({ "subjects": 1 }),
            )
            .expect("append");
        }
    }
}

/// The steps whose follow-up is stored, in order.
fn stored_steps(store: &dyn store::Store) -> BTreeSet<u64> {
    store
        .scan_prefix(Table::FollowUps, b"decision-")
        .map(|e| {
            let key = e.expect("follow-up").key;
            std::str::from_utf8(&key[b"decision-".len()..])
                .expect("utf-8")
                .parse()
                .expect("step")
        })
        .collect()
}

/// Runs the writer test `writer` until it acknowledged step `steps`, kills it,
/// and returns the last step it acknowledged.
fn run_and_kill(dir: &Path, writer: &str, steps: u64) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            writer,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acknowledged = 0;
    for line in lines.by_ref() {
        if let Ok(n) = line.expect("writer output").trim().parse::<u64>() {
            acknowledged = n;
            if n >= steps {
                break;
            }
        }
    }
    assert!(
        acknowledged >= steps,
        "the writer stopped at step {acknowledged}"
    );
    child.kill().expect("SIGKILL");
    // Steps acknowledged between the last read and the kill count too.
    for line in lines {
        if let Ok(n) = line.unwrap_or_default().trim().parse::<u64>() {
            acknowledged = acknowledged.max(n);
        }
    }
    child.wait().expect("reap");
    acknowledged
}

#[test]
fn a_killed_writer_leaves_every_acknowledged_step_with_its_event() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("audit.key"),
        audit::generate_key().expect("key"),
    )
    .expect("write key");
    let public_key = {
        let key = std::fs::read(dir.path().join("audit.key")).expect("key");
        let opened = open(&dir.path().join("store"));
        AuditLog::open(opened.store.as_ref(), &key)
            .expect("log")
            .public_key()
            .to_vec()
    };
    // Three crashes into the same store, each run continuing what the last one left.
    for steps in [15, 40, 90] {
        let acknowledged = run_and_kill(dir.path(), "writer", steps);
        let opened = open(&dir.path().join("store"));
        let store = opened.store.as_ref();

        let verified = audit::verify(store, &public_key, &[])
            .expect("read the log")
            .unwrap_or_else(|broken| panic!("the log breaks after a crash: {broken}"));
        let mut decided = BTreeSet::new();
        for entry in AuditLog::export(store, i64::MIN, i64::MAX) {
            let entry = entry.expect("entry");
            if entry.kind == "followup.decided" {
                let fields: serde_json::Value =
                    serde_json::from_str(&entry.fields).expect("fields");
                decided.insert(fields["step"].as_u64().expect("step"));
            }
        }
        let stored = stored_steps(store);
        let outbox = store.scan_prefix(Table::Outbox, b"decision-").count();

        // Atomic: each step and its event, both or neither.
        assert_eq!(stored, decided, "steps and their events differ");
        assert_eq!(
            outbox,
            stored.len(),
            "steps and their outbox entries differ"
        );
        // Durable: every acknowledged step survived.
        assert!(
            stored.range(1..=acknowledged).count() as u64 == acknowledged,
            "{} of {acknowledged} acknowledged steps survived",
            stored.range(1..=acknowledged).count()
        );
        assert!(verified.entries >= acknowledged);
        // A step written but not yet acknowledged when the writer died may be kept
        // (whole), never more than that one.
        assert!(stored.len() as u64 <= acknowledged + 1, "{stored:?}");
    }
}

/// Records per import of the `importer` (one atomic chunk of the import code).
const IMPORT: u64 = 700;
const SEED: u64 = 11;

fn index(opened: &store::OpenStore) -> NationalIndex {
    NationalIndex::load(
        opened.store.clone(),
        NodeKey::derive(&[5; 32], KeyEpoch(1)).expect("a key"),
        &mut |_| {},
    )
    .expect("the index loads after the crash")
}

/// The importer process of
/// [`a_killed_import_leaves_every_acknowledged_record_and_no_half_import`]. It
/// continues after the records a killed run left.
#[test]
#[ignore = "the crash test runs it as its writer process"]
fn importer() {
    let dir = std::env::var_os(DIR).expect("ADEP_CRASH_DIR names the test directory");
    let dir = Path::new(&dir);
    let opened = open(&dir.join("store"));
    let key = std::fs::read(dir.join("audit.key")).expect("audit key");
    let log = AuditLog::open(opened.store.as_ref(), &key).expect("audit log");
    let store = opened.store.clone();
    let commit = |batch: Batch, written: Written| {
        let Written::Stored { added, updated } = written else {
            unreachable!("an import of new records erases nothing")
        };
        log.apply_with(
            store.as_ref(),
            0,
            batch,
            "records.stored",
            &serde_json::json!({ "added": added, "updated": updated }),
        )
        .map(|_| ())
    };
    let index = index(&opened);
    let mut next = index.counts().records as u64;
    let mut out = std::io::stdout().lock();
    loop {
        let records = (next..next + IMPORT)
            .map(|i| synthetic::record(SEED, i))
            .collect();
        index
            .import(records, ImportMode::Import, &mut |_| {}, &commit)
            .expect("import");
        next += IMPORT;
        writeln!(out, "{next}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn a_killed_import_leaves_every_acknowledged_record_attributed_and_no_half_import() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("audit.key"),
        audit::generate_key().expect("key"),
    )
    .expect("write key");
    for records in [IMPORT, 4 * IMPORT, 9 * IMPORT] {
        let acknowledged = run_and_kill(dir.path(), "importer", records);
        let opened = open(&dir.path().join("store"));
        let index = index(&opened);
        let stored = opened.store.scan_prefix(Table::Records, b"").count() as u64;
        // Attributed: every stored record counted by a `records.stored` event.
        let attributed: u64 = AuditLog::export(opened.store.as_ref(), i64::MIN, i64::MAX)
            .map(|e| e.expect("entry"))
            .filter(|e| e.kind == "records.stored")
            .map(|e| {
                let fields: serde_json::Value = serde_json::from_str(&e.fields).expect("fields");
                fields["added"].as_u64().expect("added")
            })
            .sum();
        assert_eq!(
            attributed, stored,
            "records stored without their import event"
        );
        assert_eq!(index.counts().records as u64, stored);
        assert_eq!(stored % IMPORT, 0, "{stored} records: half an import kept");
        assert!(
            stored == acknowledged || stored == acknowledged + IMPORT,
            "{stored} records stored, {acknowledged} acknowledged"
        );
        // Every acknowledged record is there, whole.
        for i in [0, acknowledged / 2, acknowledged - 1] {
            let expected = synthetic::record(SEED, i);
            assert_eq!(
                index.record(&expected.id).expect("read").as_ref(),
                Some(&expected),
                "record {i}"
            );
        }
    }
}
