//! Step 2 over real nodes: an officer in FR files a follow-up for a hit in DE; a
//! reviewer in DE decides; the decision and the released core data travel back
//! through DE's outbox. Nothing of the record reaches FR before the approval.

use std::time::Duration;

use adep_node::{config::UserConfig, domain::principals::Role, tooling::pki::Leaf};
use adep_proto::v1::{
    DecideFollowUpRequest, Decision, FollowUpState, ListFollowUpsRequest, RequestFollowUpRequest,
    ShowFollowUpRequest, WithdrawFollowUpRequest,
};
use adep_tests::{TestNetwork, cc, followups::*, logs};
use tonic::Code;

/// FR, DE and ES, with every log line captured at debug level.
async fn network() -> TestNetwork {
    network_with(|_| {}).await
}

/// As [`network`], with DE's configuration changed by `edit`.
async fn network_with(edit: impl FnOnce(&mut adep_node::config::Config)) -> TestNetwork {
    logs::capture("debug");
    adep_tests::followups::network_with(edit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_data_before_approval_and_only_policy_fields_after() {
    let mut net = network().await;
    let hit_ref = hit_in_de(&net, "MUELLER", "Hans Peter", "1970-05-12").await;
    let filed = request(&net, &hit_ref).await.expect("follow-up filed");
    assert_eq!(filed.state, FollowUpState::Pending as i32);
    assert_eq!(filed.country, "DE");
    assert!(filed.core_data.is_empty());

    // Before approval, nothing FR answers carries the record's payload or its id.
    let before = format!(
        "{:?}{:?}",
        show(&net, "FR", Role::Officer, &filed.id).await,
        net.national("FR", Role::Officer)
            .list_follow_ups(ListFollowUpsRequest::default())
            .await
            .expect("list")
            .into_inner()
    );
    assert!(!before.contains("payload of de-1"), "{before}");
    assert!(!before.contains("de-1"), "{before}");
    let logged = logs::text();
    assert!(logged.contains("follow-up filed"), "the log capture works");
    for value in [
        "payload of de-1",
        "Müller",
        "MUELLER",
        "Hans Peter",
        &hit_ref,
    ] {
        assert!(!logged.contains(value), "a log line holds {value:?}");
    }

    // DE's reviewer sees the request next to the local record.
    let incoming = net
        .national("DE", Role::Reviewer)
        .list_follow_ups(ListFollowUpsRequest {
            incoming: true,
            ..ListFollowUpsRequest::default()
        })
        .await
        .expect("incoming list")
        .into_inner()
        .follow_ups;
    assert_eq!(incoming.len(), 1);
    assert_eq!(incoming[0].id, filed.id);
    assert_eq!(incoming[0].officer_id, filed.officer_id);
    let seen = show(&net, "DE", Role::Reviewer, &filed.id).await;
    let local = seen.record.expect("the local record");
    assert_eq!(local.record_id, "de-1");
    assert_eq!(
        seen.subject.expect("subject").family_name,
        "MUELLER",
        "the subject as FR searched it"
    );

    let approved = decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve");
    assert!(matches!(
        FollowUpState::try_from(approved.state),
        Ok(FollowUpState::Approved | FollowUpState::Delivered)
    ));

    let delivered = until_state(&net, &filed.id, FollowUpState::Delivered).await;
    let mut fields: Vec<&str> = delivered.core_data.keys().map(String::as_str).collect();
    fields.sort_unstable();
    // The default release policy; the test record has no sex or nationalities, and
    // its payload column is not named by the policy.
    assert_eq!(
        fields,
        ["date_of_birth", "family_name", "given_names", "record_id"]
    );
    assert_eq!(delivered.core_data["family_name"], "Müller");
    assert!(!format!("{delivered:?}").contains("payload of de-1"));
    // DE marks it delivered once FR acknowledged; the decision is not sent again.
    until_owner_state(&net, &filed.id, FollowUpState::Delivered).await;
    // Not after the release either: no log line of any node holds record content.
    let logged = logs::text();
    for value in [
        "payload of de-1",
        "Müller",
        "MUELLER",
        "Hans Peter",
        "1970-05-12",
    ] {
        assert!(!logged.contains(value), "a log line holds {value:?}");
    }
    net.stop("FR").await;
    net.stop("DE").await;
    net.stop("ES").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_hold_and_withdrawal_reach_the_officer() {
    let net = network().await;
    // Refused: the officer learns it, with the reason, and receives nothing.
    let refused = filed_for_mueller(&net).await;
    decide(&net, "DE", Role::Reviewer, &refused.id, Decision::Refuse)
        .await
        .expect("refuse");
    let seen = until_state(&net, &refused.id, FollowUpState::Refused).await;
    assert_eq!(seen.decision_reason, "Checked against the local file.");
    assert!(seen.core_data.is_empty());

    // Hold, then approval.
    let held = request(
        &net,
        &hit_in_de(&net, "Schmidt", "Karl", "1955-01-01").await,
    )
    .await
    .expect("filed");
    let on_hold = decide(&net, "DE", Role::Reviewer, &held.id, Decision::Hold)
        .await
        .expect("hold");
    assert_eq!(on_hold.state, FollowUpState::OnHold as i32);
    // The officer learns of the hold and why, before any decision (a poll may show
    // the state first; the reason comes with the hold's news).
    let mut seen = until_state(&net, &held.id, FollowUpState::OnHold).await;
    for _ in 0..150 {
        if !seen.steps.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = show(&net, "FR", Role::Officer, &held.id).await;
    }
    let steps: Vec<_> = seen
        .steps
        .iter()
        .map(|s| (s.decision, s.reason.as_str(), s.reviewer.as_str()))
        .collect();
    assert_eq!(
        steps,
        [(Decision::Hold as i32, "Checked against the local file.", "")],
        "the hold and its reason, not DE's reviewer"
    );
    decide(&net, "DE", Role::Reviewer, &held.id, Decision::Approve)
        .await
        .expect("approve after hold");
    let delivered = until_state(&net, &held.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-2");

    // Delivered, the record is not requested again in the case, even through a new
    // search's hit.
    let again = request(
        &net,
        &hit_in_de(&net, "Schmidt", "Karl", "1955-01-01").await,
    )
    .await
    .expect_err("one request per record");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // Withdrawn before a decision (Müller's was refused, so he may be asked for
    // again): DE can no longer decide it.
    let withdrawn = filed_for_mueller(&net).await;
    let w = net
        .national("FR", Role::Officer)
        .withdraw_follow_up(WithdrawFollowUpRequest {
            id: withdrawn.id.clone(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(w.state, FollowUpState::Withdrawn as i32);
    assert!(w.withdrawn_at >= w.filed_at, "when it was withdrawn: {w:?}");
    // The owner's reviewer sees when, too.
    let at_de = net
        .national("DE", Role::Reviewer)
        .show_follow_up(ShowFollowUpRequest {
            id: withdrawn.id.clone(),
        })
        .await
        .expect("shown")
        .into_inner();
    assert_eq!(at_de.state, FollowUpState::Withdrawn as i32);
    assert!(at_de.withdrawn_at >= at_de.filed_at, "{at_de:?}");
    let late = decide(&net, "DE", Role::Reviewer, &withdrawn.id, Decision::Approve)
        .await
        .expect_err("a withdrawn request cannot be approved");
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_foreign_or_unknown_hit_references_are_refused() {
    let net = network().await;
    let hit_ref = hit_in_de(&net, "Müller", "Hans Peter", "1970-05-12").await;
    let filed = request(&net, &hit_ref).await.expect("filed");

    // Only reviewers decide; only officers request; nobody decides their own node's
    // request.
    let by_officer = decide(&net, "DE", Role::Officer, &filed.id, Decision::Approve)
        .await
        .expect_err("an officer cannot decide");
    assert_eq!(by_officer.code(), Code::PermissionDenied);
    let own = decide(&net, "FR", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect_err("FR cannot decide its own request");
    assert_eq!(own.code(), Code::PermissionDenied, "{own:?}");
    let by_reviewer = net
        .national("FR", Role::Reviewer)
        .request_follow_up(RequestFollowUpRequest {
            hit_ref: hit_ref.clone(),
            justification: "Needed for the burglary case in Lyon.".into(),
            offence_description: "o".into(),
        })
        .await
        .expect_err("a reviewer cannot request");
    assert_eq!(by_reviewer.code(), Code::PermissionDenied);

    // ES presents FR's hit reference to DE: refused as if unknown.
    let mut es_to_de = net.federation_as_peer("DE", "ES");
    let foreign = es_to_de
        .file_follow_up(filing("ES", 'b', &hit_ref))
        .await
        .expect_err("another country's hit reference");
    assert_eq!(foreign.code(), Code::NotFound);
    let unknown = es_to_de
        .file_follow_up(filing("ES", 'b', &"0".repeat(40)))
        .await
        .expect_err("an unknown hit reference");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(foreign.message(), unknown.message());

    // An officer can only file for hits their own node received.
    let not_ours = request(&net, &"1".repeat(40))
        .await
        .expect_err("a hit this node never received");
    assert_eq!(not_ours.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_reaches_a_requesting_node_that_was_down() {
    let mut net = network().await;
    let filed = filed_for_mueller(&net).await;
    net.stop("FR").await;
    decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve while FR is down");
    // DE keeps trying; give it a few failed attempts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        show(&net, "DE", Role::Reviewer, &filed.id).await.state,
        FollowUpState::Approved as i32,
        "not delivered while FR is down"
    );
    net.start("FR").await;
    let delivered = until_state(&net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_survive_a_restart_of_the_owner() {
    let mut net = network().await;
    let filed = filed_for_mueller(&net).await;
    net.stop("DE").await;
    net.start("DE").await;
    let seen = show(&net, "DE", Role::Reviewer, &filed.id).await;
    assert_eq!(seen.state, FollowUpState::Pending as i32);
    assert_eq!(seen.record.expect("record").record_id, "de-1");
    decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve after the restart");
    until_state(&net, &filed.id, FollowUpState::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_needs_a_second_reviewer() {
    let net = network_with(|c| {
        c.followup.four_eyes = true;
        c.users.push(UserConfig {
            id: "de-reviewer-2".into(),
            role: Role::Reviewer,
        });
    })
    .await;
    let (cert, key) = net.issue(
        Some("DE"),
        Leaf::User(cc("DE"), "de-reviewer-2".into()),
        "r2",
    );
    let filed = filed_for_mueller(&net).await;
    let first = decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("first approval");
    assert_eq!(
        first.state,
        FollowUpState::Pending as i32,
        "one approval is not enough"
    );
    let again = decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect_err("the same reviewer twice");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(
        show(&net, "FR", Role::Officer, &filed.id).await.state,
        FollowUpState::Pending as i32
    );
    let second = net
        .national_with("DE", Some((cert, key)))
        .decide_follow_up(DecideFollowUpRequest {
            id: filed.id.clone(),
            decision: Decision::Approve as i32,
            reason: "Second pair of eyes: agreed.".into(),
        })
        .await
        .expect("second reviewer approves")
        .into_inner();
    assert_eq!(second.steps.len(), 2);
    let delivered = until_state(&net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_owner_stays_silent_expires_at_the_requester() {
    let mut net = network_with(|c| {
        c.followup.decision_deadline = Duration::from_secs(1);
        c.followup.expiry = Duration::from_secs(2);
    })
    .await;
    let filed = filed_for_mueller(&net).await;
    net.stop("DE").await;
    // Two silent polls (retry_max is 1 s here) after the expiry, FR closes it.
    let expired = until_state(&net, &filed.id, FollowUpState::Expired).await;
    assert!(
        expired.decision_reason.contains("reported no decision"),
        "{expired:?}"
    );
    assert!(expired.core_data.is_empty());
    // DE comes back, closes the request as expired itself and delivers the news: FR
    // receives it (and records it), and its own account stays.
    net.start("DE").await;
    let at_de = until_owner_state(&net, &filed.id, FollowUpState::Expired).await;
    assert_eq!(at_de.state, FollowUpState::Expired as i32);
    let delivered = net.audit_entries_of("DE", "followup.delivered").await;
    assert_eq!(delivered[0]["state"], "expired", "{delivered:?}");
    let received = net
        .audit_entries_of("FR", "followup.decision_received")
        .await;
    assert_eq!(received[0]["followup"], filed.id, "{received:?}");
    let seen = show(&net, "FR", Role::Officer, &filed.id).await;
    assert_eq!(seen.state, FollowUpState::Expired as i32);
    assert!(seen.decision_reason.contains("reported no decision"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_requests_turn_overdue_then_expire() {
    let net = network_with(|c| {
        c.followup.decision_deadline = Duration::from_secs(1);
        // Overdue from 1 s to 4 s: room for a slow machine to list it in between.
        c.followup.expiry = Duration::from_secs(4);
    })
    .await;
    let filed = filed_for_mueller(&net).await;
    let overdue = || async {
        net.national("DE", Role::Reviewer)
            .list_follow_ups(ListFollowUpsRequest {
                incoming: true,
                overdue: true,
                ..ListFollowUpsRequest::default()
            })
            .await
            .expect("list overdue")
            .into_inner()
            .follow_ups
    };
    assert!(overdue().await.is_empty(), "not overdue yet");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let listed = overdue().await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].overdue);
    let expired = until_state(&net, &filed.id, FollowUpState::Expired).await;
    assert!(expired.core_data.is_empty());
    assert_eq!(
        show(&net, "DE", Role::Reviewer, &filed.id).await.state,
        FollowUpState::Expired as i32
    );
    let late = decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect_err("an expired request cannot be approved");
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hit_reference_is_refused() {
    let net = network_with(|c| c.matching.hit_ref_ttl = Duration::from_secs(1)).await;
    let hit_ref = hit_in_de(&net, "Müller", "Hans Peter", "1970-05-12").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let local = request(&net, &hit_ref)
        .await
        .expect_err("FR knows the reference has expired");
    assert_eq!(local.code(), Code::FailedPrecondition);
    // And DE refuses it too, should a node send it anyway.
    let remote = net
        .federation_as_peer("DE", "FR")
        .file_follow_up(filing("FR", 'c', &hit_ref))
        .await
        .expect_err("DE refuses an expired reference");
    assert_eq!(remote.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_decision_changes_nothing() {
    let net = network().await;
    let filed = filed_for_mueller(&net).await;
    let approval = |country: &str| adep_proto::v1::FollowUpDecision {
        request_id: filed.id.clone(),
        state: FollowUpState::Approved as i32,
        reason: "Approved.".into(),
        core_data: [("family_name".to_owned(), "Forged".to_owned())].into(),
        country: country.into(),
        decided_at: 1,
        audit_head: None,
    };
    // ES delivers a decision on FR's request with DE: no such request of ES's.
    let by_es = net
        .federation_as_peer("FR", "ES")
        .deliver_decision(approval("ES"))
        .await
        .expect_err("ES decides nothing for DE");
    assert_eq!(by_es.code(), Code::NotFound);
    // ES claiming to be DE: refused on the certificate.
    let as_de = net
        .federation_as_peer("FR", "ES")
        .deliver_decision(approval("DE"))
        .await
        .expect_err("ES cannot speak as DE");
    assert_eq!(as_de.code(), Code::PermissionDenied);
    // Even DE: data with a refusal is refused whole.
    let mut refusal_with_data = approval("DE");
    refusal_with_data.state = FollowUpState::Refused as i32;
    let with_data = net
        .federation_as_peer("FR", "DE")
        .deliver_decision(refusal_with_data)
        .await
        .expect_err("only an approval releases data");
    assert_eq!(with_data.code(), Code::InvalidArgument);
    let seen = show(&net, "FR", Role::Officer, &filed.id).await;
    assert_eq!(seen.state, FollowUpState::Pending as i32);
    assert!(seen.core_data.is_empty());
}
