//! Encryption at rest (DESIGN section 8): a [`Store`] that seals every value it writes
//! with AES-256-GCM under the node's data key and opens every value it reads.
//!
//! Every table is sealed except [`Table::Meta`], which holds only the schema version,
//! the owner country, counters and the key check. Keys stay in the clear (the engine
//! orders by them): they are record ids, follow-up ids, hit references, audit positions
//! and times, never a name or a payload value.
//!
//! A sealed value is `1 (format) ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16)`.
//! The associated data is the table's name, a zero byte and the entry's key, so a
//! value moved to another key or table no longer opens.

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

use super::{Batch, Entry, Op, Scan, Store, StoreError, Table};
use crate::secret::DataKey;

/// The first byte of every sealed value.
const FORMAT: u8 = 1;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// A [`Store`] sealing the values of every table but [`Table::Meta`].
pub(super) struct SealedStore {
    inner: Box<dyn Store>,
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn sealed(table: Table) -> bool {
    table != Table::Meta
}

fn aad(table: Table, key: &[u8]) -> Vec<u8> {
    let name = table.name().as_bytes();
    let mut aad = Vec::with_capacity(name.len() + 1 + key.len());
    aad.extend_from_slice(name);
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}

impl SealedStore {
    pub(super) fn new(inner: Box<dyn Store>, key: &DataKey) -> SealedStore {
        let key = UnboundKey::new(&AES_256_GCM, key.expose())
            .map(LessSafeKey::new)
            // A 32-byte key is always accepted by AES-256-GCM.
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes 32-byte keys"));
        SealedStore {
            inner,
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Seals `value` for `key` of `table`.
    pub(super) fn seal(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Engine("the system random generator failed".into()))?;
        let mut out = Vec::with_capacity(value.len() + OVERHEAD);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(table, key)),
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| StoreError::Engine("sealing a value failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a value sealed for `key` of `table`.
    pub(super) fn open(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let unsealable = || StoreError::Unsealable {
            table: table.name(),
        };
        if value.len() < OVERHEAD || value[0] != FORMAT {
            return Err(unsealable());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&value[1..1 + NONCE_LEN]).map_err(|_| unsealable())?;
        let mut body = value[1 + NONCE_LEN..].to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad(table, key)), &mut body)
            .map_err(|_| unsealable())?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }

    fn open_entry(
        &self,
        table: Table,
        entry: Result<Entry, StoreError>,
    ) -> Result<Entry, StoreError> {
        let entry = entry?;
        if !sealed(table) {
            return Ok(entry);
        }
        let value = self.open(table, &entry.key, &entry.value)?;
        Ok(Entry {
            key: entry.key,
            value,
        })
    }
}

impl Store for SealedStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.inner.get(table, key)? {
            Some(v) if sealed(table) => self.open(table, key, &v).map(Some),
            other => Ok(other),
        }
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Scan<'_> {
        Box::new(
            self.inner
                .scan_prefix(table, prefix)
                .map(move |e| self.open_entry(table, e)),
        )
    }

    fn scan_range(&self, table: Table, start: &[u8], end: Option<&[u8]>) -> Scan<'_> {
        Box::new(
            self.inner
                .scan_range(table, start, end)
                .map(move |e| self.open_entry(table, e)),
        )
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut out = if batch.synced() {
            Batch::new()
        } else {
            Batch::relaxed()
        };
        for op in batch.ops() {
            match op {
                Op::Put { table, key, value } if sealed(*table) => {
                    let value = self.seal(*table, key, value)?;
                    out.put(*table, key.clone(), value);
                }
                Op::Put { table, key, value } => out.put(*table, key.clone(), value.clone()),
                Op::Delete { table, key } => out.delete(*table, key.clone()),
            }
        }
        self.inner.apply(&out)
    }

    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(key: u8) -> (tempfile::TempDir, SealedStore) {
        let dir = tempfile::tempdir().unwrap();
        let inner = super::super::sled_engine::SledStore::open(dir.path()).unwrap();
        let sealed = SealedStore::new(Box::new(inner), &DataKey::from_bytes([key; 32]));
        (dir, sealed)
    }

    #[test]
    fn round_trips_and_stores_no_cleartext() {
        let (_dir, s) = store(1);
        let mut b = Batch::new();
        b.put(Table::Records, "r1", "Müller Anna 1980-02-29");
        b.put(Table::Meta, "m", "plain");
        s.apply(&b).unwrap();
        assert_eq!(
            s.get(Table::Records, b"r1").unwrap().unwrap(),
            "Müller Anna 1980-02-29".as_bytes()
        );
        let raw = s.inner.get(Table::Records, b"r1").unwrap().unwrap();
        assert_eq!(raw.len(), "Müller Anna 1980-02-29".len() + OVERHEAD);
        assert!(!raw.windows(6).any(|w| w == "Müller".as_bytes()));
        assert_eq!(s.inner.get(Table::Meta, b"m").unwrap().unwrap(), b"plain");
        let scanned: Vec<_> = s
            .scan_prefix(Table::Records, b"")
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(scanned[0].value, "Müller Anna 1980-02-29".as_bytes());
    }

    #[test]
    fn refuses_a_moved_altered_or_foreign_value() {
        let (_dir, s) = store(1);
        let mut b = Batch::new();
        b.put(Table::Records, "r1", "payload one");
        s.apply(&b).unwrap();
        let raw = s.inner.get(Table::Records, b"r1").unwrap().unwrap();

        // Moved to another key, or to another table under the same key.
        let mut b = Batch::new();
        b.put(Table::Records, "r2", raw.clone());
        b.put(Table::Outbox, "r1", raw.clone());
        s.inner.apply(&b).unwrap();
        for (table, key) in [(Table::Records, b"r2"), (Table::Outbox, b"r1")] {
            let e = s.get(table, key).unwrap_err();
            assert!(
                e.to_string().contains(&format!("table `{}`", table.name())),
                "{e}"
            );
        }
        // One bit flipped.
        let mut altered = raw.clone();
        altered[20] ^= 1;
        let mut b = Batch::new();
        b.put(Table::Records, "r1", altered);
        s.inner.apply(&b).unwrap();
        assert!(s.get(Table::Records, b"r1").is_err());
        // Another node's key.
        let other = SealedStore::new(Box::new(NoStore), &DataKey::from_bytes([2; 32]));
        assert!(other.open(Table::Records, b"r1", &raw).is_err());
        assert!(s.open(Table::Records, b"r1", &raw).is_ok());
    }

    #[derive(Debug)]
    struct NoStore;

    impl Store for NoStore {
        fn get(&self, _: Table, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan_prefix(&self, _: Table, _: &[u8]) -> Scan<'_> {
            Box::new(std::iter::empty())
        }
        fn scan_range(&self, _: Table, _: &[u8], _: Option<&[u8]>) -> Scan<'_> {
            Box::new(std::iter::empty())
        }
        fn apply(&self, _: &Batch) -> Result<(), StoreError> {
            Ok(())
        }
        fn engine(&self) -> &'static str {
            "none"
        }
    }
}
