//! Rotation of one node's own match key over real nodes: the node builds its next
//! epoch while the active one answers, switches by itself, and answers the previous
//! epoch during a grace; no other node does anything, and searches running all the
//! while lose no hit; a follow-up filed before the rotation still completes; a
//! restart answers under the new epoch.

use std::time::Duration;

use adep_node::domain::principals::Role;
use adep_proto::v1::{
    Decision, FollowUpState, ImportMode, MatchRequest, MatchSubject, PeerState, RotateAction,
    RotateKeysRequest, RotateKeysResponse, SearchRequest, federation_client::FederationClient,
};
use adep_tests::{TestNetwork, evaluated_keys, followups::*, reason, record};
use tonic::{Code, transport::Channel};

const MUELLER: (&str, &str, &str) = ("Müller", "Hans Peter", "1970-05-12");

/// FR's evaluation of Müller at DE: the epoch DE named, and the Match to send.
async fn evaluate_mueller(de: &mut FederationClient<Channel>) -> MatchRequest {
    let (epoch, keys) = evaluated_keys(de, "FR", MUELLER)
        .await
        .expect("DE evaluates");
    MatchRequest {
        request_id: format!("rotation-test-{epoch}"),
        country: "FR".into(),
        key_epoch: epoch,
        reason: Some(reason()),
        subjects: vec![MatchSubject { subject: 0, keys }],
        audit_head: None,
    }
}

async fn hits(
    de: &mut FederationClient<Channel>,
    request: MatchRequest,
) -> Result<usize, tonic::Status> {
    de.r#match(request)
        .await
        .map(|r| r.into_inner().results.iter().map(|s| s.hits.len()).sum())
}

async fn rotate(
    net: &TestNetwork,
    cc: &str,
    action: RotateAction,
) -> Result<RotateKeysResponse, tonic::Status> {
    net.national(cc, Role::Operator)
        .rotate_keys(RotateKeysRequest {
            action: action as i32,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// FR's officer searches Müller: DE's state and its hits.
async fn fr_search(net: &TestNetwork) -> (i32, usize) {
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![adep_proto::v1::Identity {
                family_name: "Müller".into(),
                given_names: "Hans Peter".into(),
                date_of_birth: "1970-05-12".into(),
                ..adep_proto::v1::Identity::default()
            }],
        })
        .await
        .expect("search")
        .into_inner();
    let state = answer
        .peers
        .iter()
        .find(|p| p.country == "DE")
        .expect("DE")
        .state;
    (
        state,
        answer.hits.iter().filter(|h| h.country == "DE").count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rotates_alone_and_searches_running_meanwhile_lose_no_hit() {
    let net = network_with(|c| c.matching.previous_epoch_grace = Duration::from_secs(4)).await;
    let others: Vec<String> = ["FR", "ES"]
        .iter()
        .map(|cc| std::fs::read_to_string(net.dir().join(cc).join("node.toml")).expect("config"))
        .collect();
    // A follow-up filed before the rotation, decided after it.
    let filed = filed_for_mueller(&net).await;
    let mut de = net.federation_as_peer("DE", "FR");
    let before = evaluate_mueller(&mut de).await;
    assert_eq!(before.key_epoch, 1);

    // Searches run the whole time; each must find Müller in DE.
    let searching = tokio::sync::watch::channel(true);
    let searches = {
        let net = &net;
        let mut running = searching.1.clone();
        async move {
            let mut done = 0;
            while *running.borrow_and_update() || done == 0 {
                assert_eq!(
                    fr_search(net).await,
                    (PeerState::Ok as i32, 1),
                    "search {done}"
                );
                done += 1;
            }
            done
        }
    };
    let rotation = async {
        let started = rotate(&net, "DE", RotateAction::Start)
            .await
            .expect("start");
        assert_eq!((started.active_epoch, started.next_epoch), (1, 2));
        let again = rotate(&net, "DE", RotateAction::Start)
            .await
            .expect_err("one rotation at a time");
        assert_eq!(again.code(), Code::FailedPrecondition);
        let mut status = started;
        for _ in 0..400 {
            status = rotate(&net, "DE", RotateAction::Status)
                .await
                .expect("status");
            if status.phase != "building" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = searching.0.send(false);
        status
    };
    let (searched, switched) = tokio::join!(searches, rotation);
    assert!(searched >= 1);
    assert_eq!(
        (
            switched.phase.as_str(),
            switched.active_epoch,
            switched.previous_epoch
        ),
        ("grace", 2, 1),
        "{switched:?}"
    );
    assert!(
        switched.retired_epochs.is_empty(),
        "epoch 1 answers, not retired yet: {switched:?}"
    );
    let again = rotate(&net, "DE", RotateAction::Start)
        .await
        .expect_err("no rotation during the grace");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(
        again
            .message()
            .contains("epoch 1 still answers in its grace"),
        "{again:?}"
    );

    // In the grace: a Match evaluated before the switch still hits; a new evaluation
    // names epoch 2 and hits; imports are refused.
    assert_eq!(
        hits(&mut de, before.clone())
            .await
            .expect("epoch 1 in its grace"),
        1
    );
    let after = evaluate_mueller(&mut de).await;
    assert_eq!(after.key_epoch, 2);
    assert_ne!(after.subjects, before.subjects, "a new key, new digests");
    assert_eq!(hits(&mut de, after.clone()).await.expect("epoch 2"), 1);
    let import = net
        .import(
            "DE",
            vec![record("de-9", "Neu", "Nina", "2000-01-01")],
            ImportMode::Import,
            10,
        )
        .await
        .expect_err("no import during the grace");
    assert_eq!(import.code(), Code::FailedPrecondition);
    assert!(import.message().contains("grace"), "{import:?}");

    // After the grace: epoch 1 is refused with a clear error; searches go on.
    let mut status = switched;
    for _ in 0..400 {
        status = rotate(&net, "DE", RotateAction::Status)
            .await
            .expect("status");
        if status.phase == "stable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((status.phase.as_str(), status.active_epoch), ("stable", 2));
    assert_eq!(status.retired_epochs, [1]);
    let refused = hits(&mut de, before).await.expect_err("epoch 1 is retired");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("epoch 1 was retired on this node; it answers under epoch 2"),
        "{refused:?}"
    );
    assert_eq!(fr_search(&net).await, (PeerState::Ok as i32, 1));
    // No other node did anything.
    for (cc, before) in ["FR", "ES"].iter().zip(&others) {
        let now = std::fs::read_to_string(net.dir().join(cc).join("node.toml")).expect("config");
        assert_eq!(&now, before, "{cc}'s configuration is untouched");
        let status = rotate(&net, cc, RotateAction::Status)
            .await
            .expect("status");
        assert_eq!((status.phase.as_str(), status.active_epoch), ("stable", 1));
    }

    // The follow-up filed before the rotation completes.
    decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve");
    let delivered = until_state(&net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-1");

    // A restart answers under epoch 2 from the stored digests.
    let mut net = net;
    net.stop("DE").await;
    net.start("DE").await;
    let mut de = net.federation_as_peer("DE", "FR");
    assert_eq!(hits(&mut de, after).await.expect("epoch 2"), 1);
    let kinds = net.audit_kinds("DE").await;
    for kind in [
        "keys.rotation_started",
        "keys.epoch_changed",
        "keys.epoch_retired",
        "evaluate.received",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}
