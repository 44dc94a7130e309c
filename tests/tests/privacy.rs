//! What a data protection officer checks (DESIGN section 8): after a full search,
//! follow-up, approval and delivery, no operational log line at any level holds a
//! name, a date of birth, a payload value, a digest or a secret; and no file of a
//! node's data directory holds a name or a payload value in the clear.

use std::path::Path;

use adep_node::{
    domain::identity::Identity,
    domain::principals::Role,
    domain::pseudonymise::{KeyEpoch, KeyedDigest, Side, oprf::NodeKey},
};
use adep_proto::v1::{Decision, FollowUpState};
use adep_tests::{TestNetwork, followups::*, logs};

/// Values of DE's record and FR's search that must never be seen in the clear.
const PERSONAL: [&str; 9] = [
    "Müller",
    "MÜLLER",
    "MUELLER",
    "Hans Peter",
    "HANS PETER",
    "1970-05-12",
    "19700512",
    "12.05.1970",
    "payload of de-1",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every way a digest or key could be printed: hex, upper-case hex, and the start of
/// Rust's `Debug` form of a byte slice.
fn printed_forms(bytes: &[u8]) -> Vec<String> {
    let lower = hex(bytes);
    let list: Vec<String> = bytes.iter().take(6).map(u8::to_string).collect();
    vec![
        lower.clone(),
        lower.to_uppercase(),
        format!("[{}", list.join(", ")),
    ]
}

/// Runs the whole exchange: FR searches as MUELLER, files a follow-up, DE approves,
/// the core data reaches FR. Returns the follow-up id.
async fn full_exchange(net: &TestNetwork) -> String {
    let hit_ref = hit_in_de(net, "MUELLER", "Hans Peter", "1970-05-12").await;
    let filed = request(net, &hit_ref).await.expect("filed");
    decide(net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("approved");
    let delivered = until_state(net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(
        delivered.core_data["family_name"], "Müller",
        "the release worked"
    );
    filed.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_personal_data_digest_or_secret() {
    logs::capture("trace");
    let mut net = network().await;
    full_exchange(&net).await;
    for cc in ["FR", "DE", "ES"] {
        net.stop(cc).await;
    }
    let logged = logs::text();
    // The capture saw the nodes' own lines and the transport's trace lines.
    assert!(logged.contains("follow-up filed"), "node lines captured");
    assert!(logged.contains("TRACE"), "trace lines captured");

    for value in PERSONAL {
        assert!(!logged.contains(value), "a log line holds {value:?}");
    }
    // Every digest either side computed for the subject, under each node's own key,
    // and the key seeds themselves.
    let mut digests = 0;
    for cc in ["FR", "DE", "ES"] {
        let seed = net.key_seed(cc);
        let p = NodeKey::derive(&seed, KeyEpoch(1)).expect("key");
        for (family, given) in [("MUELLER", "Hans Peter"), ("Müller", "Hans Peter")] {
            let identity =
                Identity::from_fields(family, given, "1970-05-12", &[]).expect("identity");
            for side in [Side::Query, Side::Record] {
                for key in p.hash_identity(&identity, side) {
                    digests += 1;
                    for form in printed_forms(&key.digest.0) {
                        assert!(!logged.contains(&form), "a log line holds a digest");
                    }
                }
            }
        }
        for form in printed_forms(&seed) {
            assert!(!logged.contains(&form), "a log line holds a key seed");
        }
    }
    assert!(digests > 60, "the subject has its keys ({digests})");
    // Secrets: each node's data key, audit key and TLS keys.
    for cc in ["FR", "DE"] {
        let config = net.config(cc);
        let data_key = std::fs::read_to_string(&config.data_key).expect("data key");
        assert!(
            !logged.contains(data_key.trim()),
            "a log line holds a data key"
        );
        let audit_key = std::fs::read(&config.audit.signing_key).expect("audit key");
        for form in printed_forms(&audit_key) {
            assert!(!logged.contains(&form), "a log line holds an audit key");
        }
        for pem in [&config.tls.node_key, &config.tls.national_key] {
            let text = std::fs::read_to_string(pem).expect("key");
            for line in text.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!logged.contains(line), "a log line holds a TLS key");
            }
        }
    }
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.push((path, bytes));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_hold_no_cleartext_name_or_payload() {
    logs::capture("trace");
    let mut net = network().await;
    let delivered = full_exchange(&net).await;
    // A request for another record stays pending, so DE's store holds an open
    // follow-up (with FR's subject) and FR's a remembered hit, as well as the delivered
    // one (Müller may not be asked for again while that one stands).
    request(
        &net,
        &hit_in_de(&net, "Schmidt", "Karl", "1955-01-01").await,
    )
    .await
    .expect("filed");
    for cc in ["FR", "DE", "ES"] {
        net.stop(cc).await;
    }
    for cc in ["FR", "DE"] {
        let data_dir = net.config(cc).data_dir;
        let files = files(&data_dir);
        // Keys are stored in the clear: finding the follow-up's id shows the scan
        // reads what the node wrote.
        assert!(
            files.iter().any(|(_, c)| c
                .windows(delivered.len())
                .any(|w| w == delivered.as_bytes())),
            "{cc}'s store holds the follow-up"
        );
        // Schmidt, the other record, and DE's payload values; FR's follow-up copy.
        for value in PERSONAL.iter().chain(&["Schmidt", "payload of de-2"]) {
            for (path, content) in &files {
                assert!(
                    !content.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{} holds {value:?} in the clear",
                    path.display()
                );
            }
        }
    }
}
