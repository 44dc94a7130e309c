//! The audit log over real nodes: events where each step happens, and tampering in
//! the store detected by `VerifyAudit`, naming the entry.

use adep_node::{
    audit::Entry,
    config::Role,
    store::{self, Batch, Table},
};
use adep_proto::v1::{Identity as ProtoIdentity, ImportMode, SearchRequest, VerifyAuditRequest};
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
        ["records.imported", "match.received"]
    );
    let refused = net
        .national("DE", Role::Officer)
        .verify_audit(VerifyAuditRequest {})
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
                .verify_audit(VerifyAuditRequest {})
                .await
                .expect("verify")
                .into_inner()
        }
    };
    let before = verify(&net).await;
    assert!(before.ok, "{before:?}");
    assert_eq!(before.entries, 2);

    // Stop DE, change what entry 2 says, start DE again.
    net.stop("DE").await;
    let config = net.config("DE");
    {
        let opened = store::open(&config.data_dir, cc("DE")).expect("open DE's store");
        let key = 2u64.to_be_bytes();
        let raw = opened
            .store
            .get(Table::Audit, &key)
            .expect("get")
            .expect("entry 2");
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
    assert_eq!(after.bad_entry, 2);
    assert!(after.problem.contains("altered"), "{}", after.problem);
}
