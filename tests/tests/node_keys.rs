//! Match key scheme v2 over real nodes, each with its own key seed: searches hit in
//! the right peers with the grades of the scheme's key kinds (the same as under v1,
//! which keyed the same texts with a network secret); a digest made under one node's
//! key finds nothing in another's index; a peer that refuses this node's evaluations
//! is reported refused while the others answer.

use adep_node::{
    domain::{
        identity::{Identity, RecordId},
        matching::Index,
        principals::Role,
        pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Quality, Side},
    },
    secret::KeySeed,
};
use adep_proto::v1::{
    self, ImportMode, MatchRequest, MatchSubject, PeerState, RecordData, SearchRequest,
};
use adep_tests::{TestNetwork, evaluated_keys, reason};
use tonic::Code;

const DOB: &str = "1978-03-21";

/// Family name, given names, date of birth.
type Person = (&'static str, &'static str, &'static str);

/// One (record, query) pair per variant class of node/tests/variants.rs.
const VARIANTS: &[(Person, Person)] = &[
    (("Müller", "Jürgen", DOB), ("MULLER", "Jurgen", DOB)),
    (("Strauß", "Käthe", DOB), ("Strauss", "Kaethe", DOB)),
    (("García López", "Ana", DOB), ("García", "Ana", DOB)),
    (("Nagy", "István", DOB), ("István", "Nagy", DOB)),
    (
        ("Dupont", "Jean Pierre Marie", DOB),
        ("Dupont", "Jean", DOB),
    ),
    (
        ("van der Berg", "Pieter", DOB),
        ("Vanderberg", "Pieter", DOB),
    ),
    (("Гусев", "Юрий", DOB), ("Gussew", "Juri", DOB)),
    (
        ("Παπαδόπουλος", "Γιώργος", DOB),
        ("Papadopulos", "Giorgos", DOB),
    ),
    (("Mohamed", "Karim", DOB), ("Muhammad", "Karim", DOB)),
    (
        ("Rossi", "Marco", "1978-03-11"),
        ("Rossi", "Marco", "1978-11-03"),
    ),
    (
        ("Bianchi", "Luca", "1978-03-21"),
        ("Bianchi", "Luca", "1978-08-21"),
    ),
    (
        ("Ferrari", "Sofia", "1978-03-21"),
        ("Ferrari", "Sofia", "1978"),
    ),
    (("Kowalski", "Andrzej", DOB), ("Kowalsky", "Andrzej", DOB)),
    (("Nowak", "Piotr", DOB), ("Nowak", "", DOB)),
    (
        ("Schmidt", "Karl", "1955-01-01"),
        ("Schmidt", "Karl", "1956-01-01"),
    ),
    (("Weber", "Anna", DOB), ("Weber", "Lena", DOB)),
    (("Lindqvist", "Erik", DOB), ("Okonkwo", "Chidi", DOB)),
];

fn record(id: String, (family, given, dob): (&str, &str, &str)) -> RecordData {
    adep_tests::record(&id, family, given, dob)
}

/// An alias class too: the record carries the alias, the query is the alias.
fn alias_record(id: &str) -> RecordData {
    let mut r = adep_tests::record(id, "Smith", "John", DOB);
    if let Some(identity) = r.identity.as_mut() {
        identity.aliases.push(v1::Alias {
            family_name: "Doe".into(),
            given_names: "Jack".into(),
        });
    }
    r
}

fn identity((family, given, dob): (&str, &str, &str), aliases: &[(String, String)]) -> Identity {
    Identity::from_fields(family, given, dob, aliases).expect("identity")
}

fn queries() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut q: Vec<_> = VARIANTS.iter().map(|(_, q)| *q).collect();
    q.push(("Doe", "Jack", DOB));
    q
}

/// The grades each query gets against all the records, as the scheme defines them:
/// the node's own derive and lookup code, keyed with a fast PRF (which keys coincide
/// does not depend on the PRF).
fn expected_grades() -> Vec<Vec<Quality>> {
    let p = HmacKey::from_secret_bytes(&[1; 32], KeyEpoch(1));
    let mut index = Index::new();
    for (i, (r, _)) in VARIANTS.iter().enumerate() {
        let id = RecordId::try_from(format!("r{i}")).expect("id");
        index.insert(id, &p.hash_identity(&identity(*r, &[]), Side::Record));
    }
    let alias = identity(("Smith", "John", DOB), &[("Doe".into(), "Jack".into())]);
    index.insert(
        RecordId::try_from("alias").expect("id"),
        &p.hash_identity(&alias, Side::Record),
    );
    index.compact();
    queries()
        .iter()
        .map(|q| {
            let mut grades: Vec<Quality> = index
                .lookup(&p.hash_identity(&identity(*q, &[]), Side::Query))
                .iter()
                .map(|f| f.quality)
                .collect();
            grades.sort();
            grades
        })
        .collect()
}

fn quality_of(q: i32) -> Quality {
    match v1::Quality::try_from(q) {
        Ok(v1::Quality::Exact) => Quality::Exact,
        Ok(v1::Quality::Strong) => Quality::Strong,
        Ok(v1::Quality::Weak) => Quality::Weak,
        other => panic!("no quality: {other:?}"),
    }
}

fn records(prefix: &str) -> Vec<RecordData> {
    let mut all: Vec<RecordData> = VARIANTS
        .iter()
        .enumerate()
        .map(|(i, (r, _))| record(format!("{prefix}-{i}"), *r))
        .collect();
    all.push(alias_record(&format!("{prefix}-alias")));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_their_own_keys_hit_with_the_schemes_grades() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    net.start_all().await;
    // Three different seeds, each node's own.
    let seeds: Vec<Vec<u8>> = ["FR", "DE", "ES"].iter().map(|c| net.key_seed(c)).collect();
    assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2] && seeds[0] != seeds[2]);
    for cc in ["FR", "DE", "ES"] {
        KeySeed::from_file(&net.config(cc).matching.seed_file).expect("a seed of 256 bits");
    }
    for cc in ["DE", "ES"] {
        net.import(cc, records(&cc.to_lowercase()), ImportMode::Import, 100)
            .await
            .expect("import");
    }
    let subjects: Vec<v1::Identity> = queries()
        .iter()
        .map(|(family, given, dob)| v1::Identity {
            family_name: (*family).into(),
            given_names: (*given).into(),
            date_of_birth: (*dob).into(),
            ..v1::Identity::default()
        })
        .collect();
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects,
        })
        .await
        .expect("search")
        .into_inner();
    assert!(
        answer.peers.iter().all(|p| p.state == PeerState::Ok as i32),
        "{:?}",
        answer.peers
    );
    let expected = expected_grades();
    assert!(
        expected.iter().filter(|g| !g.is_empty()).count() >= 15,
        "most variant classes hit: {expected:?}"
    );
    for cc in ["DE", "ES"] {
        for (subject, want) in expected.iter().enumerate() {
            let mut got: Vec<Quality> = answer
                .hits
                .iter()
                .filter(|h| h.country == cc && h.subject as usize == subject)
                .map(|h| quality_of(h.quality))
                .collect();
            got.sort();
            assert_eq!(&got, want, "{cc}, query {:?}", queries()[subject]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_made_under_one_nodes_key_finds_nothing_in_anothers_index() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    net.start_all().await;
    let mueller = ("Müller", "Hans Peter", "1970-05-12");
    for cc in ["DE", "ES"] {
        net.import(
            cc,
            vec![adep_tests::record(
                &format!("{cc}-1"),
                mueller.0,
                mueller.1,
                mueller.2,
            )],
            ImportMode::Import,
            10,
        )
        .await
        .expect("import");
    }
    let match_request = |keys| MatchRequest {
        request_id: "cross-key".into(),
        country: "FR".into(),
        key_epoch: 1,
        reason: Some(reason()),
        subjects: vec![MatchSubject { subject: 0, keys }],
        audit_head: None,
    };
    let mut to_de = net.federation_as_peer("DE", "FR");
    let mut to_es = net.federation_as_peer("ES", "FR");
    let (_, under_es) = evaluated_keys(&mut to_es, "FR", mueller)
        .await
        .expect("ES evaluates");
    let (_, under_de) = evaluated_keys(&mut to_de, "FR", mueller)
        .await
        .expect("DE evaluates");
    assert_ne!(under_es, under_de, "two nodes, two keys");
    let hits = |r: tonic::Response<v1::MatchResponse>| -> usize {
        r.into_inner().results.iter().map(|s| s.hits.len()).sum()
    };
    assert_eq!(
        hits(to_de.r#match(match_request(under_de)).await.expect("match")),
        1
    );
    assert_eq!(
        hits(
            to_de
                .r#match(match_request(under_es.clone()))
                .await
                .expect("match")
        ),
        0,
        "ES's digests find nothing in DE's index"
    );
    assert_eq!(
        hits(to_es.r#match(match_request(under_es)).await.expect("match")),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_refusing_our_evaluations_is_reported_refused_and_the_others_answer() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    // One subject derives a few dozen keys: DE evaluates at most 10 a minute for FR.
    net.edit_config("DE", |c| c.limits.evaluations_per_minute_per_peer = 10);
    net.start_all().await;
    for cc in ["DE", "ES"] {
        net.import(
            cc,
            vec![adep_tests::record(
                &format!("{cc}-1"),
                "Müller",
                "Hans Peter",
                "1970-05-12",
            )],
            ImportMode::Import,
            10,
        )
        .await
        .expect("import");
    }
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![v1::Identity {
                family_name: "Müller".into(),
                given_names: "Hans Peter".into(),
                date_of_birth: "1970-05-12".into(),
                ..v1::Identity::default()
            }],
        })
        .await
        .expect("search")
        .into_inner();
    let state = |cc: &str| {
        answer
            .peers
            .iter()
            .find(|p| p.country == cc)
            .map(|p| (p.state, p.detail.clone()))
            .expect("peer")
    };
    let (de, de_error) = state("DE");
    assert_eq!(de, PeerState::Refused as i32, "{de_error}");
    assert!(
        de_error.contains("limits.evaluations_per_minute_per_peer"),
        "{de_error}"
    );
    assert_eq!(state("ES").0, PeerState::Ok as i32);
    assert!(answer.hits.iter().any(|h| h.country == "ES"));
    assert!(answer.hits.iter().all(|h| h.country != "DE"));
    // DE audited the refusal with its counts, and a malformed element is named.
    let refused = net.audit_entries_of("DE", "rate_limited").await;
    assert!(
        refused
            .iter()
            .any(|e| e["rpc"] == "Evaluate" && e["elements"].as_u64() > Some(10)),
        "{refused:?}"
    );
    // Refusals name the element or the limit, never a value.
    let mut from_es = net.federation_as_peer("DE", "ES");
    let mut refused = async |elements: Vec<prost::bytes::Bytes>| {
        from_es
            .evaluate(v1::EvaluateRequest {
                request_id: "bad-elements".into(),
                country: "ES".into(),
                subjects: vec![v1::BlindedSubject { elements }],
            })
            .await
            .expect_err("refused")
    };
    let bad = refused(vec![prost::bytes::Bytes::from_static(&[0xff; 32])]).await;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad.message(),
        "field `subjects[0].elements[0]`: not a ristretto255 element"
    );
    let short = refused(vec![prost::bytes::Bytes::from_static(&[1; 31])]).await;
    assert_eq!(
        short.message(),
        "field `subjects[0].elements[0]`: 31 bytes, expected 32"
    );
    let too_many = refused(vec![prost::bytes::Bytes::from_static(&[1; 32]); 1025]).await;
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many
            .message()
            .contains("1025 elements exceed the limit of 1024 per subject"),
        "{}",
        too_many.message()
    );
}
