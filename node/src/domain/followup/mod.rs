//! Step 2: follow-up requests, the reviewer's decision, release of core data
//! (DESIGN section 7), as a state machine.
//!
//! A follow-up has the same id on both nodes. The requesting node keeps it as
//! *outgoing*, the owner node as *incoming*. Only the owner decides; a decision travels
//! back through the owner's durable outbox, which holds the released core data until
//! the requesting node acknowledges it, and then forgets it.
//!
//! States: `pending → approved → delivered`, `pending → refused`, `pending → on-hold
//! → approved | refused`, `pending | on-hold → expired | withdrawn`.
//!
//! Every change of state is a method here that checks the change is allowed and
//! returns its [`Effects`]: whether the follow-up is to be stored, what happens to its
//! outbox entry, and the audit event. The application commits them in one batch;
//! nothing outside this module assigns a state.

mod book;
mod owner;
mod requester;

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use book::{Book, backoff};
pub use owner::{delivered_event, release};

use crate::domain::{
    audit::{Checkpoint, Event},
    hitref::HitRef,
    identity::{Identity, RecordId},
    principals::Country,
    pseudonymise::Quality,
    reason::Reason,
};

/// Longest justification, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 4000;
/// Shortest justification, in characters (trimmed): a reviewer must be able to read
/// why the record is needed.
pub const MIN_JUSTIFICATION_CHARS: usize = 20;
/// Shortest reason of a reviewer's decision, in characters (trimmed): the requesting
/// officer and the auditors read why.
pub const MIN_DECISION_REASON_CHARS: usize = 10;
/// Longest offence description or decision reason, in bytes.
pub const MAX_TEXT_BYTES: usize = 2000;
/// Longest officer id, in bytes.
pub const MAX_OFFICER_ID_BYTES: usize = 128;

/// A follow-up's id: 32 lower-case hexadecimal digits, the same on both nodes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FollowUpId(String);

impl FollowUpId {
    /// A fresh random id (128 bits), or None if the system random generator fails.
    pub fn random() -> Option<FollowUpId> {
        random_hex_id().map(FollowUpId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fresh random id of a search or a follow-up: 32 lower-case hexadecimal digits, or
/// None if the system random generator fails.
pub fn random_hex_id() -> Option<String> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl FromStr for FollowUpId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<FollowUpId, &'static str> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("must be 32 lower-case hexadecimal digits");
        }
        Ok(FollowUpId(s.to_owned()))
    }
}

impl fmt::Display for FollowUpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FollowUpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Stored as its text, like the string it replaced.
impl Serialize for FollowUpId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FollowUpId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

    /// Whether a follow-up in this state keeps its hit from another request: one
    /// open, approved or delivered does; a new request only after a refusal, a
    /// withdrawal or an expiry.
    pub fn holds_its_hit(self) -> bool {
        matches!(
            self,
            State::Pending | State::OnHold | State::Approved | State::Delivered
        )
    }

    /// The one spelling of a state: in the CLI's filters and output, its JSON, audit
    /// events and the docs.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::OnHold => "on-hold",
            State::Approved => "approved",
            State::Delivered => "delivered",
            State::Refused => "refused",
            State::Expired => "expired",
            State::Withdrawn => "withdrawn",
        }
    }
}

/// Which node filed a follow-up, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Filed by this node's officer with another node (this node requests).
    Outgoing,
    /// Filed with this node by a peer (this node owns the record and decides).
    Incoming,
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

impl Decision {
    /// The name used in audit events and output.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Refuse => "refuse",
            Decision::Hold => "hold",
        }
    }
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
    /// The id, the same on both nodes.
    pub id: FollowUpId,
    /// Which node filed it.
    pub direction: Direction,
    /// The other node's country.
    pub country: Country,
    /// The hit reference the request is for.
    pub hit_ref: HitRef,
    /// The request id of the search that produced the hit (empty for a follow-up
    /// stored before they were recorded).
    pub search_request_id: String,
    /// Where it stands. Changed only by the methods of [`FollowUp`].
    state: State,
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
    /// When it was withdrawn (None: it was not, or before this was recorded).
    pub withdrawn_at: Option<i64>,
}

/// A peer's follow-up request as the owner node receives it, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filing {
    /// The id the requesting node chose.
    pub id: FollowUpId,
    /// The hit reference this node issued.
    pub hit_ref: HitRef,
    /// The reason of the search that produced the hit.
    pub reason: Reason,
    /// Why the officer needs the record.
    pub justification: String,
    /// The offence, in the officer's words.
    pub offence_description: String,
    /// The subject as the requesting state knows it.
    pub subject: Identity,
    /// The requesting officer's id.
    pub officer_id: String,
    /// The requesting node's audit head as it filed (recorded by the owner).
    pub audit_head: Option<Checkpoint>,
}

/// Where a follow-up stands, as the owner acknowledges a filing, a withdrawal or a
/// poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The follow-up.
    pub id: FollowUpId,
    /// Its state at the owner.
    pub state: State,
    /// When it becomes overdue.
    pub deadline_at: i64,
    /// When it closes as expired.
    pub expires_at: i64,
}

/// A decision as the owner's outbox delivers it to the requesting node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionNotice {
    /// The follow-up.
    pub id: FollowUpId,
    /// Approved, refused or expired.
    pub state: State,
    /// The decision's reason.
    pub reason: String,
    /// Released core data (approved only).
    pub core_data: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub decided_at: i64,
    /// The owner node's audit head as it delivered (recorded by the requester).
    pub audit_head: Option<Checkpoint>,
}

/// A decision waiting in the owner's outbox until the requesting node acknowledges
/// it. Holds the released core data; deleted on acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The follow-up.
    pub id: FollowUpId,
    /// The requesting node.
    pub country: Country,
    /// On hold, approved, refused or expired.
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

impl OutboxEntry {
    /// What the requesting node receives.
    pub fn notice(&self) -> DecisionNotice {
        DecisionNotice {
            id: self.id.clone(),
            state: self.state,
            reason: self.reason.clone(),
            core_data: self.core_data.clone(),
            decided_at: self.decided_at,
            audit_head: None,
        }
    }

    /// A failed attempt: the next one after a doubling wait of at most `max_wait`
    /// seconds.
    pub fn retry_later(&mut self, now: i64, max_wait: i64) {
        self.attempts = self.attempts.saturating_add(1);
        self.next_attempt = now + backoff(self.attempts, max_wait);
    }

    /// Due at once (a poll asked for it).
    pub fn due_now(&mut self, now: i64) {
        self.next_attempt = now;
    }

    /// Whether `other` is the same news (not a newer decision that replaced it). Two
    /// holds can fall in one second (one per reviewer): their reasons tell them apart.
    pub fn same_news(&self, other: &OutboxEntry) -> bool {
        self.id == other.id
            && self.state == other.state
            && self.decided_at == other.decided_at
            && self.reason == other.reason
    }
}

/// A filing the requesting node sent whose answer it has not received: stored before
/// it is sent, forgotten once the owner's answer is stored. If the answer was lost,
/// the owner may hold the request; the next request for the hit asks the owner about
/// this one first, instead of filing a second that the owner would refuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnansweredFiling {
    /// The id the filing carried.
    pub id: FollowUpId,
    /// Why the officer needs the record.
    pub justification: String,
    /// The offence, in the officer's words.
    pub offence_description: String,
    /// The officer who filed it.
    pub officer_id: String,
    /// When the hit's reference expires (then this is forgotten with the hit).
    pub expires_at: i64,
}

impl UnansweredFiling {
    /// The filing it was, for `hit`.
    pub fn filing(&self, hit_ref: HitRef, hit: &ReceivedHit) -> Filing {
        Filing {
            id: self.id.clone(),
            hit_ref,
            reason: hit.reason.clone(),
            justification: self.justification.clone(),
            offence_description: self.offence_description.clone(),
            subject: hit.subject.clone(),
            officer_id: self.officer_id.clone(),
            audit_head: None,
        }
    }
}

/// What a requesting node remembers of a hit its officer received in a search, so
/// a follow-up can name the subject as the requesting state knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedHit {
    /// The owner node.
    pub country: Country,
    /// The hit's quality.
    pub quality: Quality,
    /// When the owner stops resolving the reference.
    pub expires_at: i64,
    /// The searched subject.
    pub subject: Identity,
    /// The search's request id.
    pub request_id: String,
    /// The search's reason, which a follow-up of this hit inherits.
    pub reason: Reason,
}

/// What [`Book::batch`] does to a follow-up's outbox entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxChange {
    /// Leave it.
    Keep,
    /// Put this entry.
    Put(OutboxEntry),
    /// Delete it (delivered).
    Remove,
}

/// What a step asks the application to commit, in one durable batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Effects {
    /// Whether the follow-up changed and is to be stored.
    pub save: bool,
    /// What happens to its outbox entry.
    pub outbox: OutboxChange,
    /// The step's audit event, if it has one of its own.
    pub event: Option<Event>,
}

impl Effects {
    /// Whether the owner's outbox has a decision to deliver after this step.
    pub fn deliver(&self) -> bool {
        matches!(self.outbox, OutboxChange::Put(_))
    }
}

/// Why a follow-up cannot change as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FollowUpError {
    /// The follow-up was filed by this node: only the owner node decides.
    #[error("the follow-up was filed by this node; only the node that holds the record decides")]
    OwnRequest(FollowUpId),
    /// The follow-up is decided, withdrawn or expired already.
    #[error("the follow-up is {} and can no longer change", .state.name())]
    Closed {
        /// The follow-up.
        id: FollowUpId,
        /// Its state.
        state: State,
    },
    /// Four-eyes policy: this reviewer has approved already.
    #[error("the follow-up needs a second reviewer: you have approved it already")]
    SameReviewer(FollowUpId),
    /// The record the request concerns is no longer stored.
    #[error("the record this request concerns has been erased; refuse the request instead")]
    RecordErased,
}

/// The owner's policy for decisions: whether an approval needs two reviewers, and
/// the record fields an approval releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy<'a> {
    /// An approval is final once two different reviewers have approved.
    pub four_eyes: bool,
    /// The core data: the fields released on approval, by interchange column name.
    pub release_fields: &'a [String],
}

/// The owner's policy for new requests: how long a reviewer has, and when an
/// undecided request expires (seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Seconds until an undecided request is overdue.
    pub decide_within: i64,
    /// Seconds until an undecided request expires.
    pub expire_after: i64,
}

impl FollowUp {
    /// Where the follow-up stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the follow-up is undecided past its deadline.
    pub fn overdue(&self, now: i64) -> bool {
        self.state.is_open() && now >= self.deadline_at
    }

    /// The receipt the owner answers with.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            id: self.id.clone(),
            state: self.state,
            deadline_at: self.deadline_at,
            expires_at: self.expires_at,
        }
    }

    fn event(&self, kind: &'static str, mut fields: serde_json::Value) -> Option<Event> {
        if let Some(map) = fields.as_object_mut() {
            map.insert("followup".into(), self.id.as_str().into());
            map.insert("peer".into(), self.country.as_str().into());
            if !self.search_request_id.is_empty() {
                map.insert("search".into(), self.search_request_id.as_str().into());
            }
        }
        Some(Event { kind, fields })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::reason::{Aim, PersonCategory},
        store::memory::MemoryStore,
    };

    fn incoming() -> FollowUp {
        FollowUp {
            id: "a".repeat(32).parse().expect("an id"),
            direction: Direction::Incoming,
            country: "FR".parse().expect("a country"),
            hit_ref: "0".repeat(40).parse().expect("a hit reference"),
            search_request_id: "search-1".into(),
            state: State::Pending,
            officer_id: "officer-1".into(),
            reason: Reason {
                case_reference: "C-1".into(),
                offence_category: "0101 00".into(),
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
            withdrawn_at: None,
        }
    }

    fn record() -> crate::domain::identity::Record {
        crate::domain::identity::Record {
            id: "de-1".try_into().expect("an id"),
            identity: Identity::from_fields("Muller", "Hans", "1970-05-12", &[]).expect("valid"),
            sex: None,
            place_of_birth: None,
            nationalities: Vec::new(),
            payload: BTreeMap::new(),
        }
    }

    const POLICY: Policy<'static> = Policy {
        four_eyes: false,
        release_fields: &[],
    };

    #[test]
    fn hold_then_decide_and_closed_requests_stay_closed() {
        let mut f = incoming();
        let r = record();
        let held = f
            .decide("r1", Decision::Hold, "judge", 150, Some(&r), POLICY)
            .expect("held");
        assert_eq!(f.state(), State::OnHold);
        // Not final, but its news goes to the requesting node with its reason.
        match &held.outbox {
            OutboxChange::Put(news) => {
                assert_eq!((news.state, news.reason.as_str()), (State::OnHold, "judge"));
                assert!(news.core_data.is_empty());
            }
            other => panic!("the hold's news: {other:?}"),
        }
        assert!(f.overdue(250));
        let refused = f
            .decide("r1", Decision::Refuse, "no", 151, None, POLICY)
            .expect("refused without the record");
        assert_eq!(f.state(), State::Refused);
        assert!(refused.deliver());
        assert!(!f.overdue(250));
        assert!(matches!(
            f.decide("r2", Decision::Approve, "late", 152, Some(&r), POLICY),
            Err(FollowUpError::Closed {
                state: State::Refused,
                ..
            })
        ));
        let late = f.withdraw_incoming(160);
        assert!(!late.save, "a late withdrawal changes nothing");
        assert_eq!(f.state(), State::Refused);
        assert!(f.expire_incoming(1000).is_none());
    }

    #[test]
    fn a_withdrawal_records_when_it_happened() {
        let mut f = incoming();
        assert!(f.withdraw_incoming(150).save);
        assert_eq!(f.state(), State::Withdrawn);
        assert_eq!(f.withdrawn_at, Some(150));
        assert!(!f.withdraw_incoming(160).save);
        assert_eq!(
            f.withdrawn_at,
            Some(150),
            "the first withdrawal's time stays"
        );

        let mut f = incoming();
        f.direction = Direction::Outgoing;
        assert!(!f.withdraw_outgoing(Some(State::Approved), 170).save);
        assert_eq!(f.withdrawn_at, None, "decided at the owner meanwhile");
        assert!(f.withdraw_outgoing(Some(State::Withdrawn), 180).save);
        assert_eq!(f.withdrawn_at, Some(180));
    }

    #[test]
    fn an_approval_needs_the_record_and_requests_filed_here_cannot_be_decided_here() {
        let mut f = incoming();
        assert_eq!(
            f.decide("r1", Decision::Approve, "ok", 150, None, POLICY),
            Err(FollowUpError::RecordErased)
        );
        f.direction = Direction::Outgoing;
        assert_eq!(
            f.decide("r1", Decision::Approve, "ok", 150, Some(&record()), POLICY),
            Err(FollowUpError::OwnRequest(f.id.clone()))
        );
    }

    #[test]
    fn a_requester_follows_holds_but_not_decisions_from_a_poll() {
        let mut f = incoming();
        f.direction = Direction::Outgoing;
        assert!(f.follow_owner(State::OnHold).is_some());
        assert_eq!(f.state(), State::OnHold);
        assert!(
            f.follow_owner(State::Approved).is_none(),
            "decisions come by the outbox"
        );
        assert_eq!(f.state(), State::OnHold);
    }

    #[test]
    fn release_names_fields_by_their_interchange_columns() {
        let mut r = record();
        r.nationalities = vec!["DE".into(), "AT".into()];
        r.payload
            .insert("offence_category".into(), "0401 00".into());
        r.payload.insert("notes".into(), "not released".into());
        let fields = [
            "record_id",
            "nationality",
            "nationalities",
            "sex",
            "offence_category",
        ]
        .map(String::from);
        let released = release(&r, &fields);
        assert_eq!(
            released,
            BTreeMap::from([
                ("record_id".to_owned(), "de-1".to_owned()),
                ("nationality".to_owned(), "DE;AT".to_owned()),
                ("nationalities".to_owned(), "DE;AT".to_owned()),
                ("offence_category".to_owned(), "0401 00".to_owned()),
            ]),
            "an empty sex is left out; unnamed columns stay"
        );
    }

    #[test]
    fn a_requester_learns_of_a_hold_once_then_of_the_decision() {
        let mut f = incoming();
        f.direction = Direction::Outgoing;
        let id = f.id.clone();
        let notice = |state, reason: &str, at| DecisionNotice {
            id: id.clone(),
            state,
            reason: reason.into(),
            core_data: BTreeMap::new(),
            decided_at: at,
            audit_head: None,
        };
        let hold = notice(State::OnHold, "Awaiting the prosecutor.", 150);
        assert!(f.receive_decision(hold.clone()).save);
        assert_eq!(f.state(), State::OnHold);
        assert!(!f.receive_decision(hold).save, "the same hold twice");
        let mut approval = notice(State::Approved, "Checked.", 160);
        approval.core_data = BTreeMap::from([("family_name".to_owned(), "Muller".to_owned())]);
        assert!(f.receive_decision(approval).save);
        assert_eq!(f.state(), State::Delivered);
        let steps: Vec<_> = f
            .steps
            .iter()
            .map(|s| (s.decision, s.reason.as_str(), s.at))
            .collect();
        assert_eq!(
            steps,
            [
                (Decision::Hold, "Awaiting the prosecutor.", 150),
                (Decision::Approve, "Checked.", 160)
            ]
        );
        assert_eq!(f.decision_reason, "Checked.");
        // A hold arriving after the decision changes nothing.
        let late = f.receive_decision(notice(State::OnHold, "Late.", 155));
        assert!(!late.save);
        assert_eq!(f.state(), State::Delivered);
    }

    #[test]
    fn a_recovered_filing_the_owner_decided_meanwhile_takes_the_decision_from_the_outbox() {
        let hit = ReceivedHit {
            country: "DE".parse().expect("a country"),
            quality: Quality::Exact,
            expires_at: 1000,
            subject: incoming().subject,
            request_id: "search-1".into(),
            reason: incoming().reason,
        };
        let lost = UnansweredFiling {
            id: "b".repeat(32).parse().expect("an id"),
            justification: "Needed for the burglary case.".into(),
            offence_description: "Burglary.".into(),
            officer_id: "officer-1".into(),
            expires_at: 1000,
        };
        let hit_ref: HitRef = "a".repeat(40).parse().expect("a hit reference");
        // The owner approved it before the officer asked again.
        let receipt = Receipt {
            id: lost.id.clone(),
            state: State::Approved,
            deadline_at: 200,
            expires_at: 300,
        };
        let (mut f, _) = FollowUp::requested(lost.filing(hit_ref, &hit), &hit, receipt, 150);
        assert_eq!(f.state(), State::Pending, "open until the decision arrives");
        let approval = DecisionNotice {
            id: lost.id.clone(),
            state: State::Approved,
            reason: "Proportionate to the case.".into(),
            core_data: BTreeMap::from([("family_name".to_owned(), "Muller".to_owned())]),
            decided_at: 140,
            audit_head: None,
        };
        assert!(f.receive_decision(approval).save);
        assert_eq!(f.state(), State::Delivered);
        assert_eq!(f.core_data["family_name"], "Muller");
        assert_eq!(f.decision_reason, "Proportionate to the case.");
    }

    #[test]
    fn two_holds_in_one_second_are_different_news() {
        let f = incoming();
        let first = f.news("Awaiting the prosecutor.", BTreeMap::new(), 150);
        let second = f.news("Awaiting the judge as well.", BTreeMap::new(), 150);
        assert!(first.same_news(&first.clone()));
        assert!(
            !first.same_news(&second),
            "the second hold replaced the first"
        );
    }

    #[test]
    fn ids_are_32_hexadecimal_digits() {
        assert!("a".repeat(32).parse::<FollowUpId>().is_ok());
        assert!("A".repeat(32).parse::<FollowUpId>().is_err());
        assert!("a".repeat(31).parse::<FollowUpId>().is_err());
        let id = FollowUpId::random().expect("random");
        assert_eq!(id.as_str().parse::<FollowUpId>(), Ok(id));
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
        let store = MemoryStore::new();
        let book = Book::new(&store);
        let hit = |expires_at| ReceivedHit {
            country: "DE".parse().expect("a country"),
            quality: Quality::Exact,
            expires_at,
            subject: incoming().subject,
            request_id: "r".into(),
            reason: incoming().reason,
        };
        let a: HitRef = "a".repeat(40).parse().expect("a hit reference");
        let b: HitRef = "b".repeat(40).parse().expect("a hit reference");
        book.remember_hits(&[(a, hit(100)), (b, hit(300))])
            .expect("remember");
        assert_eq!(book.prune_received_hits(50).expect("prune"), 0);
        assert_eq!(book.prune_received_hits(200).expect("prune"), 1);
        assert!(book.received_hit(&a).expect("get").is_none());
        assert!(book.received_hit(&b).expect("get").is_some());
    }
}
