//! The node's store across restarts, and its data directory lock.

use adep_node::{domain::principals::Role, grpc::server, store::StoreError};
use adep_proto::v1::StatusRequest;
use adep_tests::TestNetwork;

async fn store_info(net: &TestNetwork) -> adep_proto::v1::StoreInfo {
    net.national("FR", Role::Operator)
        .status(StatusRequest { check_peers: false })
        .await
        .expect("status")
        .into_inner()
        .store
        .expect("store info")
}

#[tokio::test]
async fn node_keeps_its_store_across_a_restart() {
    let mut net = TestNetwork::new(&["FR"]).await;
    net.start("FR").await;
    let first = store_info(&net).await;
    assert_eq!(first.starts, 1);
    assert_eq!(first.schema_version, adep_node::store::SCHEMA_VERSION);
    net.stop("FR").await;

    net.start("FR").await;
    let second = store_info(&net).await;
    assert_eq!(
        second.starts, 2,
        "the start count written by the first run is kept"
    );
    assert_eq!(second.created_at, first.created_at);
}

#[tokio::test]
async fn second_node_on_the_same_data_directory_is_refused() {
    let mut net = TestNetwork::new(&["FR"]).await;
    net.start("FR").await;
    let err = server::prepare(net.config("FR")).expect_err("the directory is in use");
    let server::NodeError::Store(StoreError::InUse { .. }) = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(
        err.to_string()
            .contains("in use by another adep-node process"),
        "{err}"
    );
    // The running node is unaffected.
    assert_eq!(store_info(&net).await.starts, 1);
}
