//! The owner's side of the state machine: a filing, a reviewer's decision, a
//! withdrawal, a delivery, an expiry.

use std::collections::BTreeMap;

use super::{
    Deadlines, Decision, Direction, Effects, Filing, FollowUp, FollowUpError, OutboxChange,
    OutboxEntry, Policy, State, Step,
};
use crate::domain::{
    audit::{Checkpoint, Event},
    hitref::IssuedHit,
    identity::Record,
    principals::Country,
};

impl FollowUp {
    /// A peer's filing for a hit reference this node issued to it (`issued`): a new
    /// pending incoming request.
    pub fn filed(
        filing: Filing,
        peer: Country,
        issued: &IssuedHit,
        now: i64,
        deadlines: Deadlines,
    ) -> (FollowUp, Effects) {
        let peer_head = filing.audit_head;
        let f = FollowUp {
            id: filing.id,
            direction: Direction::Incoming,
            country: peer,
            hit_ref: filing.hit_ref,
            search_request_id: issued.request_id.clone(),
            state: State::Pending,
            officer_id: filing.officer_id,
            reason: filing.reason,
            justification: filing.justification,
            offence_description: filing.offence_description,
            subject: filing.subject,
            filed_at: now,
            deadline_at: now + deadlines.decide_within,
            expires_at: now + deadlines.expire_after,
            steps: Vec::new(),
            decision_reason: String::new(),
            core_data: BTreeMap::new(),
            record: Some(issued.record.clone()),
            quality: Some(issued.quality),
            withdrawn_at: None,
        };
        let event = f.event(
            "followup.filed",
            serde_json::json!({
                "officer": f.officer_id,
                "reason": f.reason.audit_fields(),
                "quality": issued.quality.name(),
                "peer_audit_head": peer_head.as_ref().map(Checkpoint::fields),
            }),
        );
        let effects = Effects {
            save: true,
            outbox: OutboxChange::Keep,
            event,
        };
        (f, effects)
    }

    /// Records a reviewer's decision. With `four_eyes`, an approval is final only
    /// once two different reviewers have approved. A final decision puts the news in
    /// the outbox, with the core data of `record` that `release_fields` names when it
    /// is an approval; approving needs the record still stored.
    pub fn decide(
        &mut self,
        reviewer: &str,
        decision: Decision,
        reason: &str,
        now: i64,
        record: Option<&Record>,
        policy: Policy<'_>,
    ) -> Result<Effects, FollowUpError> {
        let Policy {
            four_eyes,
            release_fields,
        } = policy;
        if self.direction == Direction::Outgoing {
            return Err(FollowUpError::OwnRequest(self.id.clone()));
        }
        self.check_open()?;
        if decision == Decision::Approve && record.is_none() {
            return Err(FollowUpError::RecordErased);
        }
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
        let last = match decision {
            Decision::Hold => {
                self.state = State::OnHold;
                false
            }
            Decision::Refuse => {
                self.state = State::Refused;
                true
            }
            Decision::Approve if four_eyes && earlier_approvers == 0 => false,
            Decision::Approve => {
                self.state = State::Approved;
                true
            }
        };
        let outbox = if last {
            self.decision_reason = reason.to_owned();
            let core_data = match (self.state, record) {
                (State::Approved, Some(r)) => release(r, release_fields),
                _ => BTreeMap::new(),
            };
            OutboxChange::Put(self.news(reason, core_data, now))
        } else if decision == Decision::Hold {
            // The requesting officer learns of the hold and its reason at once; a
            // final decision replaces the news if it is not delivered yet.
            OutboxChange::Put(self.news(reason, BTreeMap::new(), now))
        } else {
            OutboxChange::Keep
        };
        let released: Vec<&String> = match &outbox {
            OutboxChange::Put(entry) => entry.core_data.keys().collect(),
            _ => Vec::new(),
        };
        let event = self.event(
            "followup.decided",
            serde_json::json!({
                "reviewer": reviewer,
                "decision": decision.name(),
                "state": self.state.name(),
                "released_fields": released,
            }),
        );
        Ok(Effects {
            save: true,
            outbox,
            event,
        })
    }

    /// The outbox entry that tells the requesting node where its request stands: on
    /// hold, or where it ended.
    pub(super) fn news(
        &self,
        reason: &str,
        core_data: BTreeMap<String, String>,
        now: i64,
    ) -> OutboxEntry {
        OutboxEntry {
            id: self.id.clone(),
            country: self.country,
            state: self.state,
            reason: reason.to_owned(),
            core_data,
            decided_at: now,
            attempts: 0,
            next_attempt: now,
        }
    }

    /// The requesting node withdraws its request at `now`. One that came too late
    /// (decided already) changes nothing, and is recorded all the same.
    pub fn withdraw_incoming(&mut self, now: i64) -> Effects {
        let save = self.direction == Direction::Incoming && self.state.is_open();
        if save {
            self.state = State::Withdrawn;
            self.withdrawn_at = Some(now);
        }
        let event = self.event(
            "followup.withdrawn",
            serde_json::json!({ "state": self.state.name() }),
        );
        Effects {
            save,
            outbox: OutboxChange::Keep,
            event,
        }
    }

    /// The requesting node acknowledged the news of `entry`: an approval is now
    /// delivered, and the released data leaves the outbox. With `superseded`, newer
    /// news (a decision after a hold) took the entry's place meanwhile: it stays.
    pub fn delivered(&mut self, entry: &OutboxEntry, superseded: bool) -> Effects {
        if self.direction == Direction::Incoming
            && entry.state == State::Approved
            && self.state == State::Approved
        {
            self.state = State::Delivered;
        }
        // The follow-up's own event form, so it names the search as every other does.
        let event = self.event(
            "followup.delivered",
            serde_json::json!({
                "state": delivered_state(entry.state).name(),
                "released_fields": entry.core_data.keys().collect::<Vec<_>>(),
            }),
        );
        Effects {
            save: true,
            outbox: if superseded {
                OutboxChange::Keep
            } else {
                OutboxChange::Remove
            },
            event,
        }
    }

    /// Closes an undecided incoming request past its expiry and queues the news for
    /// the requesting node. None when there is nothing to close.
    pub fn expire_incoming(&mut self, now: i64) -> Option<Effects> {
        if self.direction != Direction::Incoming || !self.state.is_open() || now < self.expires_at {
            return None;
        }
        self.state = State::Expired;
        Some(Effects {
            save: true,
            outbox: OutboxChange::Put(self.news("", BTreeMap::new(), now)),
            event: None,
        })
    }
}

/// The audit event of a delivered decision whose follow-up is gone (erased with its
/// record); one still stored records [`FollowUp::delivered`]'s.
pub fn delivered_event(entry: &OutboxEntry) -> Option<Event> {
    Some(Event {
        kind: "followup.delivered",
        fields: serde_json::json!({
            "followup": entry.id.as_str(),
            "peer": entry.country.as_str(),
            "state": delivered_state(entry.state).name(),
            "released_fields": entry.core_data.keys().collect::<Vec<_>>(),
        }),
    })
}

/// The state a follow-up is in once the news of `sent` is acknowledged: an approval
/// is delivered; a hold, a refusal or an expiry stays what it is.
fn delivered_state(sent: State) -> State {
    match sent {
        State::Approved => State::Delivered,
        other => other,
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
            // The interchange column; `nationalities` is still read from older
            // configurations.
            "nationality" | "nationalities" => {
                Some(record.nationalities.join(";")).filter(|s| !s.is_empty())
            }
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
