//! The requesting side of the state machine: a request the owner acknowledged, its
//! decision arriving, a withdrawal, an owner that never answers, a hold.

use std::collections::BTreeMap;

use super::{
    Decision, DecisionNotice, Direction, Effects, Filing, FollowUp, OutboxChange, Receipt,
    ReceivedHit, State, Step,
};
use crate::domain::audit::Checkpoint;

impl FollowUp {
    /// A request this node's officer filed (`filing`, for `hit`, received in one of
    /// this node's searches) and the owner acknowledged with `receipt`: a new
    /// outgoing follow-up. It starts pending or on hold as the owner says; a request
    /// the owner already decided (its answer was lost, and it was decided meanwhile)
    /// starts pending too, since the decision, with its reason and any released data,
    /// comes through the owner's outbox and applies only to an open request.
    pub fn requested(
        filing: Filing,
        hit: &ReceivedHit,
        receipt: Receipt,
        now: i64,
    ) -> (FollowUp, Effects) {
        let f = FollowUp {
            id: filing.id,
            direction: Direction::Outgoing,
            country: hit.country,
            hit_ref: filing.hit_ref,
            search_request_id: hit.request_id.clone(),
            state: if receipt.state.is_open() {
                receipt.state
            } else {
                State::Pending
            },
            officer_id: filing.officer_id,
            reason: filing.reason,
            justification: filing.justification,
            offence_description: filing.offence_description,
            subject: filing.subject,
            filed_at: now,
            deadline_at: receipt.deadline_at,
            expires_at: receipt.expires_at,
            steps: Vec::new(),
            decision_reason: String::new(),
            core_data: BTreeMap::new(),
            record: None,
            quality: Some(hit.quality),
            withdrawn_at: None,
        };
        let event = f.event(
            "followup.requested",
            serde_json::json!({
                "officer": f.officer_id,
                "reason": f.reason.audit_fields(),
            }),
        );
        let effects = Effects {
            save: true,
            outbox: OutboxChange::Keep,
            event,
        };
        (f, effects)
    }

    /// The owner's decision arrives, or its hold. A final decision stands over what
    /// this node concluded alone (a withdrawal the owner had not yet seen, or an
    /// expiry while it was unreachable); a hold applies to an open request. News
    /// sent again (its acknowledgement was lost) changes nothing and is recorded
    /// again.
    pub fn receive_decision(&mut self, notice: DecisionNotice) -> Effects {
        let peer_head = notice.audit_head.as_ref().map(Checkpoint::fields);
        let concluded_alone = self.state == State::Withdrawn
            || (self.state == State::Expired && notice.state != State::Expired);
        let outgoing = self.direction == Direction::Outgoing;
        let decision = match notice.state {
            State::OnHold => Some(Decision::Hold),
            State::Approved => Some(Decision::Approve),
            State::Refused => Some(Decision::Refuse),
            _ => None,
        };
        // The owner's steps as this node learns them: who (the owner; its reviewer's
        // id stays there), what, why and when.
        let step = decision.map(|decision| Step {
            reviewer: String::new(),
            decision,
            reason: notice.reason.clone(),
            at: notice.decided_at,
        });
        let applies = match notice.state {
            State::OnHold => {
                outgoing
                    && self.state.is_open()
                    && !step.as_ref().is_some_and(|s| self.steps.contains(s))
            }
            State::Approved | State::Refused | State::Expired => {
                outgoing && (self.state.is_open() || concluded_alone)
            }
            _ => false,
        };
        if applies {
            self.state = match notice.state {
                State::Approved => State::Delivered,
                other => other,
            };
            self.steps.extend(step);
            if notice.state != State::OnHold {
                self.decision_reason = notice.reason;
                self.core_data = notice.core_data;
            }
        }
        let event = self.event(
            "followup.decision_received",
            serde_json::json!({
                "state": self.state.name(),
                "released_fields": self.core_data.keys().collect::<Vec<_>>(),
                "peer_audit_head": peer_head,
            }),
        );
        Effects {
            save: applies,
            outbox: OutboxChange::Keep,
            event,
        }
    }

    /// The officer withdrew the request and the owner answered with its state
    /// (`owner_state`): withdrawn there at `now`, or decided in the meantime (the
    /// decision itself comes through the owner's outbox).
    pub fn withdraw_outgoing(&mut self, owner_state: Option<State>, now: i64) -> Effects {
        let save = self.direction == Direction::Outgoing
            && owner_state == Some(State::Withdrawn)
            && self.state.is_open();
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

    /// Closes an outgoing request whose owner has reported nothing `grace` seconds
    /// after its expiry (the owner is down or gone; a decision it sends later still
    /// counts). None when there is nothing to close.
    pub fn close_unanswered(&mut self, now: i64, grace: i64) -> Option<Effects> {
        if self.direction != Direction::Outgoing
            || !self.state.is_open()
            || now < self.expires_at.saturating_add(grace)
        {
            return None;
        }
        self.state = State::Expired;
        self.decision_reason =
            "the owner node reported no decision before the request expired".into();
        Some(Effects {
            save: true,
            outbox: OutboxChange::Keep,
            event: None,
        })
    }

    /// The owner reports an open request's state (a hold shows here at once); None
    /// when nothing changes. Decisions arrive through the owner's outbox.
    pub fn follow_owner(&mut self, owner_state: State) -> Option<Effects> {
        let changes = self.direction == Direction::Outgoing
            && self.state.is_open()
            && owner_state.is_open()
            && self.state != owner_state;
        if !changes {
            return None;
        }
        self.state = owner_state;
        Some(Effects {
            save: true,
            outbox: OutboxChange::Keep,
            event: None,
        })
    }
}
