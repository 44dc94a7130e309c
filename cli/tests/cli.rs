//! The `adep` binary as a user runs it.

use std::process::Command;

use adep_node::{config::Config, domain::principals::Role};
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
    for f in ["network-ca.pem", "network-ca.key.pem"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    assert!(
        !out_dir.join("matching-secret").exists(),
        "no secret is shared by the network"
    );
    for cc in ["FR", "DE", "ES"] {
        let config = Config::load(&out_dir.join(cc).join("node.toml")).expect("node.toml loads");
        assert_eq!(config.country.as_str(), cc);
        assert_eq!(config.peers.len(), 2, "every other country is a peer");
        assert_eq!(config.data_dir, out_dir.join(cc).join("data"));
        for role in Role::ALL {
            assert!(out_dir.join(cc).join(format!("{role}.toml")).is_file());
        }
    }
    // Each node has its own key seed.
    let seeds: std::collections::HashSet<String> = ["FR", "DE", "ES"]
        .iter()
        .map(|cc| std::fs::read_to_string(out_dir.join(cc).join("key-seed")).expect("key-seed"))
        .collect();
    assert_eq!(seeds.len(), 3, "three nodes, three seeds");
    let de = Config::load(&out_dir.join("DE/node.toml")).expect("DE");
    assert_eq!(de.matching.seed_file, out_dir.join("DE").join("key-seed"));
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

#[test]
fn pki_revoke_writes_the_cas_list_and_refuses_another_cas_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = dir.path().join("net");
    let init = Command::new(BIN)
        .args(["pki", "init", "--countries", "FR,DE", "--out"])
        .arg(&net)
        .output()
        .expect("run");
    assert!(init.status.success());
    let revoke = |ca: &str, cert: &str, json: bool| {
        let mut cmd = Command::new(BIN);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .args(["pki", "revoke", "--ca"])
            .arg(net.join(ca))
            .arg("--cert")
            .arg(net.join(cert))
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = revoke("FR/national-ca.pem", "FR/users/officer.pem", false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked;"), "{out}");
    assert!(out.contains("lists 1 certificate (list number 2)"), "{out}");
    let crl = net.join("FR/national-ca.crl.pem");
    assert!(
        std::fs::read_to_string(&crl)
            .expect("the list is written beside the CA")
            .starts_with("-----BEGIN X509 CRL-----")
    );
    // The list pki init wrote and the node names: a reload applies the revocation.
    let config = Config::load(&net.join("FR/node.toml")).expect("FR's configuration");
    assert!(config.tls.crls.contains(&crl), "{:?}", config.tls.crls);

    let (code, out, _) = revoke("FR/national-ca.pem", "FR/users/reviewer.pem", true);
    assert_eq!(code, Some(0));
    let done: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["revoked"], 2, "{out}");
    assert_eq!(done["number"], 3);
    assert_eq!(done["already_revoked"], false);

    // DE's user is not FR's national CA's to revoke; the list is left as it was.
    let before = std::fs::read(&crl).expect("crl");
    let (code, _, err) = revoke("FR/national-ca.pem", "DE/users/officer.pem", false);
    assert_eq!(code, Some(2));
    assert!(err.contains("not by this CA"), "{err}");
    assert_eq!(std::fs::read(&crl).expect("crl"), before);
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

const RECORDS: &str = "record_id,family_name,given_names,date_of_birth,sex,place_of_birth,nationality,aliases\n\
r1,Müller,Hans,1970-05-12,,,,\n\
r2,García López,Ana,1980-02-29,,,,\n\
r3,Гусев,Юрий,1978-03-21,,,,\n";

const QUERIES: &str = "record_id,family_name,given_names,date_of_birth,sex,place_of_birth,nationality,aliases\n\
q1,MUELLER,Hans,1970-05-12,,,,\n\
q2,Garcia,Ana,1980-02-29,,,,\n\
q3,Gusev,Iurii,1978,,,,\n\
q4,Nobody,Known,1999-01-01,,,,\n";

#[test]
fn match_test_writes_pairs_and_reports_recall_and_precision() {
    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let records = write("records.csv", RECORDS);
    let queries = write("queries.csv", QUERIES);
    let truth = write(
        "truth.csv",
        "query_id,record_id\nq1,r1\nq2,r2\nq3,r3\nq4,\n",
    );
    let pairs = dir.path().join("pairs.csv");
    let out = Command::new(BIN)
        .args(["--json", "match-test", "--records"])
        .arg(&records)
        .arg("--queries")
        .arg(&queries)
        .arg("--truth")
        .arg(&truth)
        .arg("--out")
        .arg(&pairs)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&pairs).expect("pairs"),
        "query_id,record_id,quality\nq1,r1,exact\nq2,r2,strong\nq3,r3,weak\n"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let levels = report["levels"].as_array().expect("levels");
    let recall: Vec<f64> = levels
        .iter()
        .map(|l| l["recall"].as_f64().expect("recall"))
        .collect();
    assert_eq!(recall, [1.0 / 3.0, 2.0 / 3.0, 1.0]);
    assert!(levels.iter().all(|l| l["precision"] == 1.0));
}

#[test]
fn match_test_reports_bad_rows_by_line_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let records = dir.path().join("records.csv");
    std::fs::write(&records, format!("{RECORDS}r4,Doe,,1970-13-01,,,,\n")).expect("write");
    let out = Command::new(BIN)
        .args(["match-test", "--records"])
        .arg(&records)
        .arg("--queries")
        .arg(&records)
        .arg("--out")
        .arg(dir.path().join("pairs.csv"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 5: field `date_of_birth` is invalid: month outside 01-12"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Doe"),
        "errors never echo values: {stderr}"
    );
}

/// The quality targets of the matching issue on FEBRL 4. The data lives outside the
/// repository (ADEP_FEBRL4_DIR, or the workplace's shared/data/febrl4).
#[test]
fn febrl4_meets_the_recall_and_precision_targets() {
    let candidates = [
        std::env::var_os("ADEP_FEBRL4_DIR").map(std::path::PathBuf::from),
        Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/febrl4")),
        Some(std::path::PathBuf::from("/work/shared/data/febrl4")),
    ];
    let Some(data) = candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("owner.csv").is_file())
    else {
        // CI always has the workplace's shared/ beside the clone: there, missing data is
        // a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "FEBRL 4 data not found in CI; set ADEP_FEBRL4_DIR"
        );
        eprintln!("FEBRL 4 data not found; set ADEP_FEBRL4_DIR to run this check");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(BIN)
        .args(["--json", "match-test", "--records"])
        .arg(data.join("owner.csv"))
        .arg("--queries")
        .arg(data.join("queries.csv"))
        .arg("--truth")
        .arg(data.join("truth.csv"))
        .arg("--out")
        .arg(dir.path().join("pairs.csv"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let level = |i: usize, f: &str| report["levels"][i][f].as_f64().expect("figure");
    assert!(
        level(1, "precision") >= 0.995 && level(1, "recall") >= 0.75,
        "{report}"
    );
    assert!(
        level(2, "precision") >= 0.97 && level(2, "recall") >= 0.93,
        "{report}"
    );
}

fn search_cmd(profile: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--profile")
        .arg(profile)
        .args(["--json", "search"])
        .args(extra)
        .args([
            "--case-ref",
            "FR-2026-7",
            "--offence-category",
            "0301 00",
            "--person-category",
            "suspect",
            "--aim",
            "identify",
        ])
        .output()
        .expect("run adep search")
}

#[tokio::test(flavor = "multi_thread")]
async fn search_exits_0_on_a_hit_1_on_no_hit_and_2_on_error() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.start_all().await;
    let dir = tempfile::tempdir().expect("tmp");
    let records = dir.path().join("de.csv");
    std::fs::write(&records, RECORDS).expect("write");
    let out = Command::new(BIN)
        .arg("--profile")
        .arg(net.profile_path("DE", Role::Operator))
        .args(["records", "import"])
        .arg(&records)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 added"));

    let officer = net.profile_path("FR", Role::Officer);
    let hit = search_cmd(
        &officer,
        &[
            "--family-name",
            "Mueller",
            "--given-names",
            "Hans",
            "--dob",
            "1970-05-12",
        ],
    );
    assert_eq!(
        hit.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&hit.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&hit.stdout).expect("json");
    assert_eq!(json["peers"][0]["country"], "DE");
    assert_eq!(json["peers"][0]["status"], "ok");
    assert_eq!(json["hits"][0]["country"], "DE");
    assert_eq!(json["hits"][0]["quality"], "exact");
    assert_eq!(json["hits"][0]["hit_ref"].as_str().map(str::len), Some(40));
    // In text, the hit comes with the exact command of the next step.
    let text = Command::new(BIN)
        .arg("--profile")
        .arg(&officer)
        .args([
            "search",
            "--family-name",
            "Mueller",
            "--given-names",
            "Hans",
        ])
        .args(["--dob", "1970-05-12", "--case-ref", "FR-2026-7"])
        .args([
            "--offence-category",
            "030100",
            "--person-category",
            "suspect",
        ])
        .args(["--aim", "identify"])
        .output()
        .expect("search in text");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "followup request --profile {} --hit ",
            officer.display()
        )),
        "{text}"
    );
    // The flags after the command, where its help shows them.
    let status = |profile: &std::path::Path| {
        Command::new(BIN)
            .arg("status")
            .arg("--profile")
            .arg(profile)
            .output()
            .expect("status")
            .status
            .code()
    };
    assert_eq!(status(&officer), Some(0), "every peer answers");

    let none = search_cmd(
        &officer,
        &["--family-name", "Nobody", "--dob", "1999-01-01"],
    );
    assert_eq!(none.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&none.stdout).expect("json");
    assert_eq!(json["hits"], serde_json::json!([]));

    let bad = search_cmd(
        &officer,
        &["--family-name", "Nobody", "--dob", "31.12.1999"],
    );
    assert_eq!(bad.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("json");
    assert_eq!(json["error"]["kind"], "error");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("error")
            .contains("date_of_birth")
    );
    // A command that takes no --json refuses it, in JSON since it was asked for.
    let demo = Command::new(BIN)
        .args(["demo", "--json"])
        .output()
        .expect("run adep");
    assert_eq!(demo.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&demo.stdout).expect("json");
    assert_eq!(json["error"]["kind"], "usage", "{json}");
    // Argument errors are JSON too, in the same shape.
    let usage = search_cmd(&officer, &["--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&usage.stdout).expect("json");
    assert_eq!(json["error"]["kind"], "usage", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("message")
            .contains("--no-such-flag")
    );
    // A missing flag is named.
    let missing = search_cmd(&officer, &["--family-name", "Nobody"]);
    assert_eq!(missing.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&missing.stdout).expect("json");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("message")
            .contains("--dob"),
        "{json}"
    );
    // A birth that has not happened is refused.
    let future = search_cmd(
        &officer,
        &["--family-name", "Nobody", "--dob", "2099-01-01"],
    );
    assert_eq!(future.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&future.stdout).expect("json");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("message")
            .contains("date_of_birth` is invalid: a date in the future"),
        "{json}"
    );

    let queries = dir.path().join("queries.csv");
    std::fs::write(&queries, QUERIES).expect("write");
    let file = search_cmd(&officer, &["--file", queries.to_str().expect("utf-8")]);
    assert_eq!(file.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&file.stdout).expect("json");
    let subjects: Vec<(u64, &str)> = json["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            (
                h["subject"].as_u64().expect("the subject's position"),
                h["record_id"].as_str().expect("its record id"),
            )
        })
        .collect();
    assert_eq!(subjects, [(1, "q1"), (2, "q2"), (3, "q3")]);

    net.stop("DE").await;
    assert_eq!(status(&officer), Some(1), "DE does not answer");
    let unasked = Command::new(BIN)
        .args(["status", "--no-peers", "--profile"])
        .arg(&officer)
        .output()
        .expect("status --no-peers");
    let said = String::from_utf8_lossy(&unasked.stdout);
    assert_eq!(unasked.status.code(), Some(0), "no peer asked: {said}");
    assert!(
        said.contains("unchecked") && !said.contains(" ms "),
        "{said}"
    );
    let down = search_cmd(
        &officer,
        &[
            "--family-name",
            "Mueller",
            "--given-names",
            "Hans",
            "--dob",
            "1970-05-12",
        ],
    );
    assert_eq!(
        down.status.code(),
        Some(2),
        "no peer answered: not a no-hit"
    );
    let json: serde_json::Value = serde_json::from_slice(&down.stdout).expect("json");
    assert_eq!(json["peers"][0]["status"], "unavailable");
    assert_eq!(
        json["error"]["kind"], "error",
        "exit 2 carries an error: {json}"
    );
    // In text, an unanswered search is not called a no-hit.
    let down = Command::new(BIN)
        .args(["search", "--profile"])
        .arg(&officer)
        .args(["--family-name", "Mueller", "--dob", "1970-05-12"])
        .args(["--case-ref", "FR-2026-7", "--offence-category", "0301 00"])
        .args(["--person-category", "suspect", "--aim", "identify"])
        .output()
        .expect("search in text");
    let said = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(2));
    assert!(
        said.contains("no answer: no peer answered") && !said.contains("no hit"),
        "{said}"
    );
}

#[test]
fn demo_tells_the_whole_exchange_and_exits_zero() {
    let out = Command::new(BIN)
        .args(["demo", "--records", "300"])
        .output()
        .expect("run adep demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "DE: ok",
        "hit in DE: reference",
        "filed with DE: pending",
        "local record DE-BKA-2019-004711",
        "released core data",
        "family_name: Müller",
        "followup.decided",
        "\"reviewer\":\"de-reviewer\"",
        "blinds them (RFC 9497 OPRF)",
        "evaluate.received",
        "DE: 7 entries, hash-chained and signed: verified",
        "demo complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // DE's reviewer sees the local record's payload beside the request ...
    assert!(stdout.contains("Bundeskriminalamt"), "{stdout}");
    // ... and FR receives the release policy's fields only.
    let released = stdout
        .split("released core data, as the FR officer sees it:")
        .nth(1)
        .and_then(|rest| rest.split("== 7.").next())
        .expect("the released core data");
    assert!(released.contains("family_name: Müller"), "{released}");
    assert!(!released.contains("Bundeskriminalamt"), "{released}");
    assert!(!released.contains("Convicted 2019"), "{released}");
}

/// Kills the demo's network when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn followup_commands_for_officers_and_reviewers() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tmp");
    let net = dir.path().join("net");
    let mut child = Command::new(BIN)
        .args(["demo", "--records", "200", "--keep-running", "--dir"])
        .arg(&net)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start adep demo");
    let stdout = child.stdout.take().expect("stdout");
    let _running = Running(child);
    let mut told = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("demo output");
        told.push_str(&line);
        told.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(told.contains("The network stays up"), "{told}");
    let adep = |profile: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--profile")
            .arg(net.join(profile))
            .args(args)
            .output()
            .expect("run adep");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The officer's requests, as JSON: the demo's one, delivered, with core data.
    let (code, out, err) = adep("FR/officer.toml", &["--json", "followup", "list"]);
    assert_eq!(code, Some(0), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list["total"], 1, "{out}");
    let mine = &list["follow_ups"][0];
    assert_eq!(mine["state"], "delivered", "{out}");
    assert_eq!(mine["country"], "DE");
    assert_eq!(mine["core_data"]["family_name"], "Müller");
    let id = mine["id"].as_str().expect("id").to_owned();

    // Text for people.
    let (code, out, _) = adep("FR/officer.toml", &["followup", "show", &id]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("  released       date_of_birth: 1970-05-12"),
        "{out}"
    );
    assert!(out.contains("family_name: Müller"), "{out}");
    assert!(out.contains("nationality: DE"), "{out}");
    assert!(
        out.contains("  approved       by DE's reviewer on "),
        "{out}"
    );
    assert_eq!(
        out.matches("Identity confirmed").count(),
        1,
        "the reason once: {out}"
    );

    // The reviewer's incoming list, filtered by state, with the local record on show.
    let (code, out, _) = adep(
        "DE/reviewer.toml",
        &[
            "--json",
            "followup",
            "list",
            "--incoming",
            "--state",
            "delivered",
        ],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains(&id), "{out}");
    let (code, out, _) = adep(
        "DE/reviewer.toml",
        &[
            "--json",
            "followup",
            "list",
            "--incoming",
            "--state",
            "pending",
        ],
    );
    assert_eq!(code, Some(0));
    assert!(!out.contains(&id), "{out}");
    let (code, out, _) = adep("DE/reviewer.toml", &["--json", "followup", "show", &id]);
    assert_eq!(code, Some(0));
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["record"]["record_id"], "DE-BKA-2019-004711");
    // The reviewer sees everything an approval may release.
    let local = &shown["record"]["identity"];
    assert_eq!(
        (
            &local["sex"],
            &local["place_of_birth"],
            &local["nationalities"][0]
        ),
        (&"M".into(), &"Köln".into(), &"DE".into()),
        "{out}"
    );
    let (code, out, _) = adep("DE/reviewer.toml", &["followup", "show", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("  local record   DE-BKA-2019-004711"), "{out}");
    for line in ["sex M", "born in Köln", "nationality DE"] {
        assert!(
            out.contains(&format!("                 {line}\n")),
            "{line}: {out}"
        );
    }
    // The payload in one order, whatever the map's.
    let authority = out.find("authority:").expect("authority");
    let notes = out.find("notes:").expect("notes");
    assert!(authority < notes, "{out}");

    // Refusals a user sees: deciding twice, deciding as an officer, deciding one's
    // own node's request.
    let (code, _, err) = adep(
        "DE/reviewer.toml",
        &["followup", "refuse", &id, "--reason", "second thoughts"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("delivered and can no longer change"), "{err}");
    let (code, _, err) = adep(
        "DE/officer.toml",
        &[
            "followup",
            "approve",
            &id,
            "--reason",
            "Looks proportionate.",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("the node refused the call"), "{err}");
    let (code, _, err) = adep(
        "FR/reviewer.toml",
        &[
            "followup",
            "approve",
            &id,
            "--reason",
            "Looks proportionate.",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("filed by this node"), "{err}");
    let (code, _, err) = adep("FR/officer.toml", &["followup", "withdraw", &id]);
    assert_eq!(code, Some(2));
    assert!(err.contains("can no longer be withdrawn"), "{err}");

    // The auditor's commands: verify (exit 0) and export as JSON Lines; no other role.
    let (code, out, err) = adep("DE/auditor.toml", &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("audit log verified"), "{out}");
    let (code, out, _) = adep(
        "DE/auditor.toml",
        &["audit", "export", "--since", "2000-01-01"],
    );
    assert_eq!(code, Some(0));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // The last line is the node's signed head; every other one an entry.
    let (head, entries) = lines.split_last().expect("lines");
    assert!(head["checkpoint"]["signature"].is_string(), "{head}");
    let kinds: Vec<String> = entries
        .iter()
        .map(|v| v["kind"].as_str().expect("kind").to_owned())
        .collect();
    for kind in [
        "match.received",
        "followup.filed",
        "followup.decided",
        "followup.delivered",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert!(
        !out.contains("Müller") && !out.contains("1970-05-12"),
        "{out}"
    );
    // The export is a witness: the log still holds the head it ends with.
    let witness = dir.path().join("de-audit.jsonl");
    std::fs::write(&witness, &out).expect("write the export");
    let verify = |profile: &str, witness: &std::path::Path, json: bool| {
        let witness = witness.to_string_lossy();
        let mut args = vec!["audit", "verify", "--witness", &witness];
        if json {
            args.push("--json");
        }
        adep(profile, &args)
    };
    let (code, out, err) = verify("DE/auditor.toml", &witness, false);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("holds the one checkpoint"), "{out}");
    // DE's export witnesses FR too: the heads FR sent with its calls.
    let (code, out, err) = verify("FR/auditor.toml", &witness, false);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(1 of other nodes left out)"), "{out}");
    // DE's own head alone checks nothing of FR's log: not a pass.
    let head_only = dir.path().join("de-head.jsonl");
    std::fs::write(&head_only, format!("{head}\n")).expect("write");
    let (code, out, err) = verify("FR/auditor.toml", &head_only, false);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("NOT CHECKED against the witnesses"), "{out}");
    let (code, out, _) = verify("FR/auditor.toml", &head_only, true);
    assert_eq!(code, Some(1), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["witnesses"], 0, "{verdict}");
    // A file without a checkpoint is no witness.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let (code, _, err) = verify("DE/auditor.toml", &empty, false);
    assert_eq!(code, Some(2));
    assert!(err.contains("holds no checkpoint"), "{err}");
    let (code, _, err) = adep("DE/officer.toml", &["audit", "verify"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("the node refused the call"), "{err}");

    // A sync with a file without records would erase the index: refused unless asked.
    let header = dir.path().join("header-only.csv");
    std::fs::write(&header, RECORDS.lines().next().expect("header")).expect("write");
    let count = || {
        let (code, out, err) = adep("DE/operator.toml", &["--json", "records", "count"]);
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["records"].clone()
    };
    let before = count();
    let (code, _, err) = adep(
        "DE/operator.toml",
        &["records", "sync", &header.to_string_lossy()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("it holds no record, so a sync would erase every stored record"),
        "{err}"
    );
    assert_eq!(count(), before, "nothing erased");

    // Another case asks after its own search; its officer withdraws the request, and
    // both sides are told who withdrew it and when.
    let (code, out, err) = adep(
        "FR/officer.toml",
        &[
            "--json",
            "search",
            "--family-name",
            "Mueller",
            "--given-names",
            "Hans Peter",
            "--dob",
            "1970-05-12",
            "--case-ref",
            "FR-PJ-2026-0999",
            "--offence-category",
            "0301 00",
            "--person-category",
            "suspect",
            "--aim",
            "identify",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let found: serde_json::Value = serde_json::from_str(&out).expect("json");
    let hit = found["hits"][0]["hit_ref"]
        .as_str()
        .expect("a hit")
        .to_owned();
    let (code, out, err) = adep(
        "FR/officer.toml",
        &[
            "--json",
            "followup",
            "request",
            "--hit",
            &hit,
            "--justification",
            "Second case: the same person is named in a fraud complaint.",
            "--offence-description",
            "Fraud against elderly persons, 2 cases",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let second: serde_json::Value = serde_json::from_str(&out).expect("json");
    let second = second["id"].as_str().expect("an id").to_owned();
    let (code, out, err) = adep("FR/officer.toml", &["followup", "withdraw", &second]);
    assert_eq!(code, Some(0), "{out}{err}");
    for profile in ["FR/officer.toml", "DE/reviewer.toml"] {
        let (code, out, _) = adep(profile, &["followup", "show", &second]);
        assert_eq!(code, Some(0));
        assert!(out.contains("  state          withdrawn\n"), "{out}");
        assert!(out.contains("  withdrawn      by "), "{out}");
        let (_, out, _) = adep(profile, &["--json", "followup", "show", &second]);
        let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert!(shown["withdrawn_at"].as_i64().is_some(), "{out}");
    }

    // The reviewer is told when the record a request concerns has been erased since.
    let (code, _, err) = adep(
        "DE/operator.toml",
        &["records", "delete", "DE-BKA-2019-004711"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = adep("DE/reviewer.toml", &["followup", "show", &id]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("  local record   erased from the index since the request was filed\n"),
        "{out}"
    );
    let (_, out, _) = adep("DE/reviewer.toml", &["--json", "followup", "show", &id]);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["record_erased"], true, "{out}");
}

#[test]
fn a_missing_profile_or_a_node_configuration_as_profile_says_so_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = |profile: &std::path::Path| {
        let out = Command::new(BIN)
            .arg("--profile")
            .arg(profile)
            .arg("status")
            .output()
            .expect("run adep");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&dir.path().join("missing.toml"));
    assert_eq!(code, Some(2));
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let net = dir.path().join("net");
    let out = Command::new(BIN)
        .args([
            "pki",
            "init",
            "--countries",
            "FR",
            "--base-port",
            "7400",
            "--out",
        ])
        .arg(&net)
        .output()
        .expect("pki init");
    assert!(out.status.success());
    let (code, err) = run(&net.join("FR/node.toml"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("this is a node configuration (for `adep-node --config`), not a CLI profile"),
        "{err}"
    );

    // A record export given as the profile: where the parser stopped, never its text.
    let export = dir.path().join("records.jsonl");
    std::fs::write(
        &export,
        "{\"record_id\":\"DE-9\",\"family_name\":\"Kowalski\",\"date_of_birth\":\"1977-03-04\"}\n",
    )
    .expect("write");
    let (code, err) = run(&export);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid TOML at line 1, column 1"), "{err}");
    assert!(!err.contains("Kowalski") && !err.contains("1977"), "{err}");
}

#[test]
fn the_offence_table_lists_its_source_and_a_closed_output_ends_quietly() {
    let out = Command::new(BIN)
        .arg("offence-categories")
        .output()
        .expect("run adep");
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("0301 00"), "{said}");
    assert!(said.contains("2019/884"), "the source is named: {said}");

    // `adep offence-categories | head -0`: the reader is gone before the first line.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(BIN)
        .arg("offence-categories")
        .stdout(writer)
        .output()
        .expect("run adep");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "no panic, no message: {err}");
}
