//! Step 2 on the owner node, the one holding the record: a peer files a request for a
//! hit reference this node issued to it, withdraws it or polls it, and a reviewer
//! here decides. A final decision, its outbox entry (with the released core data when
//! approved) and its audit event are one durable write; the outbox job delivers it.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        followup::{
            Book, Deadlines, Decision, Direction, Filing, FollowUp, FollowUpError, FollowUpId,
            Policy, Receipt,
        },
        hitref::{self, HitRefError},
        identity::Record,
        principals::Country,
    },
    store::{StoreError, unix_now},
};

/// Most request ids in one poll.
pub const MAX_POLL_IDS: usize = 1000;

/// A peer files a follow-up: the hit reference must resolve for that peer; the
/// request is stored durably, then acknowledged. Filing the same id again returns its
/// state.
pub async fn file(
    state: &Arc<NodeState>,
    peer: Country,
    filing: Filing,
) -> Result<Receipt, AppError> {
    let config = &state.config.followup;
    let deadlines = Deadlines {
        decide_within: config.decision_deadline.as_secs() as i64,
        expire_after: config.expiry.as_secs() as i64,
    };
    let now = unix_now();
    let stored = events::followup_work(state, move |state| {
        let store = state.store.as_ref();
        let book = Book::new(store);
        if let Some(existing) = book.get(Direction::Incoming, &filing.id)? {
            return Ok(Ok(existing));
        }
        let issued = match hitref::resolve(store, &filing.hit_ref, peer, now)? {
            Ok(issued) => issued,
            Err(e) => return Ok(Err(Refusal::HitRef(e))),
        };
        match &issued.reason {
            None => return Ok(Err(Refusal::ReasonUnknown)),
            Some(reason) if *reason != filing.reason => return Ok(Err(Refusal::OtherReason)),
            Some(_) => {}
        }
        // One request per record, peer and case: a new search's fresh reference to the
        // same record does not open a second one in the case.
        if let Some(holding) = book.holding(
            Direction::Incoming,
            peer,
            &filing.hit_ref,
            Some((&issued.record, &filing.reason.case_reference)),
        )? {
            return Ok(Err(Refusal::Held(Box::new(holding))));
        }
        let (f, effects) = FollowUp::filed(filing, peer, &issued, now, deadlines);
        commit(state, &f, &effects)?;
        Ok(Ok(f))
    })
    .await?;
    let stored = match stored {
        Ok(f) => Ok(f),
        Err(Refusal::HitRef(e)) => Err(e),
        Err(Refusal::ReasonUnknown) => {
            return Err(AppError::FailedPrecondition(
                "field `hit_ref`: the reference was issued before hits kept their search's reason; search again".into(),
            ));
        }
        Err(Refusal::OtherReason) => {
            return Err(AppError::Invalid(
                "field `reason`: not the reason of the search that produced this hit; a follow-up carries its search's reason".into(),
            ));
        }
        Err(Refusal::Held(f)) => return Err(crate::app::requester::already_requested(&f)),
    };
    match stored {
        Ok(f) if f.country != peer => Err(AppError::AlreadyExists(
            "field `request_id`: this id is taken; choose another".into(),
        )),
        Ok(f) => {
            tracing::info!(peer = %peer, followup = %f.id, state = f.state().name(), "follow-up filed");
            Ok(f.receipt())
        }
        // Unknown and another country's reference look the same to the caller.
        Err(HitRefError::Unknown | HitRefError::OtherCountry) => Err(AppError::NotFound(format!(
            "field `hit_ref`: no hit reference of this node was issued to {peer} under this value"
        ))),
        Err(HitRefError::Expired) => Err(AppError::FailedPrecondition(
            "field `hit_ref`: the hit reference has expired; search again".into(),
        )),
    }
}

/// Why a filing is refused once its id is new.
enum Refusal {
    HitRef(HitRefError),
    /// The reference predates references keeping their reason.
    ReasonUnknown,
    /// The filing's reason is not its search's.
    OtherReason,
    /// Another request holds the hit.
    Held(Box<FollowUp>),
}

/// Stores a step's effects on `f` with its audit event, in one durable write.
pub(crate) fn commit(
    state: &NodeState,
    f: &FollowUp,
    effects: &crate::domain::followup::Effects,
) -> Result<(), StoreError> {
    let batch = Book::batch(f, effects);
    match &effects.event {
        Some(event) => events::commit(state, batch, event),
        None => state.store.apply(&batch),
    }
}

/// A peer withdraws one of its undecided requests. A withdrawal that came too late
/// changes nothing, and is recorded all the same.
pub async fn withdraw(
    state: &Arc<NodeState>,
    peer: Country,
    id: FollowUpId,
) -> Result<Receipt, AppError> {
    let f = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book
            .get(Direction::Incoming, &id)?
            .filter(|f| f.country == peer)
        else {
            return Ok(None);
        };
        let effects = f.withdraw_incoming(unix_now());
        commit(state, &f, &effects)?;
        Ok(Some(f))
    })
    .await?
    .ok_or_else(|| {
        AppError::NotFound("field `request_id`: no follow-up of yours has this id".into())
    })?;
    tracing::info!(peer = %peer, followup = %f.id, state = f.state().name(), "follow-up withdrawal");
    Ok(f.receipt())
}

/// A peer asks where its requests stand; decided ones not yet acknowledged are sent
/// again at once.
pub async fn poll(
    state: &Arc<NodeState>,
    peer: Country,
    ids: Vec<FollowUpId>,
) -> Result<Vec<Receipt>, AppError> {
    if ids.len() > MAX_POLL_IDS {
        return Err(AppError::Invalid(format!(
            "field `request_ids`: {} ids exceed the limit of {MAX_POLL_IDS}",
            ids.len()
        )));
    }
    let now = unix_now();
    let (receipts, resend) = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let mut receipts = Vec::new();
        let mut resend = false;
        for id in ids {
            let Some(f) = book
                .get(Direction::Incoming, &id)?
                .filter(|f| f.country == peer)
            else {
                continue;
            };
            if let Some(mut entry) = book.outbox_entry(&id)? {
                entry.due_now(now);
                book.reschedule(&entry)?;
                resend = true;
            }
            receipts.push(f.receipt());
        }
        Ok((receipts, resend))
    })
    .await?;
    if resend {
        state.outbox_wake.notify_one();
    }
    Ok(receipts)
}

/// A reviewer decides an incoming request; returns it with the local record it
/// concerns.
pub async fn decide(
    state: &Arc<NodeState>,
    reviewer: String,
    id: FollowUpId,
    decision: Decision,
    reason: String,
) -> Result<(FollowUp, Option<Record>), AppError> {
    let config = state.config.followup.clone();
    let index = state.index.active();
    let now = unix_now();
    let (f, record, deliver) = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book.get(Direction::Incoming, &id)? else {
            if book.get(Direction::Outgoing, &id)?.is_some() {
                return Err(FollowUpError::OwnRequest(id).into());
            }
            return Err(AppError::NotFound(
                "field `id`: no incoming follow-up has this id".into(),
            ));
        };
        let record = match &f.record {
            Some(r) => index.record(r)?,
            None => None,
        };
        let policy = Policy {
            four_eyes: config.four_eyes,
            release_fields: &config.release_fields,
        };
        let effects = f.decide(&reviewer, decision, &reason, now, record.as_ref(), policy)?;
        commit(state, &f, &effects)?;
        Ok((f, record, effects.deliver()))
    })
    .await?;
    tracing::info!(followup = %f.id, peer = %f.country, state = f.state().name(), "follow-up decided");
    if deliver {
        state.outbox_wake.notify_one();
    }
    Ok((f, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::{
            jobs, records,
            testkit::{
                Behaviour, FakePeers, TestNode, audit_kinds, cc, mueller, node_with, reason,
            },
        },
        domain::{followup::State, index::ImportMode, pseudonymise::Quality},
    };

    /// A hit reference for Müller (de-1) issued to FR by `search`, valid an hour.
    fn issue_mueller_to_fr(node: &TestNode, search: &str) -> hitref::HitRef {
        let now = unix_now();
        hitref::issue(
            node.state.store.as_ref(),
            &[(mueller("de-1").id, Quality::Exact)],
            cc("FR"),
            now,
            now + 3600,
            search,
            &reason(),
        )
        .expect("issued")[0]
    }

    /// DE holds Müller (de-1) and issued FR a hit reference for it; FR answers
    /// every delivery.
    fn owner(four_eyes: bool) -> (TestNode, Filing) {
        let node = node_with(
            "DE",
            FakePeers::new(&[(
                "FR",
                Behaviour::Answers {
                    hits: Vec::new(),
                    state: State::Pending,
                },
            )]),
            |c| c.followup.four_eyes = four_eyes,
        );
        records::import(
            &node.state,
            "operator-1",
            vec![mueller("de-1")],
            ImportMode::Import,
            &mut |_| {},
        )
        .expect("imported");
        let hit_ref = issue_mueller_to_fr(&node, "search-1");
        let filing = Filing {
            id: FollowUpId::random().expect("an id"),
            hit_ref,
            reason: reason(),
            justification: "Suspect in case FR-2026-1.".into(),
            offence_description: "Burglary.".into(),
            subject: mueller("x").identity,
            officer_id: "fr-officer".into(),
            audit_head: None,
        };
        (node, filing)
    }

    #[tokio::test]
    async fn four_eyes_approval_needs_two_reviewers_then_releases_the_core_data() {
        let (node, filing) = owner(true);
        let id = filing.id.clone();
        let receipt = file(&node.state, cc("FR"), filing).await.expect("filed");
        assert_eq!(receipt.state, State::Pending);

        let approve = |reviewer: &str| {
            decide(
                &node.state,
                reviewer.into(),
                id.clone(),
                Decision::Approve,
                "Checked.".into(),
            )
        };
        let (first, record) = approve("r1").await.expect("first approval");
        assert_eq!(first.state(), State::Pending, "one approval is not enough");
        assert_eq!(record.expect("the local record").id.as_str(), "de-1");
        assert!(matches!(
            approve("r1").await,
            Err(AppError::FailedPrecondition(m)) if m.contains("second reviewer")
        ));
        let (second, _) = approve("r2").await.expect("second approval");
        assert_eq!(second.state(), State::Approved);

        let now = unix_now();
        jobs::outbox::deliver_due(&node.state, now, 60).await;
        let delivered = node.peers.delivered.lock().expect("lock").clone();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].1.state, State::Approved);
        assert_eq!(delivered[0].1.core_data["family_name"], "Müller");
        assert!(
            !delivered[0].1.core_data.contains_key("offence"),
            "only the fields of the release policy"
        );
        let book = Book::new(node.state.store.as_ref());
        let stored = book
            .get(Direction::Incoming, &id)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state(), State::Delivered);
        assert!(
            book.outbox().expect("read").is_empty(),
            "the owner keeps no copy"
        );
        assert_eq!(
            audit_kinds(&node),
            [
                "records.stored",
                "records.imported",
                "followup.filed",
                "followup.decided",
                "followup.decided",
                "followup.delivered"
            ]
        );
    }

    #[tokio::test]
    async fn a_decision_the_store_refuses_changes_nothing() {
        let (node, filing) = owner(false);
        let id = filing.id.clone();
        file(&node.state, cc("FR"), filing).await.expect("filed");
        node.store.fail_writes(true);
        let refused = decide(
            &node.state,
            "r1".into(),
            id.clone(),
            Decision::Approve,
            "Checked.".into(),
        )
        .await;
        assert!(matches!(refused, Err(AppError::Unavailable(_))));
        node.store.fail_writes(false);
        let book = Book::new(node.state.store.as_ref());
        let stored = book
            .get(Direction::Incoming, &id)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state(), State::Pending);
        assert!(book.outbox().expect("read").is_empty());
        assert_eq!(
            audit_kinds(&node),
            ["records.stored", "records.imported", "followup.filed"]
        );
    }

    #[tokio::test]
    async fn a_withdrawal_after_the_decision_changes_nothing_and_is_recorded() {
        let (node, filing) = owner(false);
        let id = filing.id.clone();
        file(&node.state, cc("FR"), filing).await.expect("filed");
        decide(
            &node.state,
            "r1".into(),
            id.clone(),
            Decision::Refuse,
            "Not our suspect.".into(),
        )
        .await
        .expect("refused");
        let receipt = withdraw(&node.state, cc("FR"), id.clone())
            .await
            .expect("answered");
        assert_eq!(receipt.state, State::Refused, "the decision stands");
        assert!(matches!(
            withdraw(&node.state, cc("ES"), id).await,
            Err(AppError::NotFound(_))
        ));
        assert_eq!(
            audit_kinds(&node).last().map(String::as_str),
            Some("followup.withdrawn")
        );
    }

    #[tokio::test]
    async fn a_filing_needs_a_reference_issued_to_the_caller() {
        let (node, filing) = owner(false);
        assert!(matches!(
            file(&node.state, cc("ES"), filing).await,
            Err(AppError::NotFound(m)) if m.contains("hit_ref")
        ));
    }

    #[tokio::test]
    async fn a_filing_carries_its_searchs_reason_and_one_request_holds_a_hit() {
        let (node, filing) = owner(false);
        // Another reason than the Match that produced the hit: refused, nothing kept.
        let mut other = filing.clone();
        other.reason.case_reference = "OTHER-CASE-99".into();
        let refused = file(&node.state, cc("FR"), other).await;
        assert!(
            matches!(&refused, Err(AppError::Invalid(m)) if m.starts_with("field `reason`")),
            "{refused:?}"
        );
        assert!(audit_kinds(&node).iter().all(|k| k != "followup.filed"));

        let first = filing.clone();
        file(&node.state, cc("FR"), first).await.expect("filed");
        let filed = crate::app::testkit::audit_entries(&node, "followup.filed");
        assert_eq!(filed[0]["search"], "search-1", "beside the follow-up");
        // The same id again is the same request (a retried filing) ...
        file(&node.state, cc("FR"), filing.clone())
            .await
            .expect("idempotent");
        // ... another id for the same hit is refused while the first is open.
        let mut second = filing.clone();
        second.id = FollowUpId::random().expect("an id");
        let refused = file(&node.state, cc("FR"), second.clone()).await;
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m)) if m.contains("pending")),
            "{refused:?}"
        );
        // A new search's fresh reference to the same record opens no second request.
        let fresh = issue_mueller_to_fr(&node, "search-2");
        let mut again = filing.clone();
        again.id = FollowUpId::random().expect("an id");
        again.hit_ref = fresh;
        let refused = file(&node.state, cc("FR"), again).await;
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m)) if m.contains("same record")),
            "{refused:?}"
        );
        // Refused by a reviewer: the hit may be followed up again.
        decide(
            &node.state,
            "r1".into(),
            filing.id.clone(),
            Decision::Refuse,
            "Not proportionate.".into(),
        )
        .await
        .expect("refused");
        file(&node.state, cc("FR"), second.clone())
            .await
            .expect("filed after the refusal");

        // Approved, it holds the record for its case, and says what then ...
        decide(
            &node.state,
            "r1".into(),
            second.id.clone(),
            Decision::Approve,
            "Proportionate to the case.".into(),
        )
        .await
        .expect("approved");
        let fresh = issue_mueller_to_fr(&node, "search-3");
        let mut same_case = filing.clone();
        same_case.id = FollowUpId::random().expect("an id");
        same_case.hit_ref = fresh;
        let refused = file(&node.state, cc("FR"), same_case).await;
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m))
                if m.contains("is approved") && m.contains("its own case reference")),
            "{refused:?}"
        );
        // ... while another case, from its own search, is a request of its own.
        let mut other_case = reason();
        other_case.case_reference = "FR-2026-99".into();
        let now = unix_now();
        let fresh = hitref::issue(
            node.state.store.as_ref(),
            &[(mueller("de-1").id, Quality::Exact)],
            cc("FR"),
            now,
            now + 3600,
            "search-4",
            &other_case,
        )
        .expect("issued")[0];
        let mut new_case = filing.clone();
        new_case.id = FollowUpId::random().expect("an id");
        new_case.hit_ref = fresh;
        new_case.reason = other_case;
        file(&node.state, cc("FR"), new_case)
            .await
            .expect("another case asks on its own");
    }
}
