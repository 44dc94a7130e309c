//! The `adep` binary as a user runs it.

use std::process::Command;

use adep_node::config::{Config, Role};
use adep_tests::TestNetwork;

const BIN: &str = env!("CARGO_BIN_EXE_adep");

#[test]
fn pki_init_writes_the_documented_layout() {
    let dir = tempfile::tempdir().expect("tmp");
    let out_dir = dir.path().join("net");
    let out = Command::new(BIN)
        .args([
            "pki",
            "init",
            "--countries",
            "FR,DE,ES",
            "--base-port",
            "7300",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["network-ca.pem", "network-ca.key.pem", "matching-secret"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    for cc in ["FR", "DE", "ES"] {
        let config = Config::load(&out_dir.join(cc).join("node.toml")).expect("node.toml loads");
        assert_eq!(config.country.as_str(), cc);
        assert_eq!(config.peers.len(), 2, "every other country is a peer");
        assert_eq!(config.data_dir, out_dir.join(cc).join("data"));
        for role in Role::ALL {
            assert!(out_dir.join(cc).join(format!("{role}.toml")).is_file());
        }
    }
    let de = Config::load(&out_dir.join("DE/node.toml")).expect("DE");
    assert_eq!(de.federation.listen.port(), 7310);
    assert_eq!(de.national.listen.port(), 7311);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out_dir.join("network-ca.key.pem"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys are readable by their owner only"
        );
    }

    let again = Command::new(BIN)
        .args(["pki", "init", "--countries", "FR", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a PKI"));
}

#[test]
fn pki_init_refuses_a_bad_country_code() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(BIN)
        .args(["pki", "init", "--countries", "FR,deu", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`deu` is not a country code"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_json_shows_the_node_the_caller_and_each_peer() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start_all().await;
    let profile = net.profile_path("FR", Role::Reviewer);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--profile")
            .arg(profile)
            .args(["status", "--json"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["country"], "FR");
    assert_eq!(v["caller"]["user_id"], "fr-reviewer");
    assert_eq!(v["caller"]["role"], "reviewer");
    assert_eq!(v["peers"][0]["country"], "DE");
    assert_eq!(v["peers"][0]["status"], "ok");
}

#[test]
fn status_without_a_profile_says_how_to_get_one() {
    let out = Command::new(BIN)
        .arg("status")
        .env_remove("ADEP_PROFILE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --profile FILE or set ADEP_PROFILE")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_against_a_stopped_node_is_a_clear_error() {
    let mut net = TestNetwork::new(&["FR"]).await;
    let profile = net.profile_path("FR", Role::Officer);
    // Never started: release the harness's listeners so the port refuses connections.
    net.release("FR");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--profile")
            .arg(profile)
            .arg("status")
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the node is not reachable"), "{err}");
}
