//! Step 1 over real nodes: records imported through the national API, Match between
//! nodes over mutual TLS, and the officer's Search with per-peer status.

use adep_node::domain::principals::Role;
use adep_proto::v1::{
    Aim, CountRecordsRequest, DeleteRecordsRequest, Identity as ProtoIdentity, ImportMode,
    MatchKey, MatchRequest, MatchSubject, PeerState, Quality, SearchRequest,
};
use adep_tests::{TestNetwork, reason, record};
use tonic::Code;

fn subject(family: &str, given: &str, dob: &str) -> ProtoIdentity {
    ProtoIdentity {
        family_name: family.into(),
        given_names: given.into(),
        date_of_birth: dob.into(),
        ..ProtoIdentity::default()
    }
}

fn search(subjects: Vec<ProtoIdentity>) -> SearchRequest {
    SearchRequest {
        reason: Some(reason()),
        subjects,
    }
}

fn national_records() -> Vec<adep_proto::v1::RecordData> {
    vec![
        record("de-1", "Müller", "Hans Peter", "1970-05-12"),
        record("de-2", "García López", "Ana", "1980-02-29"),
        record("de-3", "Гусев", "Юрий", "1978-03-21"),
        record("de-4", "Schmidt", "Karl", "1955-01-01"),
    ]
}

/// Keys of a subject as FR would send them to DE, evaluated by DE.
async fn subject_keys(net: &TestNetwork, family: &str, given: &str, dob: &str) -> Vec<MatchKey> {
    let mut fr = net.federation_as_peer("DE", "FR");
    adep_tests::match_keys(&mut fr, "FR", (family, given, dob)).await
}

fn match_request(subjects: Vec<Vec<MatchKey>>) -> MatchRequest {
    MatchRequest {
        request_id: "test-request-1".into(),
        country: "FR".into(),
        key_epoch: 1,
        reason: Some(reason()),
        subjects: subjects
            .into_iter()
            .enumerate()
            .map(|(i, keys)| MatchSubject {
                subject: i as u32,
                keys,
            })
            .collect(),
        audit_head: None,
    }
}

#[tokio::test]
async fn search_returns_hits_and_each_peer_status_with_one_peer_down_and_one_hung() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES", "IT"]).await;
    net.start("FR").await;
    net.start("DE").await;
    // ES accepts connections and never answers (too slow); IT is down.
    net.release("IT");
    let summary = net
        .import("DE", national_records(), ImportMode::Import, 2)
        .await
        .expect("import");
    assert_eq!((summary.added, summary.records), (4, 4));

    let resp = net
        .national("FR", Role::Officer)
        .search(search(vec![
            subject("MUELLER", "Hans", "1970-05-12"),
            subject("Gussew", "Juri", "1978-03-21"),
            subject("Nobody", "Known", "1990-01-01"),
        ]))
        .await
        .expect("search")
        .into_inner();
    let state = |c: &str| {
        resp.peers
            .iter()
            .find(|p| p.country == c)
            .map(|p| PeerState::try_from(p.state).expect("state"))
    };
    assert_eq!(state("DE"), Some(PeerState::Ok));
    assert_eq!(state("ES"), Some(PeerState::TimedOut));
    assert_eq!(state("IT"), Some(PeerState::Unavailable));
    assert_eq!(resp.request_id.len(), 32);

    let mut hits: Vec<(u32, &str, i32)> = resp
        .hits
        .iter()
        .map(|h| (h.subject, h.country.as_str(), h.quality))
        .collect();
    hits.sort();
    assert_eq!(
        hits,
        [
            (0, "DE", Quality::Strong as i32),
            (1, "DE", Quality::Strong as i32)
        ],
        "Hans Peter / Hans is strong (first given name); Gussew/Juri is strong (phonetic)"
    );
    for hit in &resp.hits {
        assert_eq!(hit.hit_ref.len(), 40);
        assert!(hit.hit_ref.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(hit.expires_at > 0);
    }
}

#[tokio::test]
async fn match_answers_with_fresh_hit_references_and_no_record_data() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("DE").await;
    net.import("DE", national_records(), ImportMode::Import, 100)
        .await
        .expect("import");
    let mut fr = net.federation_as_peer("DE", "FR");
    let keys = subject_keys(&net, "Muller", "Hans Peter", "1970-05-12").await;
    let none = subject_keys(&net, "Unknown", "Person", "1991-09-09").await;
    let first = fr
        .r#match(match_request(vec![keys.clone(), none]))
        .await
        .expect("match")
        .into_inner();
    assert_eq!(first.results.len(), 2);
    assert_eq!(first.results[0].hits.len(), 1);
    assert_eq!(first.results[0].hits[0].quality, Quality::Exact as i32);
    assert!(first.results[1].hits.is_empty(), "no hit");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let expires = first.results[0].hits[0].expires_at;
    assert!(
        (expires - now - 168 * 3600).abs() < 60,
        "expires after the configured 168 h"
    );

    let second = fr
        .r#match(match_request(vec![keys]))
        .await
        .expect("match")
        .into_inner();
    assert_ne!(
        first.results[0].hits[0].hit_ref, second.results[0].hits[0].hit_ref,
        "each answer issues a new random reference"
    );
    // The answer is references and grades only: nothing of the record travels.
    let encoded = format!("{first:?}");
    for value in ["de-1", "Müller", "Hans", "1970", "payload"] {
        assert!(
            !encoded.contains(value),
            "{value} leaked into a Match answer"
        );
    }
}

#[tokio::test]
async fn match_refuses_batches_and_keys_over_the_limits_and_bad_fields() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("DE").await;
    let mut fr = net.federation_as_peer("DE", "FR");
    let keys = subject_keys(&net, "Doe", "John", "1970-01-01").await;

    let too_many = match_request(vec![keys.clone(); 1001]);
    let err = fr
        .r#match(too_many)
        .await
        .expect_err("over the batch limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("limit of 1000 per batch (limits.max_subjects_per_match)"),
        "{}",
        err.message()
    );

    let many_keys: Vec<MatchKey> = keys.iter().cycle().take(1025).cloned().collect();
    let err = fr
        .r#match(match_request(vec![many_keys]))
        .await
        .expect_err("keys");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("limit of 1024 per subject (limits.max_keys_per_subject)"),
        "{}",
        err.message()
    );

    let mut short = keys.clone();
    short[2].digest.truncate(15);
    let err = fr
        .r#match(match_request(vec![keys.clone(), short]))
        .await
        .expect_err("digest");
    assert_eq!(
        err.message(),
        "field `subjects[1].keys[2].digest`: 15 bytes, expected 16"
    );

    let mut unknown = keys.clone();
    unknown[0].kind = 99;
    let err = fr
        .r#match(match_request(vec![unknown]))
        .await
        .expect_err("kind");
    assert_eq!(
        err.message(),
        "field `subjects[0].keys[0].kind`: 99 is not a key kind of scheme v2"
    );

    let mut epoch = match_request(vec![keys.clone()]);
    epoch.key_epoch = 7;
    let err = fr.r#match(epoch).await.expect_err("epoch");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("epoch 7 is not served"),
        "{}",
        err.message()
    );

    let mut no_reason = match_request(vec![keys.clone()]);
    no_reason.reason = None;
    let err = fr.r#match(no_reason).await.expect_err("reason");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "field `reason` is required")
    );

    let mut claims_other = match_request(vec![keys]);
    claims_other.country = "ES".into();
    let err = fr.r#match(claims_other).await.expect_err("country");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn import_is_all_or_nothing_idempotent_and_sync_erases_absent_records() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    net.start("DE").await;
    let count = |net: &TestNetwork| {
        let mut client = net.national("DE", Role::Operator);
        async move {
            client
                .count_records(CountRecordsRequest {})
                .await
                .expect("count")
                .into_inner()
        }
    };
    net.import("DE", national_records(), ImportMode::Import, 3)
        .await
        .expect("import");
    let before = count(&net).await;
    assert_eq!(before.records, 4);
    assert!(before.keys > 4 * 10);

    // One bad record in the second batch: nothing of the import is stored.
    let mut bad = vec![record("de-5", "Neu", "Eva", "1999-09-09")];
    bad.extend(national_records());
    bad.push(record("de-6", "Kaputt", "Max", "1970-02-30"));
    let err = net
        .import("DE", bad, ImportMode::Import, 3)
        .await
        .expect_err("invalid record");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "records[5]: field `date_of_birth` is invalid: no such day in that month"
    );
    assert_eq!(count(&net).await, before);

    let dup = vec![record("x", "A", "B", "1970"), record("x", "C", "D", "1971")];
    let err = net
        .import("DE", dup, ImportMode::Import, 10)
        .await
        .expect_err("dup");
    assert_eq!(
        err.message(),
        "records[1]: field `record_id` repeats records[0]"
    );

    // Re-importing the same file changes nothing.
    let again = net
        .import("DE", national_records(), ImportMode::Import, 100)
        .await
        .expect("again");
    assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 4));
    assert_eq!(count(&net).await, before);

    // Sync to a file without Müller: it is erased and no longer found.
    let mut changed = national_records();
    changed.remove(0);
    changed[0] = record("de-2", "García López", "Ana María", "1980-02-29");
    let synced = net
        .import("DE", changed, ImportMode::Sync, 100)
        .await
        .expect("sync");
    assert_eq!(
        (
            synced.added,
            synced.updated,
            synced.unchanged,
            synced.erased
        ),
        (0, 1, 2, 1)
    );
    let resp = net
        .national("FR", Role::Officer)
        .search(search(vec![subject("Müller", "Hans Peter", "1970-05-12")]))
        .await
        .expect("search")
        .into_inner();
    assert!(resp.hits.is_empty(), "an erased record gives no hit");

    let deleted = net
        .national("DE", Role::Operator)
        .delete_records(DeleteRecordsRequest {
            record_ids: vec!["de-4".into(), "never".into()],
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(
        (deleted.erased, deleted.unknown),
        (vec!["de-4".to_owned()], vec!["never".to_owned()])
    );
    assert_eq!(count(&net).await.records, 2);
}

#[tokio::test]
async fn search_needs_the_officer_role_and_every_reason_field() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    let ok = || search(vec![subject("Doe", "John", "1970-01-01")]);
    for role in [Role::Operator, Role::Reviewer, Role::Auditor] {
        let err = net
            .national("FR", role)
            .search(ok())
            .await
            .expect_err("role");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
    }
    let mut officer = net.national("FR", Role::Officer);
    let mut no_case = ok();
    no_case
        .reason
        .as_mut()
        .expect("reason")
        .case_reference
        .clear();
    let err = officer.search(no_case).await.expect_err("case");
    assert_eq!(err.message(), "field `reason.case_reference` is required");
    let mut no_aim = ok();
    no_aim.reason.as_mut().expect("reason").aim = Aim::Unspecified as i32;
    let err = officer.search(no_aim).await.expect_err("aim");
    assert_eq!(err.message(), "field `reason.aim` is required");
    let err = officer
        .search(search(vec![
            subject("Doe", "John", "1970-01-01"),
            subject("Doe", "John", "01/01/1970"),
        ]))
        .await
        .expect_err("dob");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "subjects[1]: field `date_of_birth` is invalid: expected YYYY-MM-DD, YYYY-MM or YYYY"
    );
    let err = officer.search(search(vec![])).await.expect_err("empty");
    assert_eq!(err.message(), "field `subjects` is empty");
}

#[tokio::test]
async fn the_index_is_rebuilt_from_stored_records_after_a_restart() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start("FR").await;
    net.start("DE").await;
    net.import("DE", national_records(), ImportMode::Import, 100)
        .await
        .expect("import");
    net.stop("DE").await;
    net.start("DE").await;
    let count = net
        .national("DE", Role::Operator)
        .count_records(CountRecordsRequest {})
        .await
        .expect("count")
        .into_inner();
    assert_eq!(count.records, 4);
    let resp = net
        .national("FR", Role::Officer)
        .search(search(vec![subject("Garcia", "Ana", "1980-02-29")]))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(resp.hits.len(), 1);
    assert_eq!(resp.hits[0].quality, Quality::Strong as i32);
}
