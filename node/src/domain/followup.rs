//! Step 2: follow-up requests, the reviewer's decision, release of core data
//! (DESIGN section 7).
//!
//! A follow-up has the same id on both nodes. The requesting node keeps it as
//! *outgoing*, the owner node as *incoming*. Only the owner decides; a decision travels
//! back through the owner's durable outbox, which holds the released core data until
//! the requesting node acknowledges it, and then forgets it.
//!
//! States: `pending → approved → delivered`, `pending → refused`, `pending → on_hold
//! → approved | refused`, `pending | on_hold → expired | withdrawn`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::identity::{Identity, Record, RecordId},
    domain::pseudonymise::Quality,
    domain::reason::Reason,
    store::{Batch, Store, StoreError, Table},
};

/// Longest justification, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 4000;
/// Longest offence description or decision reason, in bytes.
pub const MAX_TEXT_BYTES: usize = 2000;

/// The state of a follow-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Filed, waiting for a reviewer.
    Pending,
    /// Waiting for judicial authorisation.
    OnHold,
    /// Approved; the core data is on its way.
    Approved,
    /// Approved and the core data acknowledged by the requesting node.
    Delivered,
    /// Refused by a reviewer.
    Refused,
    /// Not decided before its expiry.
    Expired,
    /// Withdrawn by the requesting officer.
    Withdrawn,
}

impl State {
    /// Every state, in the order of the lifecycle.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::OnHold,
        State::Approved,
        State::Delivered,
        State::Refused,
        State::Expired,
        State::Withdrawn,
    ];

    /// Whether a reviewer can still decide.
    pub fn is_open(self) -> bool {
        matches!(self, State::Pending | State::OnHold)
    }

    /// The name used in the CLI and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::OnHold => "on_hold",
            State::Approved => "approved",
            State::Delivered => "delivered",
            State::Refused => "refused",
            State::Expired => "expired",
            State::Withdrawn => "withdrawn",
        }
    }
}

/// Which node filed a follow-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Filed by this node's officer with another node.
    Outgoing,
    /// Filed with this node by a peer.
    Incoming,
}

impl Direction {
    fn prefix(self) -> u8 {
        match self {
            Direction::Outgoing => b'o',
            Direction::Incoming => b'i',
        }
    }
}

/// A reviewer's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Release the core data.
    Approve,
    /// Release nothing.
    Refuse,
    /// Wait for judicial authorisation.
    Hold,
}

/// One reviewer's decision, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The reviewer's id, from their certificate.
    pub reviewer: String,
    /// What they decided.
    pub decision: Decision,
    /// Why.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: i64,
}

/// A follow-up request, as either node keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// The id, the same on both nodes (32 hexadecimal digits).
    pub id: String,
    /// Which node filed it.
    pub direction: Direction,
    /// The other node's country.
    pub country: String,
    /// The hit reference the request is for.
    pub hit_ref: String,
    /// Where it stands.
    pub state: State,
    /// The requesting officer's id.
    pub officer_id: String,
    /// The reason of the query.
    pub reason: Reason,
    /// Why the officer needs the record.
    pub justification: String,
    /// The offence, in the officer's words.
    pub offence_description: String,
    /// The subject as the requesting state knows it.
    pub subject: Identity,
    /// Seconds since the Unix epoch.
    pub filed_at: i64,
    /// When an undecided request becomes overdue.
    pub deadline_at: i64,
    /// When an undecided request closes as expired.
    pub expires_at: i64,
    /// Reviewers' decisions, oldest first (owner node only).
    pub steps: Vec<Step>,
    /// The final decision's reason.
    pub decision_reason: String,
    /// Outgoing, once delivered: the released core data.
    pub core_data: BTreeMap<String, String>,
    /// Incoming: the local record the hit reference resolved to.
    pub record: Option<RecordId>,
    /// Incoming: the quality of the hit.
    pub quality: Option<Quality>,
}

/// Why a follow-up cannot change as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FollowUpError {
    /// The follow-up was filed by this node: only the owner node decides.
    #[error("follow-up {0} was filed by this node; only the node that holds the record decides")]
    OwnRequest(String),
    /// The follow-up is decided, withdrawn or expired already.
    #[error("follow-up {id} is {} and can no longer change", .state.name())]
    Closed {
        /// The follow-up.
        id: String,
        /// Its state.
        state: State,
    },
    /// Four-eyes policy: this reviewer has approved already.
    #[error("follow-up {0} needs a second reviewer: you have approved it already")]
    SameReviewer(String),
}

/// What a reviewer's decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    /// The follow-up reached a final decision (approved or refused).
    Final,
    /// Recorded; the follow-up stays open (a hold, or a first approval under
    /// four-eyes).
    Recorded,
}

impl FollowUp {
    /// Whether the follow-up is undecided past its deadline.
    pub fn overdue(&self, now: i64) -> bool {
        self.state.is_open() && now >= self.deadline_at
    }

    /// Records a reviewer's decision. With `four_eyes`, an approval is final only
    /// once two different reviewers have approved.
    pub fn decide(
        &mut self,
        reviewer: &str,
        decision: Decision,
        reason: &str,
        now: i64,
        four_eyes: bool,
    ) -> Result<Decided, FollowUpError> {
        if self.direction == Direction::Outgoing {
            return Err(FollowUpError::OwnRequest(self.id.clone()));
        }
        self.check_open()?;
        let approved_by_same = self
            .steps
            .iter()
            .any(|s| s.decision == Decision::Approve && s.reviewer == reviewer);
        if decision == Decision::Approve && four_eyes && approved_by_same {
            return Err(FollowUpError::SameReviewer(self.id.clone()));
        }
        let earlier_approvers = self
            .steps
            .iter()
            .filter(|s| s.decision == Decision::Approve)
            .count();
        self.steps.push(Step {
            reviewer: reviewer.to_owned(),
            decision,
            reason: reason.to_owned(),
            at: now,
        });
        let outcome = match decision {
            Decision::Hold => {
                self.state = State::OnHold;
                Decided::Recorded
            }
            Decision::Refuse => {
                self.state = State::Refused;
                Decided::Final
            }
            Decision::Approve if four_eyes && earlier_approvers == 0 => Decided::Recorded,
            Decision::Approve => {
                self.state = State::Approved;
                Decided::Final
            }
        };
        if outcome == Decided::Final {
            self.decision_reason = reason.to_owned();
        }
        Ok(outcome)
    }

    /// Withdraws an undecided follow-up.
    pub fn withdraw(&mut self) -> Result<(), FollowUpError> {
        self.check_open()?;
        self.state = State::Withdrawn;
        Ok(())
    }

    fn check_open(&self) -> Result<(), FollowUpError> {
        if self.state.is_open() {
            Ok(())
        } else {
            Err(FollowUpError::Closed {
                id: self.id.clone(),
                state: self.state,
            })
        }
    }
}

/// The core data of a record under a release policy: the named fields that the
/// record has, and nothing else. Field names are the interchange format's columns.
pub fn release(record: &Record, fields: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for field in fields {
        let value = match field.as_str() {
            "record_id" => Some(record.id.to_string()),
            "family_name" => Some(record.identity.name.family.clone()),
            "given_names" => Some(record.identity.name.given.clone()),
            "date_of_birth" => Some(record.identity.date_of_birth.to_string()),
            "sex" => record.sex.map(|s| s.code().to_owned()),
            "place_of_birth" => record.place_of_birth.clone(),
            "nationalities" => Some(record.nationalities.join(";")).filter(|s| !s.is_empty()),
            "aliases" => Some(
                record
                    .identity
                    .aliases
                    .iter()
                    .map(|a| format!("{},{}", a.family, a.given))
                    .collect::<Vec<_>>()
                    .join(";"),
            )
            .filter(|s| !s.is_empty()),
            other => record.payload.get(other).cloned(),
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.insert(field.clone(), value);
        }
    }
    out
}

/// A decision waiting in the owner's outbox until the requesting node acknowledges
/// it. Holds the released core data; deleted on acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The follow-up.
    pub id: String,
    /// The requesting node.
    pub country: String,
    /// Approved, refused or expired.
    pub state: State,
    /// The decision's reason.
    pub reason: String,
    /// Released core data (approved only).
    pub core_data: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub decided_at: i64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Seconds since the Unix epoch: the next attempt is due.
    pub next_attempt: i64,
}

/// What a requesting node remembers of a hit its officer received in a search, so
/// a follow-up can name the subject as the requesting state knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedHit {
    /// The owner node.
    pub country: String,
    /// The hit's quality.
    pub quality: Quality,
    /// When the owner stops resolving the reference.
    pub expires_at: i64,
    /// The searched subject.
    pub subject: Identity,
    /// The search's request id.
    pub request_id: String,
}

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

fn key(direction: Direction, id: &str) -> Vec<u8> {
    let mut k = vec![direction.prefix()];
    k.extend_from_slice(id.as_bytes());
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
    pub fn get(&self, direction: Direction, id: &str) -> Result<Option<FollowUp>, StoreError> {
        self.store
            .get(Table::FollowUps, &key(direction, id))?
            .map(|v| decode("follow_ups", &v))
            .transpose()
    }

    /// Every follow-up of one direction, oldest first.
    pub fn list(&self, direction: Direction) -> Result<Vec<FollowUp>, StoreError> {
        let mut all = self
            .store
            .scan_prefix(Table::FollowUps, &[direction.prefix()])
            .map(|e| decode("follow_ups", &e?.value))
            .collect::<Result<Vec<FollowUp>, StoreError>>()?;
        all.sort_by(|a, b| a.filed_at.cmp(&b.filed_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Stores a follow-up, and in the same durable batch puts or removes its outbox
    /// entry.
    pub fn save(&self, followup: &FollowUp, outbox: OutboxChange<'_>) -> Result<(), StoreError> {
        self.store.apply(&Book::batch(followup, outbox))
    }

    /// The durable batch that [`Book::save`] applies, for a caller that adds the
    /// step's audit event to it.
    pub fn batch(followup: &FollowUp, outbox: OutboxChange<'_>) -> Batch {
        let mut batch = Batch::new();
        batch.put(
            Table::FollowUps,
            key(followup.direction, &followup.id),
            encode(followup),
        );
        match outbox {
            OutboxChange::Keep => {}
            OutboxChange::Put(entry) => {
                batch.put(Table::Outbox, entry.id.as_bytes().to_vec(), encode(entry))
            }
            OutboxChange::Remove => batch.delete(Table::Outbox, followup.id.as_bytes().to_vec()),
        }
        batch
    }

    /// Every outbox entry.
    pub fn outbox(&self) -> Result<Vec<Outgoing>, StoreError> {
        self.store
            .scan_prefix(Table::Outbox, b"")
            .map(|e| decode("outbox", &e?.value))
            .collect()
    }

    /// One outbox entry.
    pub fn outbox_entry(&self, id: &str) -> Result<Option<Outgoing>, StoreError> {
        self.store
            .get(Table::Outbox, id.as_bytes())?
            .map(|v| decode("outbox", &v))
            .transpose()
    }

    /// Replaces an outbox entry (a new attempt time).
    pub fn reschedule(&self, entry: &Outgoing) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(Table::Outbox, entry.id.as_bytes().to_vec(), encode(entry));
        self.store.apply(&batch)
    }

    /// Remembers hits received in a search.
    pub fn remember_hits(&self, hits: &[(String, ReceivedHit)]) -> Result<(), StoreError> {
        if hits.is_empty() {
            return Ok(());
        }
        // Relaxed: a search does not wait for the disk; a hit lost in a crash only
        // means searching again before filing a follow-up.
        let mut batch = Batch::relaxed();
        for (hit_ref, hit) in hits {
            batch.put(
                Table::ReceivedHits,
                hit_ref.as_bytes().to_vec(),
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
    pub fn received_hit(&self, hit_ref: &str) -> Result<Option<ReceivedHit>, StoreError> {
        self.store
            .get(Table::ReceivedHits, hit_ref.as_bytes())?
            .map(|v| decode("received_hits", &v))
            .transpose()
    }
}

/// What [`Book::save`] does to the follow-up's outbox entry.
#[derive(Clone, Copy, Debug)]
pub enum OutboxChange<'a> {
    /// Leave it.
    Keep,
    /// Put this entry.
    Put(&'a Outgoing),
    /// Delete it (delivered).
    Remove,
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
    use crate::domain::reason::{Aim, PersonCategory};

    fn incoming() -> FollowUp {
        FollowUp {
            id: "a".repeat(32),
            direction: Direction::Incoming,
            country: "FR".into(),
            hit_ref: "0".repeat(40),
            state: State::Pending,
            officer_id: "officer-1".into(),
            reason: Reason {
                case_reference: "C-1".into(),
                offence_category: "0101".into(),
                person_category: PersonCategory::Suspect,
                aim: Aim::Identify,
            },
            justification: "j".into(),
            offence_description: "o".into(),
            subject: Identity::from_fields("Muller", "Hans", "1970-05-12", &[]).expect("valid"),
            filed_at: 100,
            deadline_at: 200,
            expires_at: 300,
            steps: vec![],
            decision_reason: String::new(),
            core_data: BTreeMap::new(),
            record: None,
            quality: None,
        }
    }

    #[test]
    fn four_eyes_needs_two_different_reviewers() {
        let mut f = incoming();
        assert_eq!(
            f.decide("r1", Decision::Approve, "ok", 150, true),
            Ok(Decided::Recorded)
        );
        assert_eq!(f.state, State::Pending);
        assert_eq!(
            f.decide("r1", Decision::Approve, "ok", 151, true),
            Err(FollowUpError::SameReviewer(f.id.clone()))
        );
        assert_eq!(
            f.decide("r2", Decision::Approve, "ok too", 152, true),
            Ok(Decided::Final)
        );
        assert_eq!(f.state, State::Approved);
        assert_eq!(f.decision_reason, "ok too");
    }

    #[test]
    fn hold_then_decide_and_closed_requests_stay_closed() {
        let mut f = incoming();
        assert_eq!(
            f.decide("r1", Decision::Hold, "judge", 150, false),
            Ok(Decided::Recorded)
        );
        assert_eq!(f.state, State::OnHold);
        assert!(f.overdue(250));
        assert_eq!(
            f.decide("r1", Decision::Refuse, "no", 151, false),
            Ok(Decided::Final)
        );
        assert_eq!(f.state, State::Refused);
        assert!(!f.overdue(250));
        assert!(matches!(
            f.decide("r2", Decision::Approve, "late", 152, false),
            Err(FollowUpError::Closed {
                state: State::Refused,
                ..
            })
        ));
        assert!(f.withdraw().is_err());
    }

    #[test]
    fn requests_filed_here_cannot_be_decided_here() {
        let mut f = incoming();
        f.direction = Direction::Outgoing;
        assert_eq!(
            f.decide("r1", Decision::Approve, "ok", 150, false),
            Err(FollowUpError::OwnRequest(f.id.clone()))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        assert_eq!(backoff(0, 300), 1);
        assert_eq!(backoff(3, 300), 8);
        assert_eq!(backoff(20, 300), 300);
        assert_eq!(backoff(200, 300), 300);
    }

    #[test]
    fn received_hits_are_forgotten_once_expired() {
        let dir = tempfile::tempdir().expect("tmp");
        let opened = crate::store::open(
            dir.path(),
            "FR".parse().expect("cc"),
            &crate::secret::DataKey::from_bytes([1; 32]),
        )
        .expect("store");
        let book = Book::new(opened.store.as_ref());
        let hit = |expires_at| ReceivedHit {
            country: "DE".into(),
            quality: Quality::Exact,
            expires_at,
            subject: incoming().subject,
            request_id: "r".into(),
        };
        book.remember_hits(&[("a".repeat(40), hit(100)), ("b".repeat(40), hit(300))])
            .expect("remember");
        assert_eq!(book.prune_received_hits(50).expect("prune"), 0);
        assert_eq!(book.prune_received_hits(200).expect("prune"), 1);
        assert!(book.received_hit(&"a".repeat(40)).expect("get").is_none());
        assert!(book.received_hit(&"b".repeat(40)).expect("get").is_some());
    }
}
