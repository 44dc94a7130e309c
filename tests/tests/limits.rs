//! Rate limits over real nodes: Match calls per peer, searches per officer; over the
//! limit a call is refused with RESOURCE_EXHAUSTED naming the limit, and audited.

use adep_node::domain::principals::Role;
use adep_proto::v1::{Identity as ProtoIdentity, MatchRequest, MatchSubject, SearchRequest};
use adep_tests::{TestNetwork, match_keys, reason};
use tonic::Code;

/// A Match of `country` to DE, its keys evaluated by DE.
async fn match_request(net: &TestNetwork, country: &str) -> MatchRequest {
    let mut client = net.federation_as_peer("DE", country);
    MatchRequest {
        request_id: "rate-test".into(),
        country: country.into(),
        key_epoch: 1,
        reason: Some(reason()),
        subjects: vec![MatchSubject {
            subject: 0,
            keys: match_keys(&mut client, country, ("Nobody", "Known", "1990-01-01")).await,
        }],
        audit_head: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_match_rate_is_refused_and_others_are_not() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    net.edit_config("DE", |c| c.limits.matches_per_minute_per_peer = 3);
    net.start_all().await;
    let mut fr = net.federation_as_peer("DE", "FR");
    for _ in 0..3 {
        fr.r#match(match_request(&net, "FR").await)
            .await
            .expect("within the limit");
    }
    let refused = fr
        .r#match(match_request(&net, "FR").await)
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.matches_per_minute_per_peer"),
        "{}",
        refused.message()
    );
    // Each peer has its own allowance.
    net.federation_as_peer("DE", "ES")
        .r#match(match_request(&net, "ES").await)
        .await
        .expect("ES is within its limit");
    assert!(
        net.audit_kinds("DE")
            .await
            .contains(&"rate_limited".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_over_the_search_rate_is_refused() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("FR", |c| c.limits.searches_per_minute_per_officer = 2);
    net.start_all().await;
    let search = || SearchRequest {
        reason: Some(reason()),
        subjects: vec![ProtoIdentity {
            family_name: "Nobody".into(),
            given_names: "Known".into(),
            date_of_birth: "1990-01-01".into(),
            ..ProtoIdentity::default()
        }],
    };
    let mut officer = net.national("FR", Role::Officer);
    for _ in 0..2 {
        officer.search(search()).await.expect("within the limit");
    }
    let refused = officer.search(search()).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.searches_per_minute_per_officer"),
        "{}",
        refused.message()
    );
    let kinds = net.audit_kinds("FR").await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "search.sent").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"rate_limited".to_owned()), "{kinds:?}");
}

/// A message whose field 2 is bytes where `MatchRequest` has a string: with invalid
/// UTF-8 in it, the node cannot decode it as a Match.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAMatch {
    #[prost(bytes = "vec", tag = "2")]
    country: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_or_oversized_message_is_invalid_argument_naming_the_problem() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("DE", |c| c.limits.max_message_bytes = 64 * 1024);
    net.start_all().await;

    // Undecodable: the caller's fault, not an INTERNAL one.
    let d = net.dir().join("FR");
    let channel = net.federation_channel("DE", Some((d.join("node.pem"), d.join("node.key.pem"))));
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let undecodable = grpc
        .unary::<NotAMatch, adep_proto::v1::MatchResponse, _>(
            tonic::Request::new(NotAMatch {
                country: vec![0xff, 0xfe, 0xfd],
            }),
            http::uri::PathAndQuery::from_static("/adep.v1.Federation/Match"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("not a Match");
    assert_eq!(undecodable.code(), Code::InvalidArgument, "{undecodable:?}");
    assert_eq!(
        undecodable.message(),
        "the request is not a well-formed Match message"
    );

    // Oversized: refused naming the limit.
    let mut request = match_request(&net, "FR").await;
    request.request_id = "x".repeat(100 * 1024);
    let oversized = net
        .federation_as_peer("DE", "FR")
        .r#match(request)
        .await
        .expect_err("over limits.max_message_bytes");
    assert_eq!(oversized.code(), Code::InvalidArgument, "{oversized:?}");
    assert!(
        oversized
            .message()
            .contains("limits.max_message_bytes (65536 bytes)"),
        "{}",
        oversized.message()
    );
}
