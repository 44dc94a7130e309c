//! Running a node (issue 6) over real nodes: the metrics endpoint during a search and
//! a follow-up.

use adep_node::config::Role;
use adep_proto::v1::{Decision, FollowUpState};
use adep_tests::{TestNetwork, followups::*};

/// A sample's value, or 0 when the series does not exist yet.
fn sample(m: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_search_and_follow_up_and_hold_no_personal_data() {
    let net = network().await;
    let fr_before = net.metrics("FR").await;
    let de_before = net.metrics("DE").await;
    let search_ok =
        r#"adep_calls_total{listener="national",rpc="Search",caller="officer",code="OK"}"#;
    let match_from_fr =
        r#"adep_calls_total{listener="federation",rpc="Match",caller="FR",code="OK"}"#;
    assert_eq!(sample(&fr_before, search_ok), 0.0);
    assert_eq!(sample(&de_before, "adep_index_records"), 2.0);

    let hit_ref = hit_in_de(&net, "Müller", "Hans Peter", "1970-05-12").await;
    let filed = request(&net, &hit_ref).await.expect("filed");
    let fr_pending = net.metrics("FR").await;
    assert_eq!(
        sample(
            &fr_pending,
            r#"adep_followups{direction="outgoing",state="pending"}"#
        ),
        1.0
    );
    decide(&net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approve");
    until_state(&net, &filed.id, FollowUpState::Delivered).await;

    let fr = net.metrics("FR").await;
    let de = net.metrics("DE").await;
    assert_eq!(sample(&fr, search_ok), 1.0);
    assert_eq!(
        sample(
            &fr,
            r#"adep_peer_calls_total{peer="DE",rpc="Match",outcome="ok"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &fr,
            r#"adep_hits_total{direction="received",quality="exact"}"#
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &fr,
            r#"adep_followups{direction="outgoing",state="delivered"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &fr,
            r#"adep_call_duration_seconds_count{listener="national",rpc="Search"}"#
        ) >= 1.0
    );
    assert_eq!(
        sample(&de, match_from_fr) - sample(&de_before, match_from_fr),
        1.0
    );
    assert!(
        sample(
            &de,
            r#"adep_hits_total{direction="issued",quality="exact"}"#
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &de,
            r#"adep_followups{direction="incoming",state="delivered"}"#
        ),
        1.0
    );
    assert_eq!(sample(&de, "adep_outbox_backlog"), 0.0);
    assert_eq!(sample(&de, "adep_followups_overdue"), 0.0);
    assert_eq!(sample(&de, "adep_key_epoch"), 1.0);
    assert!(
        sample(
            &de,
            r#"adep_certificate_expiry_seconds{certificate="node"}"#
        ) > 86_400.0
    );
    assert!(sample(&de, "adep_audit_entries_total") >= 3.0);

    // Nothing personal, and no reference or id that leads to a person.
    for cc in ["FR", "DE"] {
        let (_, text) = net.metrics_get(cc, "/metrics").await;
        for value in [
            "Müller",
            "Hans Peter",
            "1970-05-12",
            "payload of de-1",
            "de-1",
            hit_ref.as_str(),
            filed.id.as_str(),
            "fr-officer",
            "de-reviewer",
        ] {
            assert!(!text.contains(value), "{cc}'s metrics hold {value:?}");
        }
    }
    let (status, _) = net.metrics_get("DE", "/other").await;
    assert!(status.contains("404"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_counted_by_code() {
    let net = TestNetwork::new(&["FR", "DE"]).await;
    let mut net = net;
    net.start_all().await;
    let _ = net
        .federation_with("DE", None)
        .hello(TestNetwork::hello("FR"))
        .await
        .expect_err("no certificate");
    let de = net.metrics("DE").await;
    assert_eq!(
        sample(
            &de,
            r#"adep_calls_total{listener="federation",rpc="Hello",caller="none",code="UNAUTHENTICATED"}"#
        ),
        1.0
    );
}
