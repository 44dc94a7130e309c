//! Each record's keyed digests, stored beside it per key epoch ([`Table::Digests`]):
//! computing them costs an OPRF evaluation per match key, so a restart loads them and
//! only an import of new or changed records, or a rotation, evaluates.

use crate::{
    domain::identity::RecordId,
    domain::index::{IndexError, WRITE_CHUNK, decode_head},
    domain::pseudonymise::{
        DIGEST_BYTES, Digest, HashedKey, KeyEpoch, KeyKind, KeyedDigest, Side, oprf::NodeKey,
    },
    store::{Batch, Entry, Store, Table},
};

/// Format of a stored digests value: this byte, then per key its kind code and digest.
const DIGESTS_FORMAT: u8 = 1;

/// The key of a record's digests under an epoch in [`Table::Digests`].
pub(crate) fn digests_key(epoch: KeyEpoch, id: &[u8]) -> Vec<u8> {
    let mut key = epoch.0.to_be_bytes().to_vec();
    key.extend_from_slice(id);
    key
}

pub(crate) fn encode_digests(keys: &[HashedKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + keys.len() * (1 + DIGEST_BYTES));
    out.push(DIGESTS_FORMAT);
    for k in keys {
        // Kind codes are below 256 (twelve kinds).
        out.push(k.kind.code() as u8);
        out.extend_from_slice(&k.digest.0);
    }
    out
}

fn decode_digests(value: &[u8]) -> Option<Vec<HashedKey>> {
    let (&DIGESTS_FORMAT, rest) = value.split_first()? else {
        return None;
    };
    if rest.len() % (1 + DIGEST_BYTES) != 0 {
        return None;
    }
    rest.chunks(1 + DIGEST_BYTES)
        .map(|c| {
            Some(HashedKey {
                kind: KeyKind::from_code(u32::from(c[0]))?,
                digest: Digest::try_from(&c[1..]).ok()?,
            })
        })
        .collect()
}

/// Erases every stored digest of `epoch`; returns how many records had some.
pub fn erase_digests(store: &dyn Store, epoch: KeyEpoch) -> Result<usize, IndexError> {
    let prefix = epoch.0.to_be_bytes();
    let mut erased = 0;
    loop {
        let mut batch = Batch::relaxed();
        let mut n = 0;
        for entry in store.scan_prefix(Table::Digests, &prefix).take(WRITE_CHUNK) {
            batch.delete(Table::Digests, entry?.key);
            n += 1;
        }
        if n == 0 {
            return Ok(erased);
        }
        store.apply(&batch)?;
        erased += n;
    }
}

/// The digests of a chunk of stored records under `key`'s epoch: stored ones read,
/// missing ones computed and stored (relaxed: a crash only means computing them again).
pub(crate) fn digests_of(
    store: &dyn Store,
    key: &NodeKey,
    chunk: &[Entry],
) -> Result<Vec<(RecordId, Vec<HashedKey>)>, IndexError> {
    let corrupt = |k: &[u8]| IndexError::Corrupt(String::from_utf8_lossy(k).into_owned());
    let mut missing = Batch::relaxed();
    let mut out = Vec::with_capacity(chunk.len());
    for e in chunk {
        let at = digests_key(key.epoch(), &e.key);
        let keys = match store.get(Table::Digests, &at)? {
            Some(value) => decode_digests(&value).ok_or_else(|| corrupt(&e.key))?,
            None => {
                let head = decode_head(&e.key, &e.value)?;
                let keys = key.hash_identity(&head.identity, Side::Record);
                missing.put(Table::Digests, at, encode_digests(&keys));
                keys
            }
        };
        let id = String::from_utf8(e.key.clone())
            .ok()
            .and_then(|id| RecordId::try_from(id).ok())
            .ok_or_else(|| corrupt(&e.key))?;
        out.push((id, keys));
    }
    if !missing.is_empty() {
        store.apply(&missing)?;
    }
    Ok(out)
}
