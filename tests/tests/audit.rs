//! The audit log over real nodes: events where each step happens, and tampering in
//! the store detected by `VerifyAudit`, naming the entry.

use adep_node::{
    domain::audit::Entry,
    domain::principals::Role,
    secret::DataKey,
    store::{self, Batch, Table},
};
use adep_proto::v1::{
    AuditCheckpoint, Identity as ProtoIdentity, ImportMode, SearchRequest, VerifyAuditRequest,
};
use adep_tests::{TestNetwork, cc, reason, record};
use tonic::Code;

async fn searched_network() -> TestNetwork {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start_all().await;
    net.import(
        "DE",
        vec![record("de-1", "Müller", "Hans", "1970-05-12")],
        ImportMode::Import,
        10,
    )
    .await
    .expect("import");
    net.national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![ProtoIdentity {
                family_name: "Müller".into(),
                given_names: "Hans".into(),
                date_of_birth: "1970-05-12".into(),
                ..ProtoIdentity::default()
            }],
        })
        .await
        .expect("search");
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_records_its_own_steps_and_only_auditors_read_them() {
    let net = searched_network().await;
    assert_eq!(net.audit_kinds("FR").await, ["search.sent"]);
    assert_eq!(
        net.audit_kinds("DE").await,
        [
            "records.stored",
            "records.imported",
            "evaluate.received",
            "match.received"
        ]
    );
    let refused = net
        .national("DE", Role::Officer)
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect_err("officers do not read the audit log");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_altered_in_the_store_is_named_by_verify() {
    let mut net = searched_network().await;
    let verify = |net: &TestNetwork| {
        let mut client = net.national("DE", Role::Auditor);
        async move {
            client
                .verify_audit(VerifyAuditRequest::default())
                .await
                .expect("verify")
                .into_inner()
        }
    };
    let before = verify(&net).await;
    assert!(before.ok, "{before:?}");
    assert_eq!(before.entries, 4);

    // Stop DE, change what entry 4 (the Match from FR) says, start DE again.
    net.stop("DE").await;
    let config = net.config("DE");
    {
        let opened = store::open(
            &config.data_dir,
            cc("DE"),
            &DataKey::from_file(&config.data_key).expect("DE's data key"),
        )
        .expect("open DE's store");
        let key = 4u64.to_be_bytes();
        let raw = opened
            .store
            .get(Table::Audit, &key)
            .expect("get")
            .expect("entry 4");
        let mut entry: Entry = postcard::from_bytes(&raw).expect("decode");
        entry.fields = entry.fields.replace("\"FR\"", "\"ES\"");
        let mut batch = Batch::new();
        batch.put(
            Table::Audit,
            key.to_vec(),
            postcard::to_allocvec(&entry).expect("encode"),
        );
        opened.store.apply(&batch).expect("write");
    }
    net.start("DE").await;
    let after = verify(&net).await;
    assert!(!after.ok);
    assert_eq!(after.bad_entry, 4);
    assert!(after.problem.contains("altered"), "{}", after.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_and_connections_are_audit_events() {
    let net = searched_network().await;
    // A reviewer may not search: refused by the Search handler's role check.
    let by_reviewer = net
        .national("FR", Role::Reviewer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: Vec::new(),
        })
        .await
        .expect_err("reviewers do not search");
    assert_eq!(by_reviewer.code(), Code::PermissionDenied);
    let refused = net.audit_entries_of("FR", "call.refused").await;
    assert_eq!(refused[0]["rpc"], "Search");
    assert_eq!(refused[0]["caller"], "adep://user/FR/fr-reviewer");
    assert_eq!(
        refused[0]["code"], "PERMISSION_DENIED",
        "as metrics name it"
    );
    assert_eq!(refused[0]["listener"], "national");
    assert!(
        refused[0]["message"]
            .as_str()
            .is_some_and(|m| m
                .contains("the reviewer role cannot make this call; it needs the officer role")),
        "{refused:?}"
    );

    // No client certificate on DE's federation listener: refused by admission.
    let anonymous = net
        .federation_with("DE", None)
        .hello(TestNetwork::hello("FR"))
        .await
        .expect_err("a peer needs a certificate");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let refused = net.audit_entries_of("DE", "call.refused").await;
    assert_eq!(refused[0]["caller"], "no certificate");
    assert_eq!(refused[0]["listener"], "federation");
    assert!(
        refused[0]["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:"))
    );

    // Not TLS at all: the connection is refused in the handshake.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(net.federation_addr("DE"))
            .await
            .expect("connect");
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    }
    let refused = net.audit_entries_of("DE", "connection.refused").await;
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("TLS handshake failed")),
        "{refused:?}"
    );
    assert_eq!(refused[0]["listener"], "federation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_past_retention_are_pruned_and_the_rest_still_verifies() {
    let mut net = searched_network().await;
    assert_eq!(
        net.audit_kinds("DE").await,
        [
            "records.stored",
            "records.imported",
            "evaluate.received",
            "match.received"
        ]
    );
    net.stop("DE").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    net.edit_config("DE", |c| {
        c.audit.retention = std::time::Duration::from_secs(1)
    });
    net.start("DE").await;
    // Pruning runs at start-up: all four entries are past retention, the newest is
    // kept.
    let pruned = net.audit_entries_of("DE", "audit.pruned").await;
    assert_eq!(pruned[0]["entries"], 3);
    assert_eq!(
        net.audit_kinds("DE").await,
        ["match.received", "audit.pruned"]
    );
    let verified = net
        .national("DE", Role::Auditor)
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert_eq!((verified.entries, verified.first), (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_prunes_at_its_interval_each_batch_with_its_event() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("DE", |c| {
        c.audit.retention = std::time::Duration::from_secs(2);
        c.audit.prune_interval = std::time::Duration::from_secs(1);
    });
    net.start_all().await;
    // The start-up pruning found an empty log; these entries are pruned by the loop.
    net.import(
        "DE",
        vec![record("de-1", "Müller", "Hans", "1970-05-12")],
        ImportMode::Import,
        10,
    )
    .await
    .expect("import");
    assert_eq!(
        net.audit_kinds("DE").await,
        ["records.stored", "records.imported"]
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pruned = loop {
        let pruned = net.audit_entries_of("DE", "audit.pruned").await;
        if !pruned.is_empty() {
            break pruned;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pruning within 30 s with audit.prune_interval = 1s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // The newest entry is kept; the first pruning deleted the one before it.
    assert_eq!(pruned[0]["entries"], 1);
    assert!(
        !net.audit_kinds("DE")
            .await
            .contains(&"records.stored".to_owned())
    );
    let verified = net
        .national("DE", Role::Auditor)
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_records_nothing_and_a_replaced_key_seed_is_refused() {
    let mut net = searched_network().await;
    // A restart under the same seed records nothing, and loads the stored digests.
    net.stop("DE").await;
    net.start("DE").await;
    assert_eq!(
        net.audit_kinds("DE").await,
        [
            "records.stored",
            "records.imported",
            "evaluate.received",
            "match.received"
        ]
    );
    // A seed that no longer derives the key the index was built with: refused,
    // naming the file and not the seed.
    net.stop("DE").await;
    let seed_file = net.config("DE").matching.seed_file;
    let original = std::fs::read_to_string(&seed_file).expect("seed");
    std::fs::write(&seed_file, "ab".repeat(32)).expect("write");
    let refused = adep_node::grpc::server::prepare(net.config("DE"))
        .expect_err("another seed")
        .to_string();
    assert!(
        refused.contains("does not derive the key this node's index of epoch 1 was built with")
            && refused.contains("key-seed"),
        "{refused}"
    );
    assert!(!refused.contains("abab"), "{refused}");
    std::fs::write(&seed_file, original).expect("write");
    net.start("DE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_a_node_gives_out_covers_its_searches_a_moment_later() {
    let net = searched_network().await;
    // FR records its searches without waiting for the disk. The head its next Match
    // carries must cover the first search a moment later (not at the next job run,
    // minutes away): DE's log witnesses what FR did.
    let head_seq = |entry: &serde_json::Value| entry["peer_audit_head"]["seq"].as_u64();
    let first = head_seq(&net.audit_entries_of("DE", "match.received").await[0]);
    let search = || async {
        net.national("FR", Role::Officer)
            .search(SearchRequest {
                reason: Some(reason()),
                subjects: vec![ProtoIdentity {
                    family_name: "Schmidt".into(),
                    given_names: "Karl".into(),
                    date_of_birth: "1955-01-01".into(),
                    ..ProtoIdentity::default()
                }],
            })
            .await
            .expect("search");
    };
    let mut latest = first;
    for _ in 0..100 {
        search().await;
        let received = net.audit_entries_of("DE", "match.received").await;
        latest = received.last().and_then(head_seq);
        if latest > first {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("FR's head stayed at {latest:?}, before its first search ({first:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_named_against_the_auditors_export_and_the_peers_log() {
    let mut net = searched_network().await;
    // The auditor exports DE's log: it ends with DE's signed head. And FR's Match to
    // DE carried FR's head, which DE's log holds: nodes witness each other.
    let exported = net.audit_export("DE").await;
    let head = exported
        .last()
        .and_then(|e| e.checkpoint.clone())
        .expect("an export ends with the node's head");
    assert_eq!(head.seq, 4);
    let fr_head_in_de =
        net.audit_entries_of("DE", "match.received").await[0]["peer_audit_head"].clone();
    assert!(fr_head_in_de["seq"].as_u64().is_some(), "{fr_head_in_de}");

    let verify = |net: &TestNetwork, witnesses: Vec<AuditCheckpoint>| {
        let mut client = net.national("DE", Role::Auditor);
        async move {
            client
                .verify_audit(VerifyAuditRequest { witnesses })
                .await
                .expect("verify")
                .into_inner()
        }
    };
    let before = verify(&net, vec![head.clone()]).await;
    assert!(before.ok, "{before:?}");
    assert_eq!((before.witnesses, before.foreign_witnesses), (1, 0));

    // Stop DE, remove its newest entry (the Match), start DE again.
    net.stop("DE").await;
    let config = net.config("DE");
    {
        let opened = store::open(
            &config.data_dir,
            cc("DE"),
            &DataKey::from_file(&config.data_key).expect("DE's data key"),
        )
        .expect("open DE's store");
        let mut batch = Batch::new();
        batch.delete(Table::Audit, 4u64.to_be_bytes().to_vec());
        opened.store.apply(&batch).expect("cut");
    }
    net.start("DE").await;
    // Alone, the log still chains; against the export's head, the cut is named.
    assert!(verify(&net, Vec::new()).await.ok);
    let after = verify(&net, vec![head]).await;
    assert!(!after.ok);
    assert_eq!(after.bad_entry, 4);
    assert!(
        after.problem.contains("newest entries were removed")
            && after.problem.contains("ends at entry 3"),
        "{}",
        after.problem
    );
}
