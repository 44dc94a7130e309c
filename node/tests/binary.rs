//! The `adep-node` binary as an operator runs it: refusing a bad configuration with a
//! message naming the field, serving a configuration from `adep pki init`, reloading
//! its certificates on SIGHUP, and draining then exiting 0 on SIGTERM.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::{Command, Stdio},
    time::Duration,
};

use adep_node::tooling::{requests, synthetic};
use adep_node::{
    domain::principals::Country,
    tooling::pki::{self, NodePlan},
    tooling::profile::Profile,
};
use adep_proto::v1::{AuditExportRequest, ImportMode, ImportRequest, StatusRequest};

const BIN: &str = env!("CARGO_BIN_EXE_adep-node");

fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Replaces `from` by `to` in a file.
fn edit_file(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} holds no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).expect("write");
}

/// A node process, killed when the test ends, also on a failed assertion, so that it
/// does not outlive the test holding its ports and data directory.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn one_node_pki(dir: &std::path::Path) {
    let fr: Country = "FR".parse().expect("cc");
    pki::init(
        dir,
        &[NodePlan {
            country: fr,
            federation: free_addr(),
            national: free_addr(),
            metrics: Some(free_addr()),
            reach: None,
        }],
    )
    .expect("pki");
}

#[test]
fn refuses_a_bad_configuration_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    one_node_pki(dir.path());
    let path = dir.path().join("FR/node.toml");
    edit_file(
        &path,
        "max_message_bytes = 4194304",
        "max_message_bytes = 1",
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.toml"), "{err}");
    assert!(
        err.contains("field `limits.max_message_bytes`: 1 is out of range"),
        "{err}"
    );
}

#[test]
fn refuses_to_start_with_a_missing_certificate_file() {
    let dir = tempfile::tempdir().expect("tmp");
    one_node_pki(dir.path());
    std::fs::remove_file(dir.path().join("FR/node.pem")).expect("rm");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("FR/node.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.pem: cannot read"), "{err}");
}

#[tokio::test]
async fn serves_then_drains_and_exits_zero_on_sigterm() {
    adep_node::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    one_node_pki(dir.path());
    // The log goes to a file, as under systemd or docker: plain text, no colour.
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(dir.path().join("FR/node.toml"))
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start adep-node"),
    );

    let profile = Profile::load(&dir.path().join("FR/operator.toml")).expect("profile");
    let mut client = profile.national_client().expect("client");
    let mut answered = None;
    for _ in 0..200 {
        if let Ok(r) = client.status(StatusRequest { check_peers: false }).await {
            answered = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = answered.expect("the node answers its operator");
    assert_eq!(status.country, "FR");

    // While it runs, check-config checks its files and says the node holds its ports
    // (an operator runs it before `adep certs reload`), and a second node on the same
    // configuration says why it stops, once.
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(dir.path().join("FR/node.toml"))
        .output()
        .expect("check-config");
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{said}");
    assert!(
        said.contains("a node is running with this configuration (pid ")
            && said.contains("is served by the running node")
            && said.contains("the files of the node running with"),
        "{said}"
    );
    // Another data directory on the same ports: they are taken, not by its node.
    let text = std::fs::read_to_string(dir.path().join("FR/node.toml")).expect("read");
    let data_dir = text
        .lines()
        .find(|l| l.starts_with("data_dir = "))
        .expect("a data_dir line");
    let moved = text.replace(
        data_dir,
        &format!("data_dir = {:?}", dir.path().join("elsewhere")),
    );
    let moved_path = dir.path().join("FR/moved.toml");
    std::fs::write(&moved_path, moved).expect("write");
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&moved_path)
        .output()
        .expect("check-config");
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is in use: is a node already running"),
        "{said}"
    );
    // The same data directory on other ports: held by a node of another configuration.
    let config = adep_node::config::Config::load(&dir.path().join("FR/node.toml")).expect("load");
    let mut shared = text.clone();
    for addr in [config.federation.listen, config.national.listen] {
        shared = shared.replace(&format!("\"{addr}\""), &format!("\"{}\"", free_addr()));
    }
    assert_ne!(shared, text);
    let shared_path = dir.path().join("FR/shared.toml");
    std::fs::write(&shared_path, shared).expect("write");
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&shared_path)
        .output()
        .expect("check-config");
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is in use by another node (pid ")
            && !said.contains("a node is running with this configuration"),
        "{said}"
    );
    let second = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("FR/node.toml"))
        .output()
        .expect("a second node");
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        stderr.matches("cannot listen on").count(),
        1,
        "one line per error: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour off a terminal: {stderr}"
    );
    // A log level that hides errors does not hide why the node stopped.
    let silenced = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("FR/node.toml"))
        .env("RUST_LOG", "off")
        .output()
        .expect("a second node, its log off");
    assert_eq!(silenced.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&silenced.stderr);
    assert_eq!(
        stderr.matches("node stopped on an error").count(),
        1,
        "said once, log off: {stderr}"
    );
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    // The container probe: the health service, over TLS, without a client certificate.
    let probe = |listener: &str| {
        Command::new(BIN)
            .args(["probe", "--listener", listener, "--config"])
            .arg(dir.path().join("FR/node.toml"))
            .output()
            .expect("probe")
    };
    for listener in ["national", "federation"] {
        let out = probe(listener);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // SIGHUP: the binary reloads the certificates, as `adep certs reload` does, and
    // the reload is an audit event naming the signal.
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let auditor = Profile::load(&dir.path().join("FR/auditor.toml")).expect("profile");
    let mut reloaded = None;
    for _ in 0..100 {
        let mut stream = auditor
            .national_client()
            .expect("client")
            .export_audit(AuditExportRequest::default())
            .await
            .expect("export")
            .into_inner();
        while let Some(e) = stream.message().await.expect("entry") {
            if e.kind == "tls.reloaded" {
                reloaded = Some(e.fields_json);
            }
        }
        if reloaded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reloaded = reloaded.expect("a tls.reloaded event after SIGHUP");
    assert!(reloaded.contains("\"trigger\":\"SIGHUP\""), "{reloaded}");
    assert!(reloaded.contains("\"operator\":null"), "{reloaded}");
    client
        .status(StatusRequest { check_peers: false })
        .await
        .expect("still serving after the reload");

    // A call in flight when SIGTERM arrives: an import whose stream is still open.
    // The node stops accepting and lets it finish.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let batch = |from: u64, mode: ImportMode| ImportRequest {
        mode: mode as i32,
        records: (from..from + 50)
            .map(|i| requests::record(&synthetic::record(7, i)))
            .collect(),
    };
    tx.send(batch(0, ImportMode::Import))
        .await
        .expect("first batch");
    let mut operator = profile.national_client().expect("client");
    let import = tokio::spawn(async move {
        let mut progress = operator
            .import_records(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut last = None;
        while let Some(p) = progress.message().await? {
            last = Some(p);
        }
        Ok::<_, tonic::Status>(last)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(batch(50, ImportMode::Unspecified))
        .await
        .expect("second batch");
    drop(tx);
    let last = import
        .await
        .expect("the import task")
        .expect("the import in flight is served to its end")
        .expect("a last progress message");
    let summary = last.summary.expect("the import's summary");
    assert_eq!((summary.received, summary.added), (100, 100));
    let mut code = None;
    for _ in 0..200 {
        if let Some(s) = child.0.try_wait().expect("wait") {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if code.is_none() {
        let _ = child.0.kill();
    }
    assert_eq!(code, Some(0), "adep-node exits 0 after SIGTERM");
    let logged = std::fs::read_to_string(&log_path).expect("the node's log");
    assert!(logged.contains("node serving"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "no terminal escapes in a file: {logged}"
    );
    assert!(
        !logged.contains("Some("),
        "values as plain fields: {logged}"
    );
    let down = probe("national");
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stdout).starts_with("not serving: "));
}

#[test]
fn check_config_passes_a_good_configuration_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tmp");
    one_node_pki(dir.path());
    let path = dir.path().join("FR/node.toml");
    let run = |json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("check-config").arg(&path);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run")
    };
    let good = run(false);
    let text = String::from_utf8_lossy(&good.stdout);
    assert_eq!(good.status.code(), Some(0), "{text}");
    assert!(text.contains("checks hold"), "{text}");

    std::fs::write(dir.path().join("FR/key-seed"), "not hex").expect("write");
    let bad = run(true);
    assert_eq!(bad.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("JSON");
    assert_eq!(answer["ok"], false);
    let failed: Vec<&serde_json::Value> = answer["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["verdict"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{answer}");
    assert_eq!(failed[0]["field"], "matching.seed_file");
    assert!(
        failed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("hexadecimal") && !d.contains("not hex")),
        "{answer}"
    );
}

#[test]
fn json_logs_name_what_failed_without_the_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    one_node_pki(dir.path());
    let path = dir.path().join("FR/node.toml");
    edit_file(&path, "format = \"plain\"", "format = \"json\"");
    // A data key one digit short: the node refuses to start.
    let key = std::fs::read_to_string(dir.path().join("FR/data.key")).expect("key");
    let short = &key.trim()[1..];
    std::fs::write(dir.path().join("FR/data.key"), short).expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON log line in {err}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(json["level"], "ERROR", "{line}");
    assert!(line.contains("data key must be hexadecimal text"), "{line}");
    assert!(!err.contains(short), "the key's digits are not logged");
}
