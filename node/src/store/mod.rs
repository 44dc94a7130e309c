//! Durable storage behind a narrow trait.
//!
//! The rest of the node sees named [`Table`]s, point reads, ordered scans and one atomic
//! [`Batch`] across tables; only [`sled_engine`] names the database crate (DESIGN
//! section 11: the engine is replaceable and crash-consistency tests decide the default).
//!
//! [`open`] also owns the rules every engine shares: one node process per data
//! directory (an advisory lock), a schema version that refuses newer stores, a data
//! directory bound to the country that created it, and encryption at rest under the
//! node's data key ([`sealed`]), checked before anything else is read.

pub mod memory;
mod sealed;
mod sled_engine;

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{domain::principals::Country, secret::DataKey};

/// The schema version this build writes and reads. Version 2 seals values at rest;
/// version 1 stores (development builds before encryption) are refused.
pub const SCHEMA_VERSION: u32 = 2;

/// Bytes encryption adds to each stored value.
pub const SEALED_OVERHEAD: usize = sealed::OVERHEAD;

/// A named table. Keys are ordered bytewise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store metadata: schema version, owner country, creation time, start count.
    Meta,
    /// National records by record id (payloads encrypted).
    Records,
    /// Hit references issued to peers: reference to record, requesting country, expiry.
    HitRefs,
    /// Follow-up requests, incoming and outgoing.
    FollowUps,
    /// Decisions waiting for the requesting node to acknowledge them.
    Outbox,
    /// Hits this node's officers received in searches.
    ReceivedHits,
    /// The audit log, by position.
    Audit,
    /// Each record's keyed digests per key epoch (epoch, big-endian, then record id), so
    /// a restart loads them instead of evaluating the PRF again.
    Digests,
    /// Follow-up filings sent to their owner whose answer has not arrived, by hit
    /// reference: a retry asks the owner about them before filing anew.
    UnansweredFilings,
    /// The follow-ups that hold their hit (see `State::holds_its_hit`), by direction,
    /// country and hit reference or record: keys only, so that one request per hit is
    /// checked without reading every follow-up.
    FollowUpHolds,
}

impl Table {
    /// Every table, so an engine can open them all up front.
    pub const ALL: [Table; 10] = [
        Table::Meta,
        Table::Records,
        Table::HitRefs,
        Table::FollowUps,
        Table::Outbox,
        Table::ReceivedHits,
        Table::Audit,
        Table::Digests,
        Table::UnansweredFilings,
        Table::FollowUpHolds,
    ];

    /// The table's name inside the engine. Never change a published name.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Records => "records",
            Table::HitRefs => "hit_refs",
            Table::FollowUps => "follow_ups",
            Table::Outbox => "outbox",
            Table::ReceivedHits => "received_hits",
            Table::Audit => "audit",
            Table::Digests => "digests",
            Table::UnansweredFilings => "unanswered_filings",
            Table::FollowUpHolds => "follow_up_holds",
        }
    }
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Target table.
        table: Table,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// Target table.
        table: Table,
        /// Key.
        key: Vec<u8>,
    },
}

/// Writes applied together: all of them or none, durable once `apply` returns (unless
/// made with [`Batch::relaxed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    synced: bool,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    /// An empty batch, durable once applied.
    pub fn new() -> Batch {
        Batch {
            ops: Vec::new(),
            synced: true,
        }
    }

    /// An empty batch that is atomic but durable only after the engine's next periodic
    /// flush (at most a second later): for data whose loss in a crash is harmless and
    /// that is written on a hot path, such as hit references (a lost one resolves as
    /// unknown and the officer searches again).
    pub fn relaxed() -> Batch {
        Batch {
            ops: Vec::new(),
            synced: false,
        }
    }

    /// Whether `apply` waits for the batch to reach the disk.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Adds a put.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered key/value pair from a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A lazy ordered scan.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send + 'a>;

/// The storage trait: what the node needs from an embedded database, nothing more.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Scan<'_>;

    /// Every entry with `start <= key < end` (`end` `None`: to the end), in key order.
    fn scan_range(&self, table: Table, start: &[u8], end: Option<&[u8]>) -> Scan<'_>;

    /// Applies every write of `batch` atomically. When it returns `Ok` the batch is
    /// durable: a crash after that point loses none of it.
    fn apply(&self, batch: &Batch) -> Result<(), StoreError>;

    /// The engine's name, for status and metrics.
    fn engine(&self) -> &'static str;
}

/// A storage failure, naming the data directory or what was found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created, read or locked.
    #[error("data directory {path}: {message}")]
    Directory {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another adep-node process{holder}; stop it first or use another data_dir"
    )]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// `" (pid N)"` when the lock file names it.
        holder: String,
    },
    /// The store was written by a newer adep-node.
    #[error(
        "data directory {path} has store schema version {found}, newer than this adep-node supports ({supported}); upgrade adep-node"
    )]
    NewerSchema {
        /// The data directory.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The store predates this build's format.
    #[error(
        "data directory {path} has store schema version {found}, written before encryption at rest; move it aside and import the national file again"
    )]
    OlderSchema {
        /// The data directory.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// The data key is not the one the store was created with.
    #[error(
        "data directory {path} was created with another data key: `data_key` must name the key file this node was set up with"
    )]
    WrongDataKey {
        /// The data directory.
        path: PathBuf,
    },
    /// A stored value does not open under the data key: damaged or altered.
    #[error(
        "a value in table `{table}` does not open under the data key: the store is damaged or was altered"
    )]
    Unsealable {
        /// The table's name.
        table: &'static str,
    },
    /// The data directory belongs to another country's node.
    #[error("data directory {path} belongs to a node of {found}, not {expected}")]
    WrongCountry {
        /// The data directory.
        path: PathBuf,
        /// Country recorded in the store.
        found: String,
        /// Country of the configuration.
        expected: Country,
    },
    /// Stored metadata is malformed.
    #[error("store metadata `{key}` is malformed")]
    Corrupt {
        /// The metadata key.
        key: &'static str,
    },
    /// The engine failed.
    #[error("storage engine error: {0}")]
    Engine(String),
}

/// Facts about an open store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// Schema version of the store.
    pub schema_version: u32,
    /// Engine name.
    pub engine: &'static str,
    /// Seconds since the Unix epoch when the data directory was created.
    pub created_at: i64,
    /// Node starts on this data directory, this one included.
    pub starts: u64,
}

/// An open, locked store. Dropping it releases the data directory.
#[derive(Debug)]
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its metadata as of opening.
    pub info: StoreInfo,
    _lock: File,
}

const LOCK_FILE: &str = "adep-node.lock";
const ENGINE_DIR: &str = "store";
const META_SCHEMA: &str = "schema_version";
const META_COUNTRY: &str = "country";
const META_CREATED: &str = "created_at";
const META_STARTS: &str = "starts";
const META_KEY_CHECK: &str = "data_key_check";
const KEY_CHECK: &[u8] = b"adep data key check v1";

/// Opens (creating if needed) the store of `country` in `data_dir`, locks the directory
/// against other processes, checks the schema version, the owner country and the data
/// key, and counts this start. Every value but the metadata is sealed under `key`.
pub fn open(data_dir: &Path, country: Country, key: &DataKey) -> Result<OpenStore, StoreError> {
    let dir_err = |message: String| StoreError::Directory {
        path: data_dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| dir_err(format!("cannot create: {e}")))?;
    let lock = lock_dir(data_dir)?;
    let engine = sled_engine::SledStore::open(&data_dir.join(ENGINE_DIR))?;
    let sealed = Arc::new(sealed::SealedStore::new(Box::new(engine), key));
    let key_check = sealed.seal(Table::Meta, META_KEY_CHECK.as_bytes(), KEY_CHECK)?;
    let store: Arc<dyn Store> = sealed.clone();

    let read_meta = |key: &'static str| store.get(Table::Meta, key.as_bytes());
    let mut batch = Batch::new();
    let (schema_version, created_at) = match read_meta(META_SCHEMA)? {
        None => {
            let now = unix_now();
            batch.put(Table::Meta, META_SCHEMA, SCHEMA_VERSION.to_be_bytes());
            batch.put(Table::Meta, META_COUNTRY, country.as_str());
            batch.put(Table::Meta, META_CREATED, now.to_be_bytes());
            batch.put(Table::Meta, META_KEY_CHECK, key_check);
            (SCHEMA_VERSION, now)
        }
        Some(v) => {
            let found = u32::from_be_bytes(
                v.try_into()
                    .map_err(|_| StoreError::Corrupt { key: META_SCHEMA })?,
            );
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: data_dir.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found < SCHEMA_VERSION {
                return Err(StoreError::OlderSchema {
                    path: data_dir.to_owned(),
                    found,
                });
            }
            let owner =
                read_meta(META_COUNTRY)?.ok_or(StoreError::Corrupt { key: META_COUNTRY })?;
            if owner != country.as_str().as_bytes() {
                return Err(StoreError::WrongCountry {
                    path: data_dir.to_owned(),
                    found: String::from_utf8_lossy(&owner).into_owned(),
                    expected: country,
                });
            }
            let created = read_meta(META_CREATED)?
                .and_then(|v| v.try_into().ok())
                .map(i64::from_be_bytes)
                .ok_or(StoreError::Corrupt { key: META_CREATED })?;
            let check = read_meta(META_KEY_CHECK)?.ok_or(StoreError::Corrupt {
                key: META_KEY_CHECK,
            })?;
            let opens = sealed
                .open(Table::Meta, META_KEY_CHECK.as_bytes(), &check)
                .is_ok_and(|v| v == KEY_CHECK);
            if !opens {
                return Err(StoreError::WrongDataKey {
                    path: data_dir.to_owned(),
                });
            }
            (found, created)
        }
    };
    let starts = match read_meta(META_STARTS)? {
        None => 0,
        Some(v) => u64::from_be_bytes(
            v.try_into()
                .map_err(|_| StoreError::Corrupt { key: META_STARTS })?,
        ),
    } + 1;
    batch.put(Table::Meta, META_STARTS, starts.to_be_bytes());
    store.apply(&batch)?;
    let info = StoreInfo {
        schema_version,
        engine: store.engine(),
        created_at,
        starts,
    };
    Ok(OpenStore {
        store,
        info,
        _lock: lock,
    })
}

/// Whether a node process holds the data directory `data_dir` now: its pid as
/// ` (pid N)` (empty when unknown), or None. Reads only: the lock is tried and let go
/// at once.
pub fn running_node(data_dir: &Path) -> Option<String> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => Some(
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// Takes the advisory lock of a data directory and writes our pid into it.
fn lock_dir(data_dir: &Path) -> Result<File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Directory {
            path: data_dir.to_owned(),
            message: format!("cannot open {LOCK_FILE}: {e}"),
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(StoreError::InUse {
                path: data_dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::Directory {
                path: data_dir.to_owned(),
                message: format!("cannot lock {LOCK_FILE}: {e}"),
            });
        }
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(file)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Country {
        "FR".parse().unwrap()
    }

    fn open(dir: &Path, country: Country) -> Result<OpenStore, StoreError> {
        super::open(dir, country, &DataKey::from_bytes([1; 32]))
    }

    #[test]
    fn keeps_writes_across_reopen_and_counts_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), fr()).unwrap();
        assert_eq!(first.info.starts, 1);
        assert_eq!(first.info.schema_version, SCHEMA_VERSION);
        let mut b = Batch::new();
        b.put(Table::Meta, "k1", "v1");
        b.put(Table::Meta, "k2", "v2");
        b.delete(Table::Meta, "k2");
        first.store.apply(&b).unwrap();
        let created = first.info.created_at;
        drop(first);

        let second = open(dir.path(), fr()).unwrap();
        assert_eq!(second.info.starts, 2);
        assert_eq!(second.info.created_at, created);
        assert_eq!(
            second.store.get(Table::Meta, b"k1").unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(second.store.get(Table::Meta, b"k2").unwrap(), None);
    }

    #[test]
    fn applies_a_batch_across_tables_and_keeps_it_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), fr()).unwrap();
        let mut seed = Batch::new();
        seed.put(Table::HitRefs, "old-key", "r0");
        s.store.apply(&seed).unwrap();
        // A record, its index keys, and a metadata counter: one unit.
        let mut b = Batch::new();
        b.put(Table::Records, "r1", "payload");
        b.put(Table::HitRefs, "k1", "r1");
        b.put(Table::HitRefs, "k2", "r1");
        b.delete(Table::HitRefs, "old-key");
        b.put(Table::Meta, "records", 1u64.to_be_bytes());
        s.store.apply(&b).unwrap();
        drop(s);

        let s = open(dir.path(), fr()).unwrap();
        assert_eq!(
            s.store.get(Table::Records, b"r1").unwrap(),
            Some(b"payload".to_vec())
        );
        let index: Vec<_> = s
            .store
            .scan_prefix(Table::HitRefs, b"")
            .map(|e| e.unwrap().key)
            .collect();
        assert_eq!(index, [b"k1".to_vec(), b"k2".to_vec()]);
        assert_eq!(
            s.store.get(Table::Meta, b"records").unwrap(),
            Some(1u64.to_be_bytes().to_vec())
        );
        // Tables are separate key spaces.
        assert_eq!(s.store.get(Table::Meta, b"r1").unwrap(), None);
    }

    #[test]
    fn scans_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), fr()).unwrap();
        let mut b = Batch::new();
        for k in ["p/b", "p/a", "p/c", "q/a"] {
            b.put(Table::Meta, k, k);
        }
        s.store.apply(&b).unwrap();
        let keys: Vec<_> = s
            .store
            .scan_prefix(Table::Meta, b"p/")
            .map(|e| String::from_utf8(e.unwrap().key).unwrap())
            .collect();
        assert_eq!(keys, ["p/a", "p/b", "p/c"]);
        let keys: Vec<_> = s
            .store
            .scan_range(Table::Meta, b"p/b", Some(b"q/a"))
            .map(|e| String::from_utf8(e.unwrap().key).unwrap())
            .collect();
        assert_eq!(keys, ["p/b", "p/c"]);
    }

    #[test]
    fn refuses_a_directory_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open(dir.path(), fr()).unwrap();
        let e = open(dir.path(), fr()).unwrap_err();
        assert!(matches!(e, StoreError::InUse { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("in use by another adep-node process (pid "),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), fr()).unwrap();
        let mut b = Batch::new();
        b.put(Table::Meta, META_SCHEMA, (SCHEMA_VERSION + 1).to_be_bytes());
        s.store.apply(&b).unwrap();
        drop(s);
        let e = open(dir.path(), fr()).unwrap_err();
        assert!(
            matches!(e, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{e}"
        );
    }

    #[test]
    fn refuses_another_data_key_and_an_older_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), fr()).unwrap());
        let e = super::open(dir.path(), fr(), &DataKey::from_bytes([2; 32])).unwrap_err();
        assert!(matches!(e, StoreError::WrongDataKey { .. }), "{e}");
        assert!(
            e.to_string().contains("created with another data key"),
            "{e}"
        );
        // The refused start changed nothing: the right key still opens it.
        let s = open(dir.path(), fr()).unwrap();
        assert_eq!(s.info.starts, 2);
        let mut b = Batch::new();
        b.put(Table::Meta, META_SCHEMA, 1u32.to_be_bytes());
        s.store.apply(&b).unwrap();
        drop(s);
        let e = open(dir.path(), fr()).unwrap_err();
        assert!(
            e.to_string().contains("written before encryption at rest"),
            "{e}"
        );
    }

    #[test]
    fn refuses_another_countrys_directory() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), fr()).unwrap());
        let e = open(dir.path(), "DE".parse().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("belongs to a node of FR, not DE"),
            "{e}"
        );
    }
}
