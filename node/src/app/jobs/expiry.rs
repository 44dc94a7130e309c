//! Closing undecided follow-ups past their expiry: on the owner, with news for the
//! requesting node in the outbox; on the requester, when the owner stayed silent.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        audit::Event,
        followup::{Book, Direction},
    },
    store::{Batch, StoreError},
};

/// Closes undecided incoming requests past their expiry and queues the news for the
/// requesting node; closes this node's own requests whose owner has reported nothing
/// `grace` seconds after their expiry. One audit event counts them.
pub async fn expire(state: &Arc<NodeState>, now: i64, grace: i64) {
    let swept = events::followup_work(state, move |state| {
        let (closed, silent) = sweep(state, now, grace)?;
        if closed + silent > 0 {
            tracing::info!(closed, silent, "undecided follow-ups expired");
            let event = Event::new(
                "followup.expired",
                serde_json::json!({ "closed": closed, "owner_silent": silent }),
            );
            if let Err(e) = events::commit(state, Batch::new(), &event) {
                tracing::error!(error = %e, "cannot record an audit event");
            }
        }
        Ok::<_, AppError>(())
    })
    .await;
    if let Err(e) = swept {
        tracing::error!(error = %e, "cannot close expired follow-ups");
    }
}

/// The sweep itself: returns how many incoming requests closed, and how many of this
/// node's own.
pub fn sweep(state: &NodeState, now: i64, grace: i64) -> Result<(usize, usize), StoreError> {
    let book = Book::new(state.store.as_ref());
    let mut silent = 0;
    for mut f in book.list(Direction::Outgoing)? {
        if let Some(effects) = f.close_unanswered(now, grace) {
            book.save(&f, &effects)?;
            silent += 1;
        }
    }
    let mut closed = 0;
    for mut f in book.list(Direction::Incoming)? {
        if let Some(effects) = f.expire_incoming(now) {
            book.save(&f, &effects)?;
            closed += 1;
        }
    }
    Ok((closed, silent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::testkit::{Behaviour, FakePeers, audit_kinds, cc, node_with},
        domain::{
            followup::{Deadlines, Filing, FollowUp, FollowUpId, Receipt, State},
            hitref::IssuedHit,
            identity::RecordId,
            pseudonymise::Quality,
        },
        store::unix_now,
    };

    #[tokio::test]
    async fn the_sweep_closes_what_expired_on_both_sides() {
        let node = node_with(
            "DE",
            FakePeers::new(&[(
                "FR",
                Behaviour::Answers {
                    hits: Vec::new(),
                    state: State::Pending,
                },
            )]),
            |_| {},
        );
        let now = unix_now();
        let issued = IssuedHit {
            record: RecordId::try_from("de-1").expect("id"),
            country: cc("FR"),
            expires_at: now + 3600,
            quality: Quality::Exact,
            request_id: "search-1".into(),
            reason: Some(crate::app::testkit::reason()),
        };
        let filing = Filing {
            id: FollowUpId::random().expect("an id"),
            hit_ref: "34".repeat(20).parse().expect("a hit reference"),
            reason: crate::app::testkit::reason(),
            justification: "j".into(),
            offence_description: "o".into(),
            subject: crate::app::testkit::mueller("x").identity,
            officer_id: "fr-officer".into(),
            audit_head: None,
        };
        let deadlines = Deadlines {
            decide_within: 10,
            expire_after: 20,
        };
        let (incoming, effects) = FollowUp::filed(filing, cc("FR"), &issued, now, deadlines);
        let book = Book::new(node.state.store.as_ref());
        book.save(&incoming, &effects).expect("stored");

        expire(&node.state, now + 19, 0).await;
        let still = book
            .get(Direction::Incoming, &incoming.id)
            .expect("read")
            .expect("stored");
        assert_eq!(still.state(), State::Pending, "not yet");
        assert!(still.overdue(now + 19));

        expire(&node.state, now + 20, 0).await;
        let closed = book
            .get(Direction::Incoming, &incoming.id)
            .expect("read")
            .expect("stored");
        assert_eq!(closed.state(), State::Expired);
        let outbox = book.outbox().expect("read");
        assert_eq!(outbox.len(), 1, "the requester is told");
        assert_eq!(outbox[0].state, State::Expired);
        assert!(outbox[0].core_data.is_empty());
        assert_eq!(audit_kinds(&node), ["followup.expired"]);

        // This node's own request, whose owner never answers: closed `grace` seconds
        // after its expiry.
        let receipt = Receipt {
            id: FollowUpId::random().expect("an id"),
            state: State::Pending,
            deadline_at: now + 10,
            expires_at: now + 20,
        };
        let own_filing = Filing {
            id: receipt.id.clone(),
            hit_ref: "56".repeat(20).parse().expect("a hit reference"),
            reason: crate::app::testkit::reason(),
            justification: "j".into(),
            offence_description: "o".into(),
            subject: crate::app::testkit::mueller("x").identity,
            officer_id: "de-officer".into(),
            audit_head: None,
        };
        let hit = crate::domain::followup::ReceivedHit {
            country: cc("FR"),
            quality: Quality::Weak,
            expires_at: now + 3600,
            subject: own_filing.subject.clone(),
            request_id: "search-2".into(),
            reason: own_filing.reason.clone(),
        };
        let (outgoing, effects) = FollowUp::requested(own_filing, &hit, receipt, now);
        book.save(&outgoing, &effects).expect("stored");
        expire(&node.state, now + 24, 5).await;
        let waiting = book
            .get(Direction::Outgoing, &outgoing.id)
            .expect("read")
            .expect("stored");
        assert_eq!(waiting.state(), State::Pending, "within the grace");
        expire(&node.state, now + 25, 5).await;
        let closed = book
            .get(Direction::Outgoing, &outgoing.id)
            .expect("read")
            .expect("stored");
        assert_eq!(closed.state(), State::Expired);
        assert!(closed.decision_reason.contains("no decision"));
        assert_eq!(audit_kinds(&node), ["followup.expired", "followup.expired"]);
    }
}
