//! The follow-up tables of a node's store: follow-ups by direction and id, the owner's
//! outbox, and the hits a requesting node's searches received.

use serde::{Deserialize, Serialize};

use super::{
    Direction, Effects, FollowUp, FollowUpId, OutboxChange, OutboxEntry, ReceivedHit,
    UnansweredFiling,
};
use crate::{
    domain::{hitref::HitRef, identity::RecordId, principals::Country},
    store::{Batch, Store, StoreError, Table},
};

/// The first byte of a stored value: its format. Received hits are at format 2 (with
/// their search's request id and reason), follow-ups at format 3 (format 2 with
/// `withdrawn_at` at the end); formats 1 and 2 are still read.
const VALUE_FORMAT: u8 = 1;
const FORMAT_WITH_SEARCH: u8 = 2;
const FORMAT_WITH_WITHDRAWAL: u8 = 3;

fn encode<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = vec![format];
    // Serialising these plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

fn decode_as<T: for<'a> Deserialize<'a>>(
    table: &'static str,
    format: u8,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((f, rest)) if *f == format => {
            postcard::from_bytes(rest).map_err(|_| StoreError::Corrupt { key: table })
        }
        _ => Err(StoreError::Corrupt { key: table }),
    }
}

fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    decode_as(table, VALUE_FORMAT, bytes)
}

fn encode_followup(f: &FollowUp) -> Vec<u8> {
    encode(FORMAT_WITH_WITHDRAWAL, f)
}

fn decode_followup(bytes: &[u8]) -> Result<FollowUp, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT, _)) => decode::<FollowUpV1>("follow_ups", bytes).map(FollowUp::from),
        // Format 2 is format 3 without its last field, `withdrawn_at`: read with a
        // None appended (one zero byte in postcard's encoding of an Option).
        Some((&FORMAT_WITH_SEARCH, rest)) => {
            let mut upgraded = Vec::with_capacity(bytes.len() + 1);
            upgraded.push(FORMAT_WITH_WITHDRAWAL);
            upgraded.extend_from_slice(rest);
            upgraded.push(0);
            decode_as("follow_ups", FORMAT_WITH_WITHDRAWAL, &upgraded)
        }
        _ => decode_as("follow_ups", FORMAT_WITH_WITHDRAWAL, bytes),
    }
}

/// A follow-up as format 1 stored it: without its search's request id.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct FollowUpV1 {
    id: FollowUpId,
    direction: Direction,
    country: Country,
    hit_ref: HitRef,
    state: super::State,
    officer_id: String,
    reason: crate::domain::reason::Reason,
    justification: String,
    offence_description: String,
    subject: crate::domain::identity::Identity,
    filed_at: i64,
    deadline_at: i64,
    expires_at: i64,
    steps: Vec<super::Step>,
    decision_reason: String,
    core_data: std::collections::BTreeMap<String, String>,
    record: Option<RecordId>,
    quality: Option<crate::domain::pseudonymise::Quality>,
}

impl From<FollowUpV1> for FollowUp {
    fn from(v: FollowUpV1) -> FollowUp {
        FollowUp {
            id: v.id,
            direction: v.direction,
            country: v.country,
            hit_ref: v.hit_ref,
            search_request_id: String::new(),
            state: v.state,
            officer_id: v.officer_id,
            reason: v.reason,
            justification: v.justification,
            offence_description: v.offence_description,
            subject: v.subject,
            filed_at: v.filed_at,
            deadline_at: v.deadline_at,
            expires_at: v.expires_at,
            steps: v.steps,
            decision_reason: v.decision_reason,
            core_data: v.core_data,
            record: v.record,
            quality: v.quality,
            withdrawn_at: None,
        }
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

/// The unanswered filings for `hit_ref` are kept under `<hit_ref>/<id>`.
fn unanswered_prefix(hit_ref: &HitRef) -> String {
    format!("{hit_ref}/")
}

fn unanswered_key(hit_ref: &HitRef, id: &FollowUpId) -> Vec<u8> {
    format!("{}{id}", unanswered_prefix(hit_ref)).into_bytes()
}

/// The meta key marking a store whose holds index is built.
const META_HOLDS_INDEXED: &[u8] = b"follow_up_holds_indexed";

/// What a follow-up holds from another request: its hit reference, and at the owner
/// its record.
enum Held<'a> {
    Hit(&'a HitRef),
    Record(&'a RecordId),
}

/// The key prefix of the holds of `held` by follow-ups of `direction` with `country`:
/// the direction, the country, then the hit reference or the record id (its length
/// first, so that no id is a prefix of another).
fn hold_prefix(direction: Direction, country: Country, held: &Held<'_>) -> Vec<u8> {
    let mut k = vec![prefix(direction)];
    k.extend_from_slice(country.as_str().as_bytes());
    match held {
        Held::Hit(hit_ref) => {
            k.push(b'h');
            k.extend_from_slice(hit_ref.to_string().as_bytes());
        }
        Held::Record(record) => {
            let id = record.as_str().as_bytes();
            k.push(b'r');
            k.extend_from_slice(&(id.len() as u32).to_be_bytes());
            k.extend_from_slice(id);
        }
    }
    k.push(b'/');
    k
}

/// Adds to `batch` the holds index entries of `f`: present while it holds its hit,
/// removed once it does not.
fn put_holds(batch: &mut Batch, f: &FollowUp) {
    let mut held = vec![Held::Hit(&f.hit_ref)];
    if let Some(record) = &f.record {
        held.push(Held::Record(record));
    }
    for h in held {
        let mut k = hold_prefix(f.direction, f.country, &h);
        k.extend_from_slice(f.id.as_str().as_bytes());
        if f.state().holds_its_hit() {
            batch.put(Table::FollowUpHolds, k, Vec::new());
        } else {
            batch.delete(Table::FollowUpHolds, k);
        }
    }
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
            .map(|v| decode_followup(&v))
            .transpose()
    }

    /// A follow-up of `direction` with `country` that keeps its hit from another
    /// request ([`super::State::holds_its_hit`]), if there is one: for `hit_ref`, or
    /// (if given) for the record in the same case, `(record, case_reference)`. A
    /// fresh search's reference to a record opens no second request in a case; another
    /// case asks on its own. Read through the holds index: only the follow-ups it
    /// names are read.
    pub fn holding(
        &self,
        direction: Direction,
        country: Country,
        hit_ref: &HitRef,
        record: Option<(&RecordId, &str)>,
    ) -> Result<Option<FollowUp>, StoreError> {
        let mut prefixes = vec![(hold_prefix(direction, country, &Held::Hit(hit_ref)), None)];
        if let Some((record, case)) = record {
            prefixes.push((
                hold_prefix(direction, country, &Held::Record(record)),
                Some(case),
            ));
        }
        for (prefix, case) in prefixes {
            for entry in self.store.scan_prefix(Table::FollowUpHolds, &prefix) {
                let entry = entry?;
                let id = std::str::from_utf8(&entry.key[prefix.len()..])
                    .ok()
                    .and_then(|id| id.parse::<FollowUpId>().ok())
                    .ok_or(StoreError::Corrupt {
                        key: "follow_up_holds",
                    })?;
                // The index may name one that no longer holds (a write it missed is
                // not possible, but a stale name costs only this read).
                if let Some(f) = self.get(direction, &id)?
                    && f.country == country
                    && f.state().holds_its_hit()
                    && case.is_none_or(|c| f.reason.case_reference == c)
                {
                    return Ok(Some(f));
                }
            }
        }
        Ok(None)
    }

    /// Builds the holds index from the stored follow-ups, once per store (stores
    /// written before the index have none). Returns how many follow-ups it indexed.
    pub fn index_holds(&self) -> Result<usize, StoreError> {
        if self.store.get(Table::Meta, META_HOLDS_INDEXED)?.is_some() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        let mut indexed = 0;
        for entry in self.store.scan_prefix(Table::FollowUps, b"") {
            let f = decode_followup(&entry?.value)?;
            if f.state().holds_its_hit() {
                indexed += 1;
            }
            put_holds(&mut batch, &f);
        }
        batch.put(Table::Meta, META_HOLDS_INDEXED, [1u8]);
        self.store.apply(&batch)?;
        Ok(indexed)
    }

    /// Every follow-up of one direction, oldest first.
    pub fn list(&self, direction: Direction) -> Result<Vec<FollowUp>, StoreError> {
        let mut all = self
            .store
            .scan_prefix(Table::FollowUps, &[prefix(direction)])
            .map(|e| decode_followup(&e?.value))
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
                encode_followup(followup),
            );
            put_holds(&mut batch, followup);
        }
        match &effects.outbox {
            OutboxChange::Keep => {}
            OutboxChange::Put(entry) => batch.put(
                Table::Outbox,
                entry.id.as_str().as_bytes().to_vec(),
                encode(VALUE_FORMAT, entry),
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
            encode(VALUE_FORMAT, entry),
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
                encode(FORMAT_WITH_SEARCH, hit),
            );
        }
        self.store.apply(&batch)
    }

    /// Forgets the hits received in searches whose references have expired by `now`
    /// (with the subjects they remember), and the unanswered filings for them.
    /// Returns how many hits.
    pub fn prune_received_hits(&self, now: i64) -> Result<usize, StoreError> {
        let mut batch = Batch::new();
        for entry in self.store.scan_prefix(Table::ReceivedHits, b"") {
            let entry = entry?;
            let expired =
                decode_as::<ReceivedHit>("received_hits", FORMAT_WITH_SEARCH, &entry.value)
                    .map_or(true, |hit| hit.expires_at <= now);
            if expired {
                batch.delete(Table::ReceivedHits, entry.key);
            }
        }
        let pruned = batch.ops().len();
        for entry in self.store.scan_prefix(Table::UnansweredFilings, b"") {
            let entry = entry?;
            let expired = decode::<UnansweredFiling>("unanswered_filings", &entry.value)
                .map_or(true, |u| u.expires_at <= now);
            if expired {
                batch.delete(Table::UnansweredFilings, entry.key);
            }
        }
        if !batch.ops().is_empty() {
            self.store.apply(&batch)?;
        }
        Ok(pruned)
    }

    /// The filings for `hit_ref` whose answers never arrived. Each is kept under its
    /// own id, so a filing whose answer was lost is not overwritten by a later one
    /// for the same hit (the first may still reach the owner).
    pub fn unanswered(&self, hit_ref: &HitRef) -> Result<Vec<UnansweredFiling>, StoreError> {
        let mut all = self
            .store
            .scan_prefix(
                Table::UnansweredFilings,
                unanswered_prefix(hit_ref).as_bytes(),
            )
            .map(|e| decode("unanswered_filings", &e?.value))
            .collect::<Result<Vec<UnansweredFiling>, StoreError>>()?;
        // One stored before filings were kept by id, under the hit reference alone.
        if let Some(v) = self
            .store
            .get(Table::UnansweredFilings, hit_ref.to_string().as_bytes())?
        {
            all.push(decode("unanswered_filings", &v)?);
        }
        Ok(all)
    }

    /// Remembers, durably, a filing about to be sent for `hit_ref`.
    pub fn remember_unanswered(
        &self,
        hit_ref: &HitRef,
        filing: &UnansweredFiling,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(
            Table::UnansweredFilings,
            unanswered_key(hit_ref, &filing.id),
            encode(VALUE_FORMAT, filing),
        );
        self.store.apply(&batch)
    }

    /// Adds to `batch` the removal of the unanswered filing `id` for `hit_ref` (its
    /// answer is stored, or the owner refused it); other filings for the hit stay.
    pub fn forget_unanswered(
        &self,
        batch: &mut Batch,
        hit_ref: &HitRef,
        id: &FollowUpId,
    ) -> Result<(), StoreError> {
        batch.delete(Table::UnansweredFilings, unanswered_key(hit_ref, id));
        let legacy = hit_ref.to_string().into_bytes();
        if let Some(v) = self.store.get(Table::UnansweredFilings, &legacy)?
            && decode::<UnansweredFiling>("unanswered_filings", &v)?.id == *id
        {
            batch.delete(Table::UnansweredFilings, legacy);
        }
        Ok(())
    }

    /// A hit received in a search. One received before hits kept their search's
    /// reason (format 1) is not returned: its search must be run again.
    pub fn received_hit(&self, hit_ref: &HitRef) -> Result<Option<ReceivedHit>, StoreError> {
        match self
            .store
            .get(Table::ReceivedHits, hit_ref.to_string().as_bytes())?
        {
            Some(v) if v.first() == Some(&VALUE_FORMAT) => Ok(None),
            Some(v) => decode_as("received_hits", FORMAT_WITH_SEARCH, &v).map(Some),
            None => Ok(None),
        }
    }
}

/// Seconds before the next delivery attempt after `attempts` failures: doubling from
/// one second, at most `max`.
pub fn backoff(attempts: u32, max: i64) -> i64 {
    1i64.checked_shl(attempts.min(30))
        .unwrap_or(i64::MAX)
        .min(max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn unanswered_filings_for_one_hit_are_kept_and_forgotten_by_id() {
        let store = MemoryStore::new();
        let book = Book::new(&store);
        let hit: HitRef = "ab".repeat(20).parse().expect("a hit reference");
        let filing = |c: &str| UnansweredFiling {
            id: c.repeat(32).parse().expect("an id"),
            justification: "Needed for the burglary case.".into(),
            offence_description: "Burglary.".into(),
            officer_id: "fr-officer".into(),
            expires_at: 1000,
        };
        let (a, b) = (filing("a"), filing("b"));
        book.remember_unanswered(&hit, &a).expect("remember");
        book.remember_unanswered(&hit, &b).expect("remember");
        assert_eq!(book.unanswered(&hit).expect("read"), [a.clone(), b.clone()]);
        let forget = |id: &FollowUpId| {
            let mut batch = Batch::new();
            book.forget_unanswered(&mut batch, &hit, id)
                .expect("forget");
            store.apply(&batch).expect("apply");
        };
        // B refused (held by A, which reached the owner late): A stays remembered.
        forget(&b.id);
        assert_eq!(book.unanswered(&hit).expect("read"), vec![a.clone()]);

        // One stored under the hit reference alone, before: read, and forgotten only
        // by its own id.
        let c = filing("c");
        let mut batch = Batch::new();
        batch.put(
            Table::UnansweredFilings,
            hit.to_string().into_bytes(),
            encode(VALUE_FORMAT, &c),
        );
        store.apply(&batch).expect("apply");
        assert_eq!(book.unanswered(&hit).expect("read"), [a.clone(), c.clone()]);
        forget(&a.id);
        assert_eq!(book.unanswered(&hit).expect("read"), vec![c.clone()]);
        forget(&c.id);
        assert!(book.unanswered(&hit).expect("read").is_empty());
    }

    #[test]
    fn a_follow_up_stored_before_search_ids_reads_without_one() {
        let store = MemoryStore::new();
        let hit = "ab".repeat(20).parse().expect("a hit reference");
        let old = FollowUpV1 {
            id: "c".repeat(32).parse().expect("an id"),
            direction: Direction::Outgoing,
            country: "DE".parse().expect("a country"),
            hit_ref: hit,
            state: super::super::State::Pending,
            officer_id: "fr-officer".into(),
            reason: crate::domain::reason::Reason::new(
                "FR-1",
                "0301 00",
                Some(crate::domain::reason::PersonCategory::Suspect),
                Some(crate::domain::reason::Aim::Identify),
            )
            .expect("a reason"),
            justification: "Needed for the burglary case.".into(),
            offence_description: "Burglary.".into(),
            subject: crate::domain::identity::Identity::from_fields("Muller", "Hans", "1970", &[])
                .expect("an identity"),
            filed_at: 1,
            deadline_at: 2,
            expires_at: 3,
            steps: Vec::new(),
            decision_reason: String::new(),
            core_data: std::collections::BTreeMap::new(),
            record: None,
            quality: None,
        };
        let mut batch = Batch::new();
        batch.put(
            Table::FollowUps,
            key(Direction::Outgoing, &old.id),
            encode(VALUE_FORMAT, &old),
        );
        store.apply(&batch).expect("store");
        let book = Book::new(&store);
        let read = book
            .get(Direction::Outgoing, &"c".repeat(32).parse().expect("an id"))
            .expect("decodes")
            .expect("stored");
        assert_eq!(read.search_request_id, "");
        assert_eq!(read.officer_id, "fr-officer");
        // Indexed on opening, it still holds its hit; saved again, it is written in
        // the new format.
        let country = "DE".parse().expect("a country");
        let held = || book.holding(Direction::Outgoing, country, &hit, None);
        assert!(held().expect("read").is_none(), "not indexed yet");
        assert_eq!(book.index_holds().expect("indexed"), 1);
        assert_eq!(book.index_holds().expect("once"), 0);
        assert!(held().expect("read").is_some());
        assert_eq!(encode_followup(&read)[0], FORMAT_WITH_WITHDRAWAL);

        // Closed, it leaves the index in the same write.
        let mut closed = read;
        closed.state = super::super::State::Withdrawn;
        let effects = Effects {
            save: true,
            outbox: OutboxChange::Keep,
            event: None,
        };
        book.save(&closed, &effects).expect("saved");
        assert!(held().expect("read").is_none());
        assert_eq!(store.scan_prefix(Table::FollowUpHolds, b"").count(), 0);

        // Format 2 held the same fields without `withdrawn_at`: it reads with none,
        // and a time of withdrawal survives a round trip in format 3.
        let format3 = encode_followup(&closed);
        assert_eq!(
            format3.last(),
            Some(&0),
            "withdrawn_at: None, one zero byte"
        );
        let mut format2 = format3[..format3.len() - 1].to_vec();
        format2[0] = FORMAT_WITH_SEARCH;
        assert_eq!(decode_followup(&format2).expect("format 2 reads"), closed);
        closed.withdrawn_at = Some(1_700_000_000);
        let again = decode_followup(&encode_followup(&closed)).expect("format 3 reads");
        assert_eq!(again.withdrawn_at, Some(1_700_000_000));
        assert!(decode_followup(&[9, 0, 0]).is_err(), "an unknown format");
    }
}
