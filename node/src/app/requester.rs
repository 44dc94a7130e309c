//! Step 2 on the requesting node: an officer files a follow-up for a hit one of their
//! searches received, may withdraw it, and receives the owner's decision.

use std::sync::Arc;

use crate::{
    app::{
        AppError, NodeState, events,
        owner::commit,
        peers::{PeerFailure, Rejection},
    },
    domain::{
        followup::{
            Book, DecisionNotice, Direction, Filing, FollowUp, FollowUpId, Receipt, ReceivedHit,
            State, UnansweredFiling,
        },
        hitref::HitRef,
        principals::Country,
    },
    store::{Batch, unix_now},
};

/// An officer's follow-up request. Its reason is the reason of the search that
/// received the hit: the officer does not give it again.
#[derive(Clone, Debug)]
pub struct Request {
    /// The hit reference, as a search of this node received it.
    pub hit_ref: HitRef,
    /// Why the officer needs the record.
    pub justification: String,
    /// The offence, in the officer's words.
    pub offence_description: String,
}

/// An officer files a follow-up for a hit their node received, under the reason of
/// the search that received it; the owner stores it durably and acknowledges it
/// before it is stored here. One request per hit at a time: another only once the
/// last was refused, withdrawn or expired.
///
/// A filing is remembered before it is sent until its answer is stored. If the
/// answer was lost (the owner may hold the request), the next request for the hit
/// asks the owner about that filing first: one the owner holds is stored here as it
/// was filed; one it never received is replaced by this request.
pub async fn request(
    state: &Arc<NodeState>,
    officer: String,
    request: Request,
) -> Result<FollowUp, AppError> {
    let hit_ref = request.hit_ref;
    let (hit, holding, unanswered) = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(hit) = book.received_hit(&hit_ref)? else {
            return Ok(None);
        };
        let holding = book.holding(Direction::Outgoing, hit.country, &hit_ref, None)?;
        let unanswered = book.unanswered(&hit_ref)?;
        Ok(Some((hit, holding, unanswered)))
    })
    .await?
    .ok_or_else(|| {
        AppError::NotFound(
            "field `hit_ref`: no search of this node received this hit reference (or it was received before an upgrade); search again".into(),
        )
    })?;
    if let Some(f) = holding {
        return Err(already_requested(&f));
    }
    let now = unix_now();
    if now >= hit.expires_at {
        return Err(AppError::FailedPrecondition(
            "field `hit_ref`: the hit reference has expired; search again".into(),
        ));
    }
    let owner = hit.country;
    configured(state, owner)?;
    if !unanswered.is_empty()
        && let Some(f) = filed_after_all(state, hit_ref, &hit, unanswered).await?
        && f.state().holds_its_hit()
    {
        let same = f.justification == request.justification
            && f.offence_description == request.offence_description
            && f.officer_id == officer;
        // Only the officer who filed a request withdraws it.
        let then = if f.officer_id == officer {
            "withdraw it to file another text".to_owned()
        } else {
            format!("it was filed by {}, who can withdraw it", f.officer_id)
        };
        return if same {
            Ok(f)
        } else {
            Err(AppError::FailedPrecondition(format!(
                "field `hit_ref`: an earlier request for this hit reached {owner} after all (its answer had been lost): follow-up {} is {}; {then}",
                f.id,
                f.state().name()
            )))
        };
    }
    let id = FollowUpId::random()
        .ok_or_else(|| AppError::Internal("the system random generator failed".into()))?;
    let unanswered = UnansweredFiling {
        id,
        justification: request.justification,
        offence_description: request.offence_description,
        officer_id: officer,
        expires_at: hit.expires_at,
    };
    let remembered = unanswered.clone();
    events::followup_work(state, move |state| {
        Ok(Book::new(state.store.as_ref()).remember_unanswered(&hit_ref, &remembered)?)
    })
    .await?;
    let filing = Filing {
        audit_head: Some(state.audit.checkpoint(now)),
        ..unanswered.filing(hit_ref, &hit)
    };
    let receipt = match state.peers.file(owner, filing.clone()).await {
        Ok(receipt) => receipt,
        Err(PeerFailure::TimedOut) => {
            return Err(AppError::Unavailable(format!(
                "{owner} did not answer in time; the request may be filed: run the same request again to find out"
            )));
        }
        Err(PeerFailure::Unavailable(_)) => {
            return Err(AppError::Unavailable(format!(
                "{owner} is unreachable; try again"
            )));
        }
        Err(other) => {
            // The owner refused it: nothing is filed there.
            let id = filing.id.clone();
            events::followup_work(state, move |state| {
                let mut batch = Batch::new();
                Book::new(state.store.as_ref()).forget_unanswered(&mut batch, &hit_ref, &id)?;
                Ok(state.store.apply(&batch)?)
            })
            .await?;
            return Err(refused_by(owner, "refused the follow-up", other));
        }
    };
    if receipt.id != filing.id {
        return Err(AppError::Unavailable(format!(
            "{owner} acknowledged another request than the one filed; try again"
        )));
    }
    let f = store_answered(state, filing, hit, receipt, now).await?;
    tracing::info!(followup = %f.id, peer = %owner, "follow-up requested");
    Ok(f)
}

/// Asks the owner about the filings whose answers were lost; stores here each the
/// owner holds, and returns the first. None if the owner received none of them (so
/// far: one may still be on its way, and stays remembered until the hit expires).
async fn filed_after_all(
    state: &Arc<NodeState>,
    hit_ref: HitRef,
    hit: &ReceivedHit,
    earlier: Vec<UnansweredFiling>,
) -> Result<Option<FollowUp>, AppError> {
    let owner = hit.country;
    let receipts = state
        .peers
        .poll(owner, earlier.iter().map(|u| u.id.clone()).collect())
        .await
        .map_err(|failure| match failure {
            PeerFailure::TimedOut | PeerFailure::Unavailable(_) => AppError::Unavailable(format!(
                "{owner} did not answer whether an earlier request for this hit, whose answer was lost, is filed; try again"
            )),
            other => refused_by(owner, "refused to say whether an earlier request is filed", other),
        })?;
    let mut found = None;
    for receipt in receipts {
        let Some(filing) = earlier.iter().find(|u| u.id == receipt.id) else {
            continue;
        };
        let f = store_answered(
            state,
            filing.filing(hit_ref, hit),
            hit.clone(),
            receipt,
            unix_now(),
        )
        .await?;
        tracing::info!(followup = %f.id, peer = %owner, "follow-up requested (answer recovered)");
        found.get_or_insert(f);
    }
    Ok(found)
}

/// Stores a filing the owner acknowledged with `receipt`, and forgets it as
/// unanswered, in one durable write with its audit event.
async fn store_answered(
    state: &Arc<NodeState>,
    filing: Filing,
    hit: ReceivedHit,
    receipt: Receipt,
    now: i64,
) -> Result<FollowUp, AppError> {
    let hit_ref = filing.hit_ref;
    let (f, effects) = FollowUp::requested(filing, &hit, receipt, now);
    let stored = f.clone();
    events::followup_work(state, move |state| {
        let mut batch = Book::batch(&stored, &effects);
        Book::new(state.store.as_ref()).forget_unanswered(&mut batch, &hit_ref, &stored.id)?;
        match &effects.event {
            Some(event) => events::commit(state, batch, event)?,
            None => state.store.apply(&batch)?,
        }
        Ok(())
    })
    .await?;
    Ok(f)
}

/// The refusal of a second request for a hit that `f` holds.
pub fn already_requested(f: &FollowUp) -> AppError {
    let then = match f.state() {
        State::Approved | State::Delivered => {
            "its record is released to this case (`adep followup show` has it); another case asks after a search under its own case reference"
        }
        _ => {
            "another request only after a refusal, a withdrawal (`adep followup withdraw`) or an expiry"
        }
    };
    AppError::FailedPrecondition(format!(
        "field `hit_ref`: follow-up {} for this hit (or another hit on the same record in case {}) is {}; {then}",
        f.id,
        f.reason.case_reference,
        f.state().name()
    ))
}

/// The owner's error answer as this node's officer sees it: the same kind of error,
/// naming the owner.
fn refused_by(owner: Country, what: &str, failure: PeerFailure) -> AppError {
    let message = |m: String| format!("{owner} {what}: {m}");
    match failure {
        PeerFailure::TimedOut => AppError::Unavailable(format!("{owner} did not answer in time")),
        PeerFailure::Unavailable(m) => AppError::Unavailable(message(m)),
        PeerFailure::Refused(m) => AppError::PermissionDenied(message(m)),
        PeerFailure::Rejected(kind, m) => match kind {
            Rejection::Invalid => AppError::Invalid(message(m)),
            Rejection::NotFound => AppError::NotFound(message(m)),
            Rejection::AlreadyExists => AppError::AlreadyExists(message(m)),
            Rejection::FailedPrecondition => AppError::FailedPrecondition(message(m)),
            Rejection::Other => AppError::Unavailable(message(m)),
        },
    }
}

fn configured(state: &NodeState, owner: Country) -> Result<(), AppError> {
    if state.peers.peers().iter().any(|p| p.country == owner) {
        Ok(())
    } else {
        Err(AppError::FailedPrecondition(format!(
            "{owner} is no longer a configured peer"
        )))
    }
}

/// The owner node delivers a decision on one of this node's requests.
pub async fn receive_decision(
    state: &Arc<NodeState>,
    peer: Country,
    notice: DecisionNotice,
) -> Result<(), AppError> {
    let id = notice.id.clone();
    let updated = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book
            .get(Direction::Outgoing, &id)?
            .filter(|f| f.country == peer)
        else {
            return Ok(None);
        };
        let effects = f.receive_decision(notice);
        commit(state, &f, &effects)?;
        Ok(Some(f))
    })
    .await?
    .ok_or_else(|| {
        AppError::NotFound("field `request_id`: this node filed no such follow-up with you".into())
    })?;
    tracing::info!(followup = %updated.id, peer = %peer, state = updated.state().name(), "decision received");
    Ok(())
}

/// An officer withdraws one of their undecided requests; the owner is told first, and
/// its answer is the truth (withdrawn, or decided in the meantime).
pub async fn withdraw(
    state: &Arc<NodeState>,
    officer: String,
    id: FollowUpId,
) -> Result<FollowUp, AppError> {
    let key = id.clone();
    let f = events::followup_work(state, move |state| {
        Ok(Book::new(state.store.as_ref()).get(Direction::Outgoing, &key)?)
    })
    .await?
    .filter(|f| f.officer_id == officer)
    .ok_or_else(|| AppError::NotFound("field `id`: you filed no follow-up with this id".into()))?;
    if !f.state().is_open() {
        return Err(AppError::FailedPrecondition(format!(
            "the follow-up is {} and can no longer be withdrawn",
            f.state().name()
        )));
    }
    let owner = f.country;
    configured(state, owner)?;
    let receipt =
        state
            .peers
            .withdraw(owner, id.clone())
            .await
            .map_err(|failure| match failure {
                PeerFailure::TimedOut => {
                    AppError::Unavailable(format!("{owner} did not answer in time; try again"))
                }
                other => refused_by(owner, "refused the withdrawal", other),
            })?;
    let f = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        // What is stored now counts (it may have been decided meanwhile); one that
        // vanished meanwhile is not stored again, only the withdrawal recorded.
        let (mut f, owner_state) = match book.get(Direction::Outgoing, &id)? {
            Some(stored) => (stored, Some(receipt.state)),
            None => (f, None),
        };
        let effects = f.withdraw_outgoing(owner_state, unix_now());
        commit(state, &f, &effects)?;
        Ok(f)
    })
    .await?;
    tracing::info!(followup = %f.id, peer = %owner, state = f.state().name(), "follow-up withdrawal");
    Ok(f)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        app::testkit::{
            Behaviour, FakePeers, TestNode, audit_kinds, cc, mueller, node_with, reason,
        },
        domain::{
            followup::{ReceivedHit, State},
            pseudonymise::Quality,
        },
    };

    /// FR, whose officer received a hit in DE, with DE behaving as given.
    fn with_hit(de: Behaviour) -> (TestNode, HitRef) {
        let node = node_with("FR", FakePeers::new(&[("DE", de)]), |_| {});
        let hit_ref: HitRef = "12".repeat(20).parse().expect("a hit reference");
        Book::new(node.state.store.as_ref())
            .remember_hits(&[(
                hit_ref,
                ReceivedHit {
                    country: cc("DE"),
                    quality: Quality::Exact,
                    expires_at: unix_now() + 3600,
                    subject: mueller("x").identity,
                    request_id: "search-1".into(),
                    reason: reason(),
                },
            )])
            .expect("remembered");
        (node, hit_ref)
    }

    fn burglary(hit_ref: HitRef) -> Request {
        Request {
            hit_ref,
            justification: "Suspect in case FR-2026-1.".into(),
            offence_description: "Burglary.".into(),
        }
    }

    /// FR, whose officer received a hit in DE and filed a follow-up for it.
    async fn requested() -> (TestNode, FollowUp) {
        let (node, hit_ref) = with_hit(Behaviour::Answers {
            hits: Vec::new(),
            state: State::Pending,
        });
        let f = request(&node.state, "officer-1".into(), burglary(hit_ref))
            .await
            .expect("filed");
        (node, f)
    }

    fn answering() -> Behaviour {
        Behaviour::Answers {
            hits: Vec::new(),
            state: State::Pending,
        }
    }

    #[tokio::test]
    async fn a_filing_whose_answer_was_lost_is_found_by_the_retry_not_filed_twice() {
        let (node, hit_ref) = with_hit(Behaviour::LosesFilingAnswers {
            state: State::Pending,
        });
        let lost = request(&node.state, "officer-1".into(), burglary(hit_ref)).await;
        assert!(
            matches!(&lost, Err(AppError::Unavailable(m)) if m.contains("may be filed")),
            "{lost:?}"
        );
        let book = || Book::new(node.state.store.as_ref());
        assert_eq!(book().unanswered(&hit_ref).expect("read").len(), 1);
        assert!(book().list(Direction::Outgoing).expect("read").is_empty());

        // Another text is not filed over it: the officer learns of the earlier one.
        node.peers.set("DE", answering());
        let other = Request {
            justification: "Another text for the same burglary case.".into(),
            ..burglary(hit_ref)
        };
        let refused = request(&node.state, "officer-1".into(), other).await;
        let filed = node.peers.filings.lock().expect("lock").clone();
        assert_eq!(filed.len(), 1, "no second filing reached DE");
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m))
                if m.contains("after all") && m.contains(filed[0].1.id.as_str())),
            "{refused:?}"
        );
        // The earlier request is stored here as it was filed, and listed.
        let stored = book().list(Direction::Outgoing).expect("read");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, filed[0].1.id);
        assert_eq!(stored[0].justification, "Suspect in case FR-2026-1.");
        assert!(book().unanswered(&hit_ref).expect("read").is_empty());
        assert_eq!(audit_kinds(&node), ["followup.requested"]);

        // The same request again now finds it held.
        let again = request(&node.state, "officer-1".into(), burglary(hit_ref)).await;
        assert!(matches!(again, Err(AppError::FailedPrecondition(m)) if m.contains("pending")));
    }

    #[tokio::test]
    async fn the_same_request_after_a_lost_answer_returns_the_filed_one() {
        let (node, hit_ref) = with_hit(Behaviour::LosesFilingAnswers {
            state: State::Pending,
        });
        assert!(
            request(&node.state, "officer-1".into(), burglary(hit_ref))
                .await
                .is_err()
        );
        node.peers.set("DE", answering());
        let f = request(&node.state, "officer-1".into(), burglary(hit_ref))
            .await
            .expect("found filed");
        let filed = node.peers.filings.lock().expect("lock").clone();
        assert_eq!(filed.len(), 1, "filed once");
        assert_eq!(f.id, filed[0].1.id);
        assert_eq!(f.search_request_id, "search-1");
    }

    #[tokio::test]
    async fn a_filing_that_never_arrived_is_replaced_by_the_retry() {
        let (node, hit_ref) = with_hit(Behaviour::Fails(PeerFailure::TimedOut));
        assert!(
            request(&node.state, "officer-1".into(), burglary(hit_ref))
                .await
                .is_err()
        );
        let unanswered = || {
            Book::new(node.state.store.as_ref())
                .unanswered(&hit_ref)
                .expect("read")
        };
        let first = unanswered().pop().expect("remembered");
        node.peers.set("DE", answering());
        let f = request(&node.state, "officer-1".into(), burglary(hit_ref))
            .await
            .expect("filed");
        assert_ne!(f.id, first.id, "a new filing: DE never had the first");
        assert_eq!(node.peers.filings.lock().expect("lock").len(), 1);
        // The first stays remembered (it may still reach DE) until its hit expires;
        // the second, answered, is not.
        assert_eq!(unanswered(), [first]);
    }

    #[tokio::test]
    async fn a_refused_filing_is_forgotten() {
        let (node, hit_ref) = with_hit(Behaviour::Fails(PeerFailure::Rejected(
            Rejection::Invalid,
            "field `reason`: no".into(),
        )));
        let refused = request(&node.state, "officer-1".into(), burglary(hit_ref)).await;
        assert!(matches!(refused, Err(AppError::Invalid(m)) if m.starts_with("DE refused")));
        assert!(
            Book::new(node.state.store.as_ref())
                .unanswered(&hit_ref)
                .expect("read")
                .is_empty()
        );
    }

    fn approval(id: &FollowUpId) -> DecisionNotice {
        DecisionNotice {
            id: id.clone(),
            state: State::Approved,
            reason: "Checked.".into(),
            core_data: BTreeMap::from([("family_name".to_owned(), "Müller".to_owned())]),
            decided_at: unix_now(),
            audit_head: None,
        }
    }

    #[tokio::test]
    async fn the_same_decision_received_twice_is_recorded_twice_and_applied_once() {
        let (node, f) = requested().await;
        assert_eq!(f.state(), State::Pending);
        let filed = node.peers.filings.lock().expect("lock").clone();
        assert_eq!(filed.len(), 1);
        assert_eq!(
            filed[0].1.subject,
            mueller("x").identity,
            "the subject as searched"
        );

        receive_decision(&node.state, cc("DE"), approval(&f.id))
            .await
            .expect("received");
        let mut again = approval(&f.id);
        again.core_data.clear();
        receive_decision(&node.state, cc("DE"), again)
            .await
            .expect("received again");
        let stored = Book::new(node.state.store.as_ref())
            .get(Direction::Outgoing, &f.id)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state(), State::Delivered);
        assert_eq!(
            stored.core_data["family_name"], "Müller",
            "the first one counts"
        );
        assert_eq!(
            audit_kinds(&node),
            [
                "followup.requested",
                "followup.decision_received",
                "followup.decision_received"
            ]
        );
        assert!(matches!(
            receive_decision(&node.state, cc("ES"), approval(&f.id)).await,
            Err(AppError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_withdrawal_that_crosses_the_decision_leaves_the_decision_to_arrive() {
        let (node, f) = requested().await;
        // DE decided before the withdrawal reached it.
        node.peers.set(
            "DE",
            Behaviour::Answers {
                hits: Vec::new(),
                state: State::Approved,
            },
        );
        let after = withdraw(&node.state, "officer-1".into(), f.id.clone())
            .await
            .expect("answered");
        assert_eq!(after.state(), State::Pending, "not withdrawn: DE decided");
        receive_decision(&node.state, cc("DE"), approval(&f.id))
            .await
            .expect("received");
        let stored = Book::new(node.state.store.as_ref())
            .get(Direction::Outgoing, &f.id)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state(), State::Delivered);
        assert!(matches!(
            withdraw(&node.state, "officer-2".into(), f.id).await,
            Err(AppError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_owner_files_nothing() {
        let (node, _) = requested().await;
        node.peers.set(
            "DE",
            Behaviour::Fails(PeerFailure::Unavailable("connection refused".into())),
        );
        // A hit of another search, so that the open request on the first does not
        // refuse it here.
        let hit_ref: HitRef = "34".repeat(20).parse().expect("a hit reference");
        let mut hit = Book::new(node.state.store.as_ref())
            .received_hit(&"12".repeat(20).parse().expect("a hit reference"))
            .expect("read")
            .expect("remembered");
        hit.request_id = "search-2".into();
        Book::new(node.state.store.as_ref())
            .remember_hits(&[(hit_ref, hit)])
            .expect("remembered");
        let refused = request(
            &node.state,
            "officer-1".into(),
            Request {
                hit_ref,
                justification: "Again, for the same burglary case.".into(),
                offence_description: "Burglary.".into(),
            },
        )
        .await;
        assert!(matches!(refused, Err(AppError::Unavailable(m)) if m.contains("unreachable")));
        assert_eq!(
            Book::new(node.state.store.as_ref())
                .list(Direction::Outgoing)
                .expect("read")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_request_inherits_its_search_and_holds_its_hit_until_closed() {
        let (node, f) = requested().await;
        assert_eq!(f.reason, reason(), "the search's reason, not given again");
        assert_eq!(f.search_request_id, "search-1");
        let requested_event = crate::app::testkit::audit_entries(&node, "followup.requested");
        assert_eq!(requested_event[0]["search"], "search-1");
        let again = || {
            request(
                &node.state,
                "officer-2".into(),
                Request {
                    hit_ref: f.hit_ref,
                    justification: "A second request for the same hit.".into(),
                    offence_description: "Burglary.".into(),
                },
            )
        };
        let refused = again().await;
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m))
                if m.contains(f.id.as_str()) && m.contains("pending")),
            "{refused:?}"
        );
        // Once refused by DE, the hit may be followed up again.
        let refusal = DecisionNotice {
            state: State::Refused,
            core_data: BTreeMap::new(),
            ..approval(&f.id)
        };
        receive_decision(&node.state, cc("DE"), refusal)
            .await
            .expect("received");
        let second = again().await.expect("filed after the refusal");
        assert_ne!(second.id, f.id);
        assert_eq!(second.search_request_id, "search-1");
    }
}
