//! An in-memory engine: the store of unit tests. Every batch applies atomically under
//! one lock; nothing is durable. [`MemoryStore::fail_writes`] makes every write fail,
//! and [`MemoryStore::fail_writes_to`] every write that touches one table (the audit
//! log, say), for tests of what a step does when the store refuses it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
};

use super::{Batch, Entry, Op, Scan, Store, StoreError, Table};

/// One table: keys to values, in key order.
type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// Tables in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<Table, Rows>>,
    failing: Mutex<Failing>,
}

/// Which writes a test makes fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Failing {
    #[default]
    None,
    All,
    Touching(Table),
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// From now on every write fails (`true`) or succeeds again (`false`); reads are
    /// not affected.
    pub fn fail_writes(&self, fail: bool) {
        *self.failing.lock().unwrap_or_else(PoisonError::into_inner) =
            if fail { Failing::All } else { Failing::None };
    }

    /// From now on every batch that writes to `table` fails, whatever else it holds.
    pub fn fail_writes_to(&self, table: Table) {
        *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = Failing::Touching(table);
    }

    fn scan(&self, table: Table, keep: impl Fn(&[u8]) -> bool) -> Scan<'_> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let entries: Vec<Result<Entry, StoreError>> = tables
            .get(&table)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| {
                Ok(Entry {
                    key: k.clone(),
                    value: v.clone(),
                })
            })
            .collect();
        Box::new(entries.into_iter())
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Scan<'_> {
        let prefix = prefix.to_vec();
        self.scan(table, move |k| k.starts_with(&prefix))
    }

    fn scan_range(&self, table: Table, start: &[u8], end: Option<&[u8]>) -> Scan<'_> {
        let (start, end) = (start.to_vec(), end.map(<[u8]>::to_vec));
        self.scan(table, move |k| {
            k >= start.as_slice() && end.as_deref().is_none_or(|e| k < e)
        })
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let failing = *self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = match failing {
            Failing::None => false,
            Failing::All => true,
            Failing::Touching(t) => batch.ops().iter().any(|op| match op {
                Op::Put { table, .. } | Op::Delete { table, .. } => *table == t,
            }),
        };
        if refused {
            return Err(StoreError::Engine("the test store refuses writes".into()));
        }
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        for op in batch.ops() {
            match op {
                Op::Put { table, key, value } => {
                    tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Op::Delete { table, key } => {
                    if let Some(t) = tables.get_mut(table) {
                        t.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_batches_whole_and_scans_in_key_order() {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        batch.put(Table::Records, b"b".to_vec(), b"2".to_vec());
        batch.put(Table::Records, b"a".to_vec(), b"1".to_vec());
        batch.put(Table::Audit, b"x".to_vec(), b"9".to_vec());
        store.apply(&batch).expect("apply");
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(Table::Records, b"")
            .map(|e| e.expect("entry").key)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        let range: Vec<Vec<u8>> = store
            .scan_range(Table::Records, b"b", None)
            .map(|e| e.expect("entry").key)
            .collect();
        assert_eq!(range, [b"b".to_vec()]);

        store.fail_writes(true);
        let mut delete = Batch::new();
        delete.delete(Table::Records, b"a".to_vec());
        assert!(store.apply(&delete).is_err());
        assert_eq!(
            store.get(Table::Records, b"a").expect("get"),
            Some(b"1".to_vec()),
            "a refused batch changes nothing"
        );
    }
}
