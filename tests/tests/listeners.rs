//! Both listeners over real mutual TLS: who is admitted, who is refused, and how.

use adep_node::{domain::principals::Role, tooling::pki::Leaf};
use adep_proto::v1::{PeerState, StatusRequest};
use adep_tests::{TestNetwork, cc};
use tonic::Code;

fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = r.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should contain {needle:?}",
        status.message()
    );
}

#[tokio::test]
async fn configured_peer_call_succeeds() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start_all().await;
    let answer = net
        .federation_as_peer("FR", "DE")
        .hello(TestNetwork::hello("DE"))
        .await
        .expect("a configured peer is admitted")
        .into_inner();
    assert_eq!(answer.country, "FR");
    assert_eq!(answer.protocol_version, adep_proto::PROTOCOL_VERSION);
}

#[tokio::test]
async fn status_reports_each_peer_independently() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES", "IT"]).await;
    net.start("FR").await;
    net.start("DE").await;
    // ES accepts connections but never answers (hung); IT is down.
    net.release("IT");
    let status = net
        .national("FR", Role::Officer)
        .status(StatusRequest { check_peers: true })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.country, "FR");
    let caller = status.caller.expect("caller");
    assert_eq!(caller.user_id, "fr-officer");
    assert_eq!(caller.role, adep_proto::v1::Role::Officer as i32);
    let state = |c: &str| {
        status
            .peers
            .iter()
            .find(|p| p.country == c)
            .map(|p| PeerState::try_from(p.state).expect("state"))
    };
    assert_eq!(state("DE"), Some(PeerState::Ok));
    assert_eq!(state("ES"), Some(PeerState::TimedOut));
    assert_eq!(state("IT"), Some(PeerState::Unavailable));
}

#[tokio::test]
async fn refuses_client_without_certificate() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    assert_refused(
        net.federation_with("FR", None)
            .hello(TestNetwork::hello("DE"))
            .await,
        Code::Unauthenticated,
        "requires a client certificate",
    );
    assert_refused(
        net.national_with("FR", None)
            .status(StatusRequest::default())
            .await,
        Code::Unauthenticated,
        "requires a client certificate",
    );
}

#[tokio::test]
async fn refuses_certificate_from_another_ca() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    // Another network with the same country names: its certificates chain to other CAs.
    let other = TestNetwork::new(&["DE"]).await;
    let de = other.dir().join("DE");
    assert_refused(
        net.federation_with("FR", Some((de.join("node.pem"), de.join("node.key.pem"))))
            .hello(TestNetwork::hello("DE"))
            .await,
        Code::Unauthenticated,
        "not issued by the network CA",
    );
    let user = other.dir().join("DE/users");
    assert_refused(
        net.national_with(
            "FR",
            Some((user.join("officer.pem"), user.join("officer.key.pem"))),
        )
        .status(StatusRequest::default())
        .await,
        Code::Unauthenticated,
        "not issued by the national CA",
    );
}

#[tokio::test]
async fn refuses_network_certificate_of_unconfigured_peer() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    let it = net.issue(None, Leaf::Node(cc("IT")), "it-node");
    assert_refused(
        net.federation_with("FR", Some(it))
            .hello(TestNetwork::hello("IT"))
            .await,
        Code::PermissionDenied,
        "adep://node/IT is not a configured peer",
    );
}

#[tokio::test]
async fn refuses_national_user_on_federation_listener() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    // A real user certificate: its national CA is not the network CA.
    let users = net.dir().join("FR/users");
    assert_refused(
        net.federation_with(
            "FR",
            Some((users.join("officer.pem"), users.join("officer.key.pem"))),
        )
        .hello(TestNetwork::hello("FR"))
        .await,
        Code::Unauthenticated,
        "not issued by the network CA",
    );
    // Even a user identity that the network CA signed is not a peer.
    let odd = net.issue(None, Leaf::User(cc("DE"), "de-officer".into()), "net-user");
    assert_refused(
        net.federation_with("FR", Some(odd))
            .hello(TestNetwork::hello("DE"))
            .await,
        Code::PermissionDenied,
        "a national user certificate cannot call the federation listener",
    );
}

#[tokio::test]
async fn refuses_peer_certificate_on_national_listener() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    let de = net.dir().join("DE");
    assert_refused(
        net.national_with("FR", Some((de.join("node.pem"), de.join("node.key.pem"))))
            .status(StatusRequest::default())
            .await,
        Code::Unauthenticated,
        "not issued by the national CA",
    );
    // A node identity signed by FR's own national CA is still not a user.
    let odd = net.issue(Some("FR"), Leaf::Node(cc("DE")), "nat-node");
    assert_refused(
        net.national_with("FR", Some(odd))
            .status(StatusRequest::default())
            .await,
        Code::PermissionDenied,
        "a node certificate cannot call the national listener",
    );
}

#[tokio::test]
async fn refuses_user_whose_certificate_maps_to_no_role() {
    let mut net = TestNetwork::new(&["FR"]).await;
    net.start("FR").await;
    let nobody = net.issue(
        Some("FR"),
        Leaf::User(cc("FR"), "fr-nobody".into()),
        "nobody",
    );
    assert_refused(
        net.national_with("FR", Some(nobody))
            .status(StatusRequest::default())
            .await,
        Code::PermissionDenied,
        "user `fr-nobody` has no role on this node",
    );
    // Every role of the PKI is admitted.
    for role in Role::ALL {
        let s = net
            .national("FR", role)
            .status(StatusRequest::default())
            .await
            .expect("a configured user is admitted")
            .into_inner();
        assert_eq!(s.caller.expect("caller").user_id, format!("fr-{role}"));
    }
}

#[tokio::test]
async fn refuses_message_claiming_another_country_than_its_certificate() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    net.start("FR").await;
    assert_refused(
        net.federation_as_peer("FR", "DE")
            .hello(TestNetwork::hello("ES"))
            .await,
        Code::PermissionDenied,
        "field `country`: the message claims another country than the certificate's (DE)",
    );
    // The error names the field, never what the caller sent in it.
    let huge = net
        .federation_as_peer("FR", "DE")
        .hello(TestNetwork::hello(&"X".repeat(1 << 20)))
        .await
        .expect_err("refused");
    assert_eq!(huge.code(), Code::PermissionDenied);
    assert!(huge.message().len() < 200, "{} bytes", huge.message().len());
    assert!(!huge.message().contains("XXXX"));
}

#[tokio::test]
async fn health_and_reflection_answer_on_both_listeners() {
    use tokio_stream::StreamExt as _;
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    let de = net.dir().join("DE");
    let users = net.dir().join("FR/users");
    let peer_cert = Some((de.join("node.pem"), de.join("node.key.pem")));
    let user_cert = Some((users.join("operator.pem"), users.join("operator.key.pem")));

    for (channel, service) in [
        (
            net.federation_channel("FR", peer_cert.clone()),
            "adep.v1.Federation",
        ),
        (
            net.national_channel("FR", user_cert.clone()),
            "adep.v1.National",
        ),
    ] {
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection answers")
            .into_inner();
        let first = answers.next().await.expect("one answer").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
            panic!("unexpected reflection answer {first:?}");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&service), "{names:?}");
    }
    // Health answers without a client certificate, for container probes; it says
    // only whether the node serves. Every other service, reflection included, is
    // behind the certificate check.
    let anonymous = net.federation_channel("FR", None);
    let health = HealthClient::new(anonymous.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers a probe")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let refused = ServerReflectionClient::new(anonymous)
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await;
    assert_eq!(refused.expect_err("refused").code(), Code::Unauthenticated);
}
