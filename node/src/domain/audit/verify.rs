//! Verifying the audit log: chain, signatures, base and witnesses.

use super::*;

/// Checks the whole log: it starts where the last pruning left it (or at entry 1),
/// each entry stored at its own position, positions consecutive, each hash recomputed
/// from the content and chained to the previous entry, each signature valid under
/// `public_key`; and against `witnesses`, checkpoints this node signed earlier (an
/// auditor's export, a peer's log): none may show an entry after the log's last, or
/// another hash. Checkpoints not signed under `public_key` are counted and left out.
/// Returns the first break.
pub fn verify(
    store: &dyn Store,
    public_key: &[u8],
    witnesses: &[Checkpoint],
) -> Result<Result<Verified, Broken>, StoreError> {
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
    let (ours, foreign): (Vec<&Checkpoint>, Vec<&Checkpoint>) =
        witnesses.iter().partition(|w| w.signed_by(public_key));
    let wanted: std::collections::HashMap<u64, [u8; 32]> =
        ours.iter().map(|w| (w.seq, w.hash)).collect();
    let base = base(store)?;
    if base
        .as_ref()
        .is_some_and(|b| !b.signed_as(BASE_DOMAIN, public_key))
    {
        return Ok(Err(Broken::BadBase));
    }
    let mut previous: Option<Entry> = None;
    let mut count = 0;
    let mut first = None;
    for e in store.scan_prefix(Table::Audit, b"") {
        let e = e?;
        let at = e
            .key
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let Ok(entry) = postcard::from_bytes::<Entry>(&e.value) else {
            return Ok(Err(Broken::Unreadable(at)));
        };
        if entry.seq != at {
            return Ok(Err(Broken::OutOfPlace {
                expected: at,
                found: entry.seq,
            }));
        }
        if chain_hash(
            &entry.prev,
            entry.seq,
            entry.time,
            &entry.kind,
            &entry.fields,
        ) != entry.hash
        {
            return Ok(Err(Broken::Altered(entry.seq)));
        }
        if key.verify(&entry.hash, &entry.signature).is_err() {
            return Ok(Err(Broken::BadSignature(entry.seq)));
        }
        match &previous {
            Some(p) if entry.seq != p.seq + 1 || entry.prev != p.hash => {
                return Ok(Err(Broken::Unchained(entry.seq)));
            }
            Some(_) => {}
            // The first entry: where the last pruning left the log, or entry 1.
            None => {
                let (expected, prev) = base
                    .as_ref()
                    .map_or((1, [0u8; 32]), |b| (b.seq + 1, b.hash));
                if entry.seq != expected {
                    return Ok(Err(Broken::HeadCut {
                        expected,
                        first: entry.seq,
                    }));
                }
                if entry.prev != prev {
                    return Ok(Err(Broken::Unchained(entry.seq)));
                }
            }
        }
        if wanted.get(&entry.seq).is_some_and(|h| *h != entry.hash) {
            return Ok(Err(Broken::Rewritten(entry.seq)));
        }
        first.get_or_insert(entry.seq);
        count += 1;
        previous = Some(entry);
    }
    let last = previous
        .as_ref()
        .map(|p| p.seq)
        .or(base.as_ref().map(|b| b.seq))
        .unwrap_or(0);
    if let Some(witnessed) = ours.iter().map(|w| w.seq).filter(|s| *s > last).max() {
        return Ok(Err(Broken::TailCut { last, witnessed }));
    }
    Ok(Ok(Verified {
        entries: count,
        range: first.zip(previous.map(|p| p.seq)),
        witnesses: ours.len() as u64,
        foreign: foreign.len() as u64,
    }))
}
