//! Running a node (issue 6) over real nodes: the metrics endpoint during a search and
//! a follow-up; certificates reloaded without a restart.

use std::{net::SocketAddr, path::Path};

use adep_node::{
    domain::principals::Role,
    grpc::tls,
    tooling::pki::{self, Leaf},
};
use adep_proto::v1::{
    Decision, FollowUpState, PeerState, ReloadCertificatesRequest, SearchRequest, StatusRequest,
};
use adep_tests::{TestNetwork, cc, followups::*, logs, reason};
use tonic::Code;

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
    until_owner_state(&net, &filed.id, FollowUpState::Delivered).await;

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

/// The certificate a listener serves to a new connection (DER).
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let config = tls::client_config(tls::root_store(ca).expect("CA"), None).expect("config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .to_vec()
}

/// DE's status in a search by FR's officer (for someone nobody holds).
async fn de_from_fr(net: &TestNetwork) -> adep_proto::v1::PeerStatus {
    net.national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![adep_proto::v1::Identity {
                family_name: "Nobody".into(),
                given_names: "Known".into(),
                date_of_birth: "1990-01-01".into(),
                ..adep_proto::v1::Identity::default()
            }],
        })
        .await
        .expect("search")
        .into_inner()
        .peers
        .into_iter()
        .find(|p| p.country == "DE")
        .expect("DE answers in FR's search")
}

fn der_of(pem: &Path) -> Vec<u8> {
    tls::load_certs(pem).expect("cert")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_is_served_to_new_connections_without_a_restart() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start_all().await;
    let fr = net.config("FR");
    let national = net.national_addr("FR");
    let ca = fr.tls.national_ca.clone();
    assert_eq!(
        served_certificate(national, &ca).await,
        der_of(&fr.tls.national_cert)
    );
    let old = der_of(&fr.tls.national_cert);
    // A connection made before the renewal, used again after it.
    let mut operator = net.national("FR", Role::Operator);
    operator
        .status(StatusRequest { check_peers: false })
        .await
        .expect("status");

    // Renew FR's national and node certificates in place.
    let (cert, key) = net.issue(Some("FR"), Leaf::NationalServer(cc("FR")), "fr-national-2");
    std::fs::copy(&cert, &fr.tls.national_cert).expect("copy");
    std::fs::copy(&key, &fr.tls.national_key).expect("copy");
    let (node_cert, node_key) = net.issue(None, Leaf::Node(cc("FR")), "fr-node-2");
    std::fs::copy(&node_cert, &fr.tls.node_cert).expect("copy");
    std::fs::copy(&node_key, &fr.tls.node_key).expect("copy");
    assert_eq!(
        served_certificate(national, &ca).await,
        old,
        "not before the reload"
    );

    let reloaded = operator
        .reload_certificates(ReloadCertificatesRequest {})
        .await
        .expect("reload")
        .into_inner();
    let names: Vec<&str> = reloaded
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["node", "national"]);
    let new = der_of(&cert);
    assert_ne!(new, old);
    assert_eq!(
        served_certificate(national, &ca).await,
        new,
        "new connections"
    );
    assert_eq!(
        served_certificate(net.federation_addr("FR"), &net.dir().join("network-ca.pem")).await,
        der_of(&node_cert)
    );
    // The open connection goes on working; FR's searches reach DE with FR's new
    // node certificate.
    operator
        .status(StatusRequest { check_peers: false })
        .await
        .expect("the old connection still answers");
    assert_eq!(de_from_fr(&net).await.state, PeerState::Ok as i32);

    // A broken key file: refused, nothing changes.
    std::fs::write(&fr.tls.national_key, "not a key").expect("write");
    let refused = operator
        .reload_certificates(ReloadCertificatesRequest {})
        .await
        .expect_err("a broken key is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("nothing reloaded"),
        "{refused:?}"
    );
    assert_eq!(served_certificate(national, &ca).await, new, "unchanged");
    assert!(
        net.audit_kinds("FR")
            .await
            .contains(&"tls.reloaded".to_owned())
    );

    // Only operators reload.
    let by_officer = net
        .national("FR", Role::Officer)
        .reload_certificates(ReloadCertificatesRequest {})
        .await
        .expect_err("officers do not reload");
    assert_eq!(by_officer.code(), Code::PermissionDenied);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_its_expiry_is_warned_of_in_logs_metrics_and_check_config() {
    logs::capture("info");
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    let fr = net.config("FR");
    let (cert, key) = net.issue_for_days(None, Leaf::Node(cc("FR")), "fr-node-short", 10);
    std::fs::copy(&cert, &fr.tls.node_cert).expect("copy");
    std::fs::copy(&key, &fr.tls.node_key).expect("copy");

    let checks = adep_node::check::check_config(&net.config_path("FR"));
    let node_cert = checks
        .iter()
        .find(|c| c.field == "tls.node_cert")
        .expect("a check of tls.node_cert");
    assert_eq!(
        node_cert.verdict,
        adep_node::check::Verdict::Warning,
        "{node_cert:?}"
    );
    assert!(
        node_cert.detail.contains("expires in 9 days")
            || node_cert.detail.contains("expires in 10 days"),
        "{node_cert:?}"
    );

    net.start_all().await;
    let metrics = net.metrics("FR").await;
    let left = sample(
        &metrics,
        r#"adep_certificate_expiry_seconds{certificate="node"}"#,
    );
    assert!(left > 9.0 * 86_400.0 && left <= 10.0 * 86_400.0, "{left}");
    let warned = logs::text();
    assert!(
        warned.contains("the node's certificate expires soon")
            && (warned.contains("days_left=9") || warned.contains("days_left=10")),
        "no expiry warning in the log: {}",
        warned
            .lines()
            .filter(|l| l.contains("certificate"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_certificate_is_refused_after_a_reload_without_a_restart() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    let fr_dir = net.dir().join("FR");
    let ca = fr_dir.join("national-ca.pem");
    let crl = fr_dir.join("national-ca.crl.pem");
    let revoke = |cert: &Path| {
        pki::revoke(&ca, &fr_dir.join("national-ca.key.pem"), cert, &crl).expect("revoke")
    };
    // FR publishes its national CA's list from the start: one old user revoked.
    let (old_user, _) = net.issue(
        Some("FR"),
        Leaf::User(cc("FR"), "fr-old".into()),
        "fr-old-user",
    );
    // `pki init` wrote the list empty (number 1) and named it in FR's tls.crls.
    let first = revoke(&old_user);
    assert_eq!((first.revoked, first.number, first.already), (1, 2, false));
    net.start_all().await;
    let status = || async {
        net.national("FR", Role::Officer)
            .status(StatusRequest { check_peers: false })
            .await
    };
    status().await.expect("the officer is not revoked yet");

    // The officer's certificate is revoked; the node keeps serving it until it
    // re-reads the list.
    let second = revoke(&fr_dir.join("users/officer.pem"));
    assert_eq!(
        (second.revoked, second.number, second.already),
        (2, 3, false)
    );
    status().await.expect("not before the reload");
    let reloaded = net
        .national("FR", Role::Operator)
        .reload_certificates(ReloadCertificatesRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert_eq!(reloaded.revoked, 2);
    let refused = status().await.expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "client certificate refused on the national listener: revoked by the national CA"
    );
    let audited = net.audit_entries_of("FR", "call.refused").await;
    assert_eq!(
        audited[0]["caller"], "adep://user/FR/fr-officer (revoked certificate)",
        "{audited:?}"
    );
    assert!(
        audited[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked by the national CA")),
        "{audited:?}"
    );
    // Other users, and the peers (whose CA's list revokes none of them), go on.
    net.national("FR", Role::Operator)
        .status(StatusRequest { check_peers: false })
        .await
        .expect("the operator is not revoked");
    net.federation_as_peer("FR", "DE")
        .hello(TestNetwork::hello("DE"))
        .await
        .expect("DE still reaches FR");
    // Revoking twice changes nothing but the list's number.
    let again = revoke(&fr_dir.join("users/officer.pem"));
    assert_eq!((again.revoked, again.number, again.already), (2, 4, true));
    let checks = adep_node::check::check_config(&net.config_path("FR"));
    let listed = checks
        .iter()
        .find(|c| c.field == "tls.crls" && c.detail.contains("national-ca.crl.pem"))
        .expect("a check of the national CA's list");
    assert!(listed.detail.contains("2 revoked by"), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peer_node_is_refused_both_ways_after_a_reload() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    let dir = net.dir().to_owned();
    let crl = dir.join("network-ca.crl.pem");
    let revoke = |cert: &Path| {
        pki::revoke(
            &dir.join("network-ca.pem"),
            &dir.join("network-ca.key.pem"),
            cert,
            &crl,
        )
        .expect("revoke")
    };
    let (old_node, _) = net.issue(None, Leaf::Node(cc("ES")), "es-old-node");
    revoke(&old_node);
    net.edit_config("FR", |c| c.tls.crls = vec![crl.clone()]);
    net.start_all().await;
    assert_eq!(de_from_fr(&net).await.state, PeerState::Ok as i32);
    net.federation_as_peer("FR", "DE")
        .hello(TestNetwork::hello("DE"))
        .await
        .expect("DE reaches FR");

    // The network CA revokes DE's node certificate; FR re-reads the list.
    revoke(&dir.join("DE/node.pem"));
    net.national("FR", Role::Operator)
        .reload_certificates(ReloadCertificatesRequest {})
        .await
        .expect("reload");
    // DE calling FR is refused...
    let refused = net
        .federation_as_peer("FR", "DE")
        .hello(TestNetwork::hello("DE"))
        .await
        .expect_err("DE's certificate is revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().ends_with("revoked by the network CA"),
        "{refused:?}"
    );
    // ...and FR no longer sends DE its queries: DE's server certificate is refused.
    let de = de_from_fr(&net).await;
    assert_ne!(de.state, PeerState::Ok as i32, "{de:?}");
    assert!(de.detail.to_lowercase().contains("revoked"), "{de:?}");
}
