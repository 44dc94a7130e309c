//! The audit log (DESIGN section 8): every step of the exchange recorded on the node
//! where it happens, append-only, hash-chained, each entry's hash signed with the
//! node's own Ed25519 key, so that altering, removing or reordering an entry is
//! detected by [`verify`].
//!
//! An entry holds a kind (`search.sent`, `followup.decided`, ...) and fields: request
//! ids, countries, user ids, counts and outcomes. Never an identity or a digest.
//!
//! Chain: `hash(n) = SHA-256("adep audit v1" ‖ hash(n-1) ‖ seq ‖ time ‖ kind ‖ fields)`,
//! with lengths before the variable parts; the first entry chains to 32 zero bytes.
//! Pruning old entries keeps the chain verifiable: each pruning stores a signed
//! [`Checkpoint`] of the last entry it removed (the log's *base*), and verification
//! starts there, so entries removed from the start beyond it are named.
//!
//! Removing the newest entries leaves a log that chains; only a witness outside the
//! store can tell. The node signs checkpoints of its head (position and hash): the
//! auditor's export ends with one, and every Match, filing and decision this node
//! sends carries one, which the receiving peer records in its own log. [`verify`]
//! checks a log against such checkpoints and names the cut.

use std::sync::Mutex;

use ring::{
    digest,
    signature::{self, Ed25519KeyPair, KeyPair as _},
};
use serde::{Deserialize, Serialize};

use crate::store::{Batch, Store, StoreError, Table};

mod verify;
pub use verify::verify;

const DOMAIN: &[u8] = b"adep audit v1";
const CHECKPOINT_DOMAIN: &[u8] = b"adep audit checkpoint v1";
/// The base of a pruned log is signed under its own domain, so that a head checkpoint
/// (kept in an export, sent to peers) can never stand in for it.
const BASE_DOMAIN: &[u8] = b"adep audit base v1";
/// Where the base of a pruned log is kept (metadata table).
const META_BASE: &[u8] = b"audit_base";
/// Where [`AuditLog::sync`] writes the position it made durable.
const META_SYNCED: &[u8] = b"audit_synced";

/// A signed statement by a node that its log held entry `seq` with hash `hash` at
/// `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The entry's position.
    pub seq: u64,
    /// The entry's hash.
    pub hash: [u8; 32],
    /// Seconds since the Unix epoch, when signed.
    pub time: i64,
    /// Ed25519 signature of the three above by the node's audit key.
    pub signature: Vec<u8>,
}

fn checkpoint_message(domain: &[u8], seq: u64, hash: &[u8; 32], time: i64) -> Vec<u8> {
    let mut m = domain.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&time.to_be_bytes());
    m
}

impl Checkpoint {
    /// Whether the node whose audit key is `public_key` signed it.
    pub fn signed_by(&self, public_key: &[u8]) -> bool {
        self.signed_as(CHECKPOINT_DOMAIN, public_key)
    }

    fn signed_as(&self, domain: &[u8], public_key: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(
                &checkpoint_message(domain, self.seq, &self.hash, self.time),
                &self.signature,
            )
            .is_ok()
    }

    /// The checkpoint as an audit event's fields record it (a peer's head).
    pub fn fields(&self) -> serde_json::Value {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        serde_json::json!({
            "seq": self.seq,
            "hash": hex(&self.hash),
            "time": self.time,
            "signature": hex(&self.signature),
        })
    }
}

/// An event a step produces, to be recorded: its kind (`followup.decided`) and its
/// fields, a JSON object of ids, countries, user ids, counts and outcomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event kind.
    pub kind: &'static str,
    /// The event's fields.
    pub fields: serde_json::Value,
}

impl Event {
    /// An event of `kind` with `fields`.
    pub fn new(kind: &'static str, fields: serde_json::Value) -> Event {
        Event { kind, fields }
    }
}

/// One audit entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The event kind, like `followup.decided`.
    pub kind: String,
    /// The event's fields, as a JSON object.
    pub fields: String,
    /// The previous entry's hash (zeros for the first).
    pub prev: [u8; 32],
    /// This entry's hash.
    pub hash: [u8; 32],
    /// Ed25519 signature of `hash` by the node's audit key.
    pub signature: Vec<u8>,
}

fn chain_hash(prev: &[u8; 32], seq: u64, time: i64, kind: &str, fields: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&time.to_be_bytes());
    ctx.update(&(kind.len() as u64).to_be_bytes());
    ctx.update(kind.as_bytes());
    ctx.update(&(fields.len() as u64).to_be_bytes());
    ctx.update(fields.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Why an audit log does not verify. Names the first bad entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// An entry cannot be read.
    #[error("entry at key {0}: cannot be decoded")]
    Unreadable(u64),
    /// An entry is stored under another position than its own.
    #[error(
        "entry {found} is stored where entry {expected} belongs (entries removed or reordered)"
    )]
    OutOfPlace {
        /// The position the chain expects.
        expected: u64,
        /// The position the entry names.
        found: u64,
    },
    /// An entry's content does not give its hash.
    #[error("entry {0}: its content does not match its hash (altered)")]
    Altered(u64),
    /// An entry does not chain to the one before it.
    #[error(
        "entry {0}: does not chain to the entry before it (an entry was removed, inserted or reordered)"
    )]
    Unchained(u64),
    /// An entry's signature does not verify under the node's audit key.
    #[error("entry {0}: its signature does not verify")]
    BadSignature(u64),
    /// Entries were removed from the start of the log, beyond what pruning removed.
    #[error(
        "entries {expected} to {} were removed from the start of the log (it starts at entry {first}; {})",
        first - 1,
        if *expected == 1 { "nothing was pruned" } else { "the last pruning kept every entry from there" }
    )]
    HeadCut {
        /// The first entry the log must start with.
        expected: u64,
        /// The first entry it starts with.
        first: u64,
    },
    /// The newest entries were removed: a checkpoint this node signed shows a later
    /// entry than the log's last.
    #[error(
        "the newest entries were removed: the log ends at entry {last}, but a checkpoint signed by this node shows entry {witnessed}"
    )]
    TailCut {
        /// The log's last entry (0: empty).
        last: u64,
        /// The latest entry a checkpoint shows.
        witnessed: u64,
    },
    /// An entry differs from what a checkpoint this node signed shows.
    #[error(
        "entry {0}: differs from a checkpoint signed by this node (the log was rewritten from there)"
    )]
    Rewritten(u64),
    /// The record of the last pruning is not signed by this node.
    #[error("the record of the last pruning is not signed by this node's audit key")]
    BadBase,
}

impl Broken {
    /// The position of the first bad entry.
    pub fn entry(&self) -> u64 {
        match self {
            Broken::Unreadable(n)
            | Broken::Altered(n)
            | Broken::Unchained(n)
            | Broken::BadSignature(n)
            | Broken::Rewritten(n) => *n,
            Broken::OutOfPlace { expected, .. } | Broken::HeadCut { expected, .. } => *expected,
            Broken::TailCut { last, .. } => last + 1,
            Broken::BadBase => 0,
        }
    }
}

/// The outcome of a verification that completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub entries: u64,
    /// The first and last positions checked (None when the log is empty).
    pub range: Option<(u64, u64)>,
    /// Checkpoints of this node the log was checked against.
    pub witnesses: u64,
    /// Checkpoints given that this node did not sign (another node's, or altered).
    pub foreign: u64,
}

/// The node's audit log.
#[derive(Debug)]
pub struct AuditLog {
    key: Ed25519KeyPair,
    /// The last entry's position and hash; appends take it in turn.
    head: Mutex<(u64, [u8; 32])>,
    /// The last entry known to be on disk (written by a durable batch, or there when
    /// the log was opened): what checkpoints vouch for, so that a crash losing the
    /// newest relaxed entries never contradicts a checkpoint already given out. Its
    /// own lock: reading it never waits for a write to the disk.
    durable: Mutex<(u64, [u8; 32])>,
    /// Verification and pruning one at a time: a pruning between reading the base
    /// and scanning the entries would look like a cut.
    maintenance: Mutex<()>,
}

/// A failure to append: the store failed.
pub type AppendError = StoreError;

impl AuditLog {
    /// Opens the log in `store`, signing with `key` (PKCS#8 Ed25519).
    pub fn open(store: &dyn Store, pkcs8: &[u8]) -> Result<AuditLog, OpenError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| OpenError::Key)?;
        let mut head = (0, [0u8; 32]);
        if let Some(last) = store.scan_prefix(Table::Audit, b"").last() {
            let last = last?;
            let entry: Entry = postcard::from_bytes(&last.value)
                .map_err(|_| StoreError::Corrupt { key: "audit" })?;
            head = (entry.seq, entry.hash);
        }
        let log = AuditLog {
            key,
            head: Mutex::new(head),
            durable: Mutex::new(head),
            maintenance: Mutex::new(()),
        };
        log.adopt_start(store)?;
        Ok(log)
    }

    /// A log pruned before pruning recorded where it starts (an earlier version): its
    /// first entry is taken as the start, once, so that it verifies.
    fn adopt_start(&self, store: &dyn Store) -> Result<(), StoreError> {
        if base(store)?.is_some() {
            return Ok(());
        }
        let Some(first) = store.scan_prefix(Table::Audit, b"").next() else {
            return Ok(());
        };
        let first: Entry = postcard::from_bytes(&first?.value)
            .map_err(|_| StoreError::Corrupt { key: "audit" })?;
        if first.seq <= 1 {
            return Ok(());
        }
        let base = self.sign_as(BASE_DOMAIN, first.seq - 1, first.prev, first.time);
        let mut batch = Batch::new();
        batch.put(
            Table::Meta,
            META_BASE,
            postcard::to_allocvec(&base).unwrap_or_default(),
        );
        store.apply(&batch)
    }

    /// A signed checkpoint of the log's head as far as it is on disk (position 0 when
    /// empty).
    pub fn checkpoint(&self, time: i64) -> Checkpoint {
        let (seq, hash) = *self.durable.lock().unwrap_or_else(|e| e.into_inner());
        self.sign_as(CHECKPOINT_DOMAIN, seq, hash, time)
    }

    fn sign_as(&self, domain: &[u8], seq: u64, hash: [u8; 32], time: i64) -> Checkpoint {
        Checkpoint {
            seq,
            hash,
            time,
            signature: self
                .key
                .sign(&checkpoint_message(domain, seq, &hash, time))
                .as_ref()
                .to_vec(),
        }
    }

    /// Makes every entry written so far durable, so that checkpoints vouch for it (the
    /// jobs loop calls it; a durable step does the same on its own).
    pub fn sync(&self, store: &dyn Store) -> Result<(), StoreError> {
        let head = *self.head.lock().unwrap_or_else(|e| e.into_inner());
        let mut durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        if *durable == head {
            return Ok(());
        }
        // One small durable write flushes every write before it.
        let mut batch = Batch::new();
        batch.put(Table::Meta, META_SYNCED, head.0.to_be_bytes());
        store.apply(&batch)?;
        *durable = head;
        Ok(())
    }

    /// Verifies the log ([`verify`]) under this node's key, never during a pruning.
    pub fn verify(
        &self,
        store: &dyn Store,
        witnesses: &[Checkpoint],
    ) -> Result<Result<Verified, Broken>, StoreError> {
        let _one_at_a_time = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        verify(store, self.public_key(), witnesses)
    }

    /// The public key that verifies this node's entries.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Appends an event (flushed to disk within half a second, or with the next
    /// durable write). `fields` is a JSON object of request ids, countries, user
    /// ids, counts and outcomes.
    pub fn append(
        &self,
        store: &dyn Store,
        time: i64,
        kind: &str,
        fields: &serde_json::Value,
    ) -> Result<u64, AppendError> {
        // Relaxed: searches and Match calls must not wait for the disk. the engine writes
        // batches in order and flushes within half a second, so a crash can lose the
        // newest entries but never leaves a gap or a broken link in the chain.
        self.apply_with(store, time, Batch::relaxed(), kind, fields)
    }

    /// Applies `batch` with the event appended to it, as one atomic write: the step
    /// and its audit entry are stored together or not at all, and are durable when
    /// this returns if `batch` is (a decision, its outbox entry and its event).
    pub fn apply_with(
        &self,
        store: &dyn Store,
        time: i64,
        mut batch: Batch,
        kind: &str,
        fields: &serde_json::Value,
    ) -> Result<u64, AppendError> {
        let fields = fields.to_string();
        let batch_synced = batch.synced();
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let seq = head.0 + 1;
        let hash = chain_hash(&head.1, seq, time, kind, &fields);
        let entry = Entry {
            seq,
            time,
            kind: kind.to_owned(),
            fields,
            prev: head.1,
            hash,
            signature: self.key.sign(&hash).as_ref().to_vec(),
        };
        batch.put(
            Table::Audit,
            key(seq).to_vec(),
            postcard::to_allocvec(&entry).unwrap_or_default(),
        );
        store.apply(&batch)?;
        *head = (seq, hash);
        if batch_synced {
            // Durable, and so is every entry before it (the engine writes in order).
            *self.durable.lock().unwrap_or_else(|e| e.into_inner()) = (seq, hash);
        }
        Ok(seq)
    }

    /// Entries with `since <= time < until`, in order.
    pub fn export(
        store: &dyn Store,
        since: i64,
        until: i64,
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        store
            .scan_prefix(Table::Audit, b"")
            .map(|e| {
                postcard::from_bytes::<Entry>(&e?.value)
                    .map_err(|_| StoreError::Corrupt { key: "audit" })
            })
            .filter(move |e| {
                e.as_ref()
                    .map_or(true, |e| e.time >= since && e.time < until)
            })
    }

    /// Deletes entries older than `before`, oldest first in batches of [`PRUNE_BATCH`],
    /// keeping the newest. Each batch is one write with its [`PRUNED`] entry and the
    /// signed base: what remains verifies (also after a crash between batches), a
    /// removal beyond the base is named, and nothing is deleted unrecorded. Each
    /// [`PRUNED`] entry is stamped with `now()` as its batch is written.
    pub fn prune(
        &self,
        store: &dyn Store,
        before: i64,
        now: &dyn Fn() -> i64,
    ) -> Result<u64, AppendError> {
        let _one_at_a_time = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        let mut pruned = 0;
        let mut batch = Batch::new();
        let mut entries = store.scan_prefix(Table::Audit, b"").peekable();
        let mut last: Option<Entry> = None;
        // One write: the deletions, the signed base (the last entry removed), the event.
        let flush = |batch: &mut Batch, last: &Entry| {
            let base = self.sign_as(BASE_DOMAIN, last.seq, last.hash, last.time);
            let entries = batch.ops().len();
            batch.put(
                Table::Meta,
                META_BASE,
                postcard::to_allocvec(&base).unwrap_or_default(),
            );
            let fields = serde_json::json!({ "entries": entries, "before": before });
            let batch = std::mem::take(batch);
            self.apply_with(store, now(), batch, PRUNED, &fields)?;
            Ok::<_, AppendError>(entries as u64)
        };
        while let Some(e) = entries.next() {
            let e = e?;
            if entries.peek().is_none() {
                break;
            }
            let entry: Entry =
                postcard::from_bytes(&e.value).map_err(|_| StoreError::Corrupt { key: "audit" })?;
            if entry.time >= before {
                break;
            }
            batch.delete(Table::Audit, e.key);
            last = Some(entry);
            if let Some(l) = last.as_ref().filter(|_| batch.ops().len() == PRUNE_BATCH) {
                pruned += flush(&mut batch, l)?;
            }
        }
        if let Some(l) = last.as_ref().filter(|_| !batch.is_empty()) {
            pruned += flush(&mut batch, l)?;
        }
        Ok(pruned)
    }
}

/// The event each pruning batch records, in the same write as its deletions.
pub const PRUNED: &str = "audit.pruned";

/// Entries deleted per atomic batch when pruning.
pub const PRUNE_BATCH: usize = 10_000;

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The key is not a PKCS#8 Ed25519 key.
    #[error("the audit signing key is not a PKCS#8 Ed25519 key")]
    Key,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The base a pruned log starts from, if it was ever pruned.
fn base(store: &dyn Store) -> Result<Option<Checkpoint>, StoreError> {
    store
        .get(Table::Meta, META_BASE)?
        .map(|v| postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt { key: "audit_base" }))
        .transpose()
}

/// A fresh PKCS#8 Ed25519 key for a node's audit log.
pub fn generate_key() -> Result<Vec<u8>, ring::error::Unspecified> {
    let rng = ring::rand::SystemRandom::new();
    Ok(Ed25519KeyPair::generate_pkcs8(&rng)?.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn setup() -> (tempfile::TempDir, crate::store::OpenStore, AuditLog) {
        let dir = tempfile::tempdir().expect("tmp");
        let opened = crate::store::open(
            dir.path(),
            "DE".parse().expect("cc"),
            &crate::secret::DataKey::from_bytes([1; 32]),
        )
        .expect("store");
        let log =
            AuditLog::open(opened.store.as_ref(), &generate_key().expect("key")).expect("open");
        for (i, kind) in ["search.sent", "match.received", "followup.filed"]
            .iter()
            .enumerate()
        {
            log.append(
                opened.store.as_ref(),
                100 * (i as i64 + 1),
                kind,
                &json!({"n": i}),
            )
            .expect("append");
        }
        (dir, opened, log)
    }

    fn stored(store: &dyn Store, seq: u64) -> Entry {
        postcard::from_bytes(
            &store
                .get(Table::Audit, &key(seq))
                .expect("get")
                .expect("some"),
        )
        .expect("decode")
    }

    fn put(store: &dyn Store, at: u64, entry: &Entry) {
        let mut b = Batch::new();
        b.put(
            Table::Audit,
            key(at).to_vec(),
            postcard::to_allocvec(entry).expect("enc"),
        );
        store.apply(&b).expect("put");
    }

    /// A store whose writes fail, as a full disk would.
    #[derive(Debug)]
    struct Failing<'a>(&'a dyn Store);

    impl Store for Failing<'_> {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(table, key)
        }
        fn scan_prefix(&self, table: Table, prefix: &[u8]) -> crate::store::Scan<'_> {
            self.0.scan_prefix(table, prefix)
        }
        fn scan_range(
            &self,
            table: Table,
            start: &[u8],
            end: Option<&[u8]>,
        ) -> crate::store::Scan<'_> {
            self.0.scan_range(table, start, end)
        }
        fn apply(&self, _: &Batch) -> Result<(), StoreError> {
            Err(StoreError::Engine("no space left on device".into()))
        }
        fn engine(&self) -> &'static str {
            "failing"
        }
    }

    #[test]
    fn a_step_and_its_event_are_written_together_or_not_at_all() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let step = |id: &str| {
            let mut b = Batch::new();
            b.put(
                Table::FollowUps,
                id.as_bytes().to_vec(),
                b"decided".to_vec(),
            );
            b
        };
        let fields = json!({"followup": "a"});
        let failed = log.apply_with(&Failing(store), 400, step("a"), "followup.decided", &fields);
        assert!(failed.is_err());
        assert_eq!(store.get(Table::FollowUps, b"a").expect("get"), None);
        assert_eq!(store.get(Table::Audit, &key(4)).expect("get"), None);

        // The failed write left no gap: the next event takes position 4.
        let seq = log
            .apply_with(store, 400, step("a"), "followup.decided", &fields)
            .expect("apply");
        assert_eq!(seq, 4);
        assert!(store.get(Table::FollowUps, b"a").expect("get").is_some());
        assert_eq!(stored(store, 4).kind, "followup.decided");
        let ok = verify(store, log.public_key(), &[])
            .expect("store")
            .expect("verifies");
        assert_eq!(ok.entries, 4);
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let ok = verify(store, log.public_key(), &[])
            .expect("store")
            .expect("verifies");
        assert_eq!(ok.entries, 3);
        assert_eq!(ok.range, Some((1, 3)));
    }

    #[test]
    fn altering_an_entry_is_detected() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let mut e = stored(store, 2);
        e.fields = json!({"n": 7}).to_string();
        put(store, 2, &e);
        assert_eq!(
            verify(store, log.public_key(), &[]).expect("store"),
            Err(Broken::Altered(2))
        );
    }

    #[test]
    fn removing_an_entry_is_detected() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let mut b = Batch::new();
        b.delete(Table::Audit, key(2).to_vec());
        store.apply(&b).expect("delete");
        assert_eq!(
            verify(store, log.public_key(), &[]).expect("store"),
            Err(Broken::Unchained(3))
        );
    }

    #[test]
    fn reordering_entries_is_detected() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let (two, three) = (stored(store, 2), stored(store, 3));
        put(store, 2, &three);
        put(store, 3, &two);
        assert_eq!(
            verify(store, log.public_key(), &[]).expect("store"),
            Err(Broken::OutOfPlace {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn a_forged_signature_or_a_rebuilt_chain_is_detected() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        // Rewrite entry 3 with a correct hash but without the node's key.
        let mut e = stored(store, 3);
        e.fields = json!({"n": 9}).to_string();
        e.hash = chain_hash(&e.prev, e.seq, e.time, &e.kind, &e.fields);
        put(store, 3, &e);
        assert_eq!(
            verify(store, log.public_key(), &[]).expect("store"),
            Err(Broken::BadSignature(3))
        );
    }

    #[test]
    fn pruning_keeps_a_verifiable_log() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        assert_eq!(log.prune(store, 250, &|| 300).expect("prune"), 2);
        let ok = verify(store, log.public_key(), &[])
            .expect("store")
            .expect("verifies");
        // The deletions and their own entry, 4, are one write.
        assert_eq!(ok.range, Some((3, 4)));
        assert_eq!(stored(store, 4).kind, PRUNED);
        assert_eq!(
            stored(store, 4).fields,
            json!({"entries": 2, "before": 250}).to_string()
        );
        // The newest entry is always kept, so the chain goes on from it.
        assert_eq!(log.prune(store, 10_000, &|| 10_000).expect("prune"), 1);
        log.append(store, 10_001, "followup.decided", &json!({}))
            .expect("append");
        let ok = verify(store, log.public_key(), &[])
            .expect("store")
            .expect("verifies");
        assert_eq!(ok.range, Some((4, 6)));
    }

    #[test]
    fn a_cut_tail_is_named_against_a_checkpoint() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        // The auditor took an export: it ends with the head, entry 3, once on disk.
        assert_eq!(
            log.checkpoint(350).seq,
            0,
            "relaxed entries are not vouched for yet"
        );
        log.sync(store).expect("sync");
        let head = log.checkpoint(350);
        assert_eq!(head.seq, 3);
        let ok = verify(store, log.public_key(), std::slice::from_ref(&head))
            .expect("store")
            .expect("verifies against its own head");
        assert_eq!((ok.witnesses, ok.foreign), (1, 0));
        // Someone removes the newest entry: the rest still chains.
        let mut b = Batch::new();
        b.delete(Table::Audit, key(3).to_vec());
        store.apply(&b).expect("delete");
        assert!(verify(store, log.public_key(), &[]).expect("store").is_ok());
        let cut = verify(store, log.public_key(), std::slice::from_ref(&head)).expect("store");
        assert_eq!(
            cut,
            Err(Broken::TailCut {
                last: 2,
                witnessed: 3
            })
        );
        assert!(
            cut.expect_err("cut")
                .to_string()
                .contains("newest entries were removed")
        );
        // Another node's checkpoint, or an altered one, is left out.
        let other = AuditLog::open(store, &generate_key().expect("key")).expect("open");
        let mut forged = head.clone();
        forged.seq = 99;
        let ok = verify(store, log.public_key(), &[other.checkpoint(1), forged]);
        assert_eq!(ok.expect("store").map(|v| v.foreign), Ok(2));
    }

    #[test]
    fn a_log_rewritten_after_a_checkpoint_is_named() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        log.sync(store).expect("sync");
        let head = log.checkpoint(350);
        // An insider holding the audit key rewrites the newest entry and signs it
        // again: the log alone still verifies, the checkpoint a peer holds does not.
        let mut e = stored(store, 3);
        e.fields = json!({"n": 9}).to_string();
        e.hash = chain_hash(&e.prev, e.seq, e.time, &e.kind, &e.fields);
        e.signature = log.key.sign(&e.hash).as_ref().to_vec();
        put(store, 3, &e);
        assert!(verify(store, log.public_key(), &[]).expect("store").is_ok());
        assert_eq!(
            verify(store, log.public_key(), std::slice::from_ref(&head)).expect("store"),
            Err(Broken::Rewritten(3))
        );
    }

    #[test]
    fn entries_removed_before_the_last_pruning_are_named() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        for i in 0..3 {
            log.append(store, 400 + i, "search.sent", &json!({}))
                .expect("append");
        }
        // Pruning removes entries 1 and 2 and records where the log now starts.
        assert_eq!(log.prune(store, 250, &|| 300).expect("prune"), 2);
        assert!(verify(store, log.public_key(), &[]).expect("store").is_ok());
        // Someone removes entries 3 and 4 as well: the log still chains from 5.
        let mut b = Batch::new();
        b.delete(Table::Audit, key(3).to_vec());
        b.delete(Table::Audit, key(4).to_vec());
        store.apply(&b).expect("delete");
        let cut = verify(store, log.public_key(), &[]).expect("store");
        assert_eq!(
            cut,
            Err(Broken::HeadCut {
                expected: 3,
                first: 5
            })
        );
        assert!(
            cut.expect_err("cut")
                .to_string()
                .contains("entries 3 to 4 were removed from the start of the log")
        );
    }

    #[test]
    fn entries_removed_from_the_start_of_a_never_pruned_log_are_named() {
        let (_dir, opened, log) = setup();
        let store = opened.store.as_ref();
        let mut b = Batch::new();
        b.delete(Table::Audit, key(1).to_vec());
        store.apply(&b).expect("delete");
        assert_eq!(
            verify(store, log.public_key(), &[]).expect("store"),
            Err(Broken::HeadCut {
                expected: 1,
                first: 2
            })
        );
    }
}
