//! The follow-up tables of a node's store: follow-ups by direction and id, the owner's
//! outbox, and the hits a requesting node's searches received.

use serde::{Deserialize, Serialize};

use super::{Direction, Effects, FollowUp, FollowUpId, OutboxChange, OutboxEntry, ReceivedHit};
use crate::{
    domain::hitref::HitRef,
    store::{Batch, Store, StoreError, Table},
};

const VALUE_FORMAT: u8 = 1;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_FORMAT];
    // Serialising these plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|_| StoreError::Corrupt { key: table })
        }
        _ => Err(StoreError::Corrupt { key: table }),
    }
}

fn prefix(direction: Direction) -> u8 {
    match direction {
        Direction::Outgoing => b'o',
        Direction::Incoming => b'i',
    }
}

fn key(direction: Direction, id: &FollowUpId) -> Vec<u8> {
    let mut k = vec![prefix(direction)];
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// The follow-ups of a node, in its store.
#[derive(Debug)]
pub struct Book<'s> {
    store: &'s dyn Store,
}

impl<'s> Book<'s> {
    /// The follow-ups in `store`.
    pub fn new(store: &'s dyn Store) -> Book<'s> {
        Book { store }
    }

    /// One follow-up.
    pub fn get(
        &self,
        direction: Direction,
        id: &FollowUpId,
    ) -> Result<Option<FollowUp>, StoreError> {
        self.store
            .get(Table::FollowUps, &key(direction, id))?
            .map(|v| decode("follow_ups", &v))
            .transpose()
    }

    /// Every follow-up of one direction, oldest first.
    pub fn list(&self, direction: Direction) -> Result<Vec<FollowUp>, StoreError> {
        let mut all = self
            .store
            .scan_prefix(Table::FollowUps, &[prefix(direction)])
            .map(|e| decode("follow_ups", &e?.value))
            .collect::<Result<Vec<FollowUp>, StoreError>>()?;
        all.sort_by(|a, b| a.filed_at.cmp(&b.filed_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// The durable batch that stores a step's `effects` on `followup` (the caller
    /// adds the step's audit event to it): the follow-up if it changed, and its outbox
    /// entry put or removed.
    pub fn batch(followup: &FollowUp, effects: &Effects) -> Batch {
        let mut batch = Batch::new();
        if effects.save {
            batch.put(
                Table::FollowUps,
                key(followup.direction, &followup.id),
                encode(followup),
            );
        }
        match &effects.outbox {
            OutboxChange::Keep => {}
            OutboxChange::Put(entry) => batch.put(
                Table::Outbox,
                entry.id.as_str().as_bytes().to_vec(),
                encode(entry),
            ),
            OutboxChange::Remove => {
                batch.delete(Table::Outbox, followup.id.as_str().as_bytes().to_vec())
            }
        }
        batch
    }

    /// Stores a step's effects on a follow-up, durably, without an audit event of
    /// its own (a poll's news, an expiry counted in one event for many).
    pub fn save(&self, followup: &FollowUp, effects: &Effects) -> Result<(), StoreError> {
        self.store.apply(&Book::batch(followup, effects))
    }

    /// Every outbox entry.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store
            .scan_prefix(Table::Outbox, b"")
            .map(|e| decode("outbox", &e?.value))
            .collect()
    }

    /// One outbox entry.
    pub fn outbox_entry(&self, id: &FollowUpId) -> Result<Option<OutboxEntry>, StoreError> {
        self.store
            .get(Table::Outbox, id.as_str().as_bytes())?
            .map(|v| decode("outbox", &v))
            .transpose()
    }

    /// The batch that removes an outbox entry whose follow-up is gone.
    pub fn drop_outbox_entry(id: &FollowUpId) -> Batch {
        let mut batch = Batch::new();
        batch.delete(Table::Outbox, id.as_str().as_bytes().to_vec());
        batch
    }

    /// Replaces an outbox entry (a new attempt time).
    pub fn reschedule(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(
            Table::Outbox,
            entry.id.as_str().as_bytes().to_vec(),
            encode(entry),
        );
        self.store.apply(&batch)
    }

    /// Remembers hits received in a search.
    pub fn remember_hits(&self, hits: &[(HitRef, ReceivedHit)]) -> Result<(), StoreError> {
        if hits.is_empty() {
            return Ok(());
        }
        // Relaxed: a search does not wait for the disk; a hit lost in a crash only
        // means searching again before filing a follow-up.
        let mut batch = Batch::relaxed();
        for (hit_ref, hit) in hits {
            batch.put(
                Table::ReceivedHits,
                hit_ref.to_string().into_bytes(),
                encode(hit),
            );
        }
        self.store.apply(&batch)
    }

    /// Forgets the hits received in searches whose references have expired by `now`
    /// (with the subjects they remember). Returns how many.
    pub fn prune_received_hits(&self, now: i64) -> Result<usize, StoreError> {
        let mut batch = Batch::new();
        for entry in self.store.scan_prefix(Table::ReceivedHits, b"") {
            let entry = entry?;
            let expired = decode::<ReceivedHit>("received_hits", &entry.value)
                .map_or(true, |hit| hit.expires_at <= now);
            if expired {
                batch.delete(Table::ReceivedHits, entry.key);
            }
        }
        let pruned = batch.ops().len();
        if pruned > 0 {
            self.store.apply(&batch)?;
        }
        Ok(pruned)
    }

    /// A hit received in a search.
    pub fn received_hit(&self, hit_ref: &HitRef) -> Result<Option<ReceivedHit>, StoreError> {
        self.store
            .get(Table::ReceivedHits, hit_ref.to_string().as_bytes())?
            .map(|v| decode("received_hits", &v))
            .transpose()
    }
}

/// Seconds before the next delivery attempt after `attempts` failures: doubling from
/// one second, at most `max`.
pub fn backoff(attempts: u32, max: i64) -> i64 {
    1i64.checked_shl(attempts.min(30))
        .unwrap_or(i64::MAX)
        .min(max.max(1))
}
