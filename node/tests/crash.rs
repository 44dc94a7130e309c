//! Crash consistency of the store (DESIGN sections 9 and 11): a writer process is
//! killed with SIGKILL in the middle of its work, and the store it leaves behind
//! must open, hold every write it acknowledged, and hold each follow-up step
//! together with its audit entry, never one without the other.
//!
//! The writer is this test binary run again on its ignored `writer` test, with
//! `ADEP_CRASH_DIR` set. Each step it acknowledges on
//! stdout is what the node does for a decision: the follow-up and its outbox entry
//! with the `followup.decided` event, one durable write; between steps it appends
//! relaxed events, as searches and Match calls do.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use adep_node::{
    audit::{self, AuditLog},
    secret::DataKey,
    store::{self, Batch, Table},
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

/// Runs the writer until it acknowledged step `steps`, kills it, and returns the
/// last step it acknowledged.
fn run_and_kill(dir: &Path, steps: u64) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "writer",
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
        let acknowledged = run_and_kill(dir.path(), steps);
        let opened = open(&dir.path().join("store"));
        let store = opened.store.as_ref();

        let verified = audit::verify(store, &public_key)
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
