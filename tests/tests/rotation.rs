//! Rotation of the network's matching secret over real nodes: during the transition
//! a node answers under both epochs; after it the old epoch is refused and the new
//! one hits; a follow-up filed before the rotation still completes; a restart
//! resumes where the rotation stood.

use std::time::Duration;

use adep_node::domain::principals::Role;
use adep_proto::v1::{
    Decision, FollowUpState, ImportMode, MatchRequest, MatchSubject, PeerState, RotateAction,
    RotateKeysRequest, RotateKeysResponse, SearchRequest,
};
use adep_tests::{TestNetwork, followups::*, match_keys, reason, record};
use tonic::Code;

/// A Match FR would send for Müller under `epoch`, keyed with `secret`.
fn match_mueller(secret: &[u8], epoch: u32) -> MatchRequest {
    MatchRequest {
        request_id: format!("rotation-test-{epoch}"),
        country: "FR".into(),
        key_epoch: epoch,
        reason: Some(reason()),
        subjects: vec![MatchSubject {
            subject: 0,
            keys: match_keys(secret, epoch, ("Müller", "Hans Peter", "1970-05-12")),
        }],
        audit_head: None,
    }
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

/// Starts a rotation on `cc` and waits for its transition.
async fn rotate_to_transition(net: &TestNetwork, cc: &str) {
    let started = rotate(net, cc, RotateAction::Start).await.expect("start");
    assert_eq!(started.next_epoch, 2);
    for _ in 0..200 {
        let s = rotate(net, cc, RotateAction::Status).await.expect("status");
        if s.phase == "transition" {
            assert_eq!((s.active_epoch, s.next_epoch), (1, 2));
            return;
        }
        assert_eq!(s.phase, "building");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{cc} never reached the transition");
}

async fn hits_for_mueller(
    net: &TestNetwork,
    secret: &[u8],
    epoch: u32,
) -> Result<usize, tonic::Status> {
    net.federation_as_peer("DE", "FR")
        .r#match(match_mueller(secret, epoch))
        .await
        .map(|r| r.into_inner().results.iter().map(|s| s.hits.len()).sum())
}

async fn fr_search_state(net: &TestNetwork) -> i32 {
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
    answer
        .peers
        .iter()
        .find(|p| p.country == "DE")
        .expect("DE")
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_epochs_answer_in_transition_then_only_the_new_one() {
    let mut net = network().await;
    let old_secret = net.matching_secret();
    // A follow-up filed before the rotation, decided after it.
    let filed = filed_for_mueller(&net).await;

    // The network's next secret, configured on every node, then a restart.
    let next_hex: String = (0..32)
        .map(|i| format!("{:02x}", (i * 7 + 3) as u8))
        .collect();
    let next_secret: Vec<u8> = (0..32).map(|i| (i * 7 + 3) as u8).collect();
    let next_file = net.dir().join("matching-secret-2");
    std::fs::write(&next_file, format!("{next_hex}\n")).expect("write");
    for cc in ["FR", "DE", "ES"] {
        net.edit_config(cc, |c| {
            c.matching.next_secret_file = Some(next_file.clone());
            c.matching.next_key_epoch = Some(2);
        });
        net.stop(cc).await;
        net.start(cc).await;
    }
    let finish_early = rotate(&net, "DE", RotateAction::Finish)
        .await
        .expect_err("nothing to finish yet");
    assert_eq!(finish_early.code(), Code::FailedPrecondition);

    // Transition on DE: both epochs hit.
    rotate_to_transition(&net, "DE").await;
    let metrics = net.metrics("DE").await;
    assert_eq!(metrics.get("adep_key_epoch_next"), Some(&2.0));
    assert_eq!(metrics.get("adep_key_rotation_building"), Some(&0.0));
    assert_eq!(
        hits_for_mueller(&net, &old_secret, 1)
            .await
            .expect("epoch 1"),
        1
    );
    assert_eq!(
        hits_for_mueller(&net, &next_secret, 2)
            .await
            .expect("epoch 2"),
        1
    );
    assert_eq!(fr_search_state(&net).await, PeerState::Ok as i32);
    // Imports wait.
    let import = net
        .import(
            "DE",
            vec![record("de-9", "Neu", "Nina", "2000-01-01")],
            ImportMode::Import,
            10,
        )
        .await
        .expect_err("no import during a rotation");
    assert_eq!(import.code(), Code::FailedPrecondition);
    assert!(import.message().contains("key rotation"), "{import:?}");

    // A restart in transition resumes it.
    net.stop("DE").await;
    net.start("DE").await;
    let resumed = rotate(&net, "DE", RotateAction::Status)
        .await
        .expect("status");
    assert_eq!(resumed.phase, "transition");
    assert_eq!(
        hits_for_mueller(&net, &next_secret, 2)
            .await
            .expect("epoch 2"),
        1
    );

    // Finished on DE: epoch 1 is refused with a clear error, epoch 2 hits.
    let done = rotate(&net, "DE", RotateAction::Finish)
        .await
        .expect("finish");
    assert_eq!((done.phase.as_str(), done.active_epoch), ("stable", 2));
    assert_eq!(done.retired_epochs, [1]);
    let refused = hits_for_mueller(&net, &old_secret, 1)
        .await
        .expect_err("epoch 1 is retired");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("epoch 1 was retired on this node; it answers under epoch 2"),
        "{refused:?}"
    );
    assert_eq!(
        hits_for_mueller(&net, &next_secret, 2)
            .await
            .expect("epoch 2"),
        1
    );
    // FR still searches under epoch 1 until it finishes too.
    assert_ne!(fr_search_state(&net).await, PeerState::Ok as i32);
    rotate_to_transition(&net, "FR").await;
    rotate(&net, "FR", RotateAction::Finish)
        .await
        .expect("FR finishes");
    assert_eq!(fr_search_state(&net).await, PeerState::Ok as i32);

    // The follow-up filed before the rotation completes.
    decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve");
    let delivered = until_state(&net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-1");

    // A restart with the configuration not yet updated answers under epoch 2.
    net.stop("DE").await;
    net.start("DE").await;
    assert_eq!(
        hits_for_mueller(&net, &next_secret, 2)
            .await
            .expect("epoch 2"),
        1
    );
    assert!(hits_for_mueller(&net, &old_secret, 1).await.is_err());
    let kinds = net.audit_kinds("DE").await;
    for kind in [
        "keys.rotation_started",
        "keys.rotation_ready",
        "keys.epoch_changed",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}
