//! A SIGKILL crash loop against the real `adep-node` binary (DESIGN section 9: an
//! acknowledged write is durable, multi-part updates are atomic, and every stored
//! record has the audit event that attributes it).
//!
//! Two node processes from one `pki::init`: FR requests, DE owns records. In each round
//! a client imports records into DE over the national API, FR's officer searches and
//! files follow-ups for hits in DE, and DE's reviewer decides them; DE is killed with
//! SIGKILL at a random moment, restarted on the same ports and data directory, and
//! checked as its users would see it:
//! * every acknowledged import (its final progress message with the summary arrived)
//!   is stored and found by a search, and no import is stored in part;
//! * every follow-up DE acknowledged is there, every acknowledged decision too, and a
//!   follow-up is decided exactly when its `followup.decided` event is in the log;
//! * the audit log verifies, and the `records.stored` events written with the records
//!   attribute every stored record (their `added` counts sum to CountRecords);
//! * every decision DE holds reaches FR, after however many restarts.
//!
//! `ADEP_CRASH_KILLS` sets the number of kills (default 3: the CI smoke);
//! `ADEP_CRASH_SEED` replays the random moments of a run, whose seed is printed.
//! docs/reliability.md has the long run and its figures.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use adep_node::{
    config::Config,
    domain::{
        index::WRITE_CHUNK,
        principals::{Country, Role},
    },
    tooling::{
        pki::{self, NodePlan},
        profile::Profile,
        requests, synthetic,
    },
};
use adep_proto::v1::{
    AuditExportRequest, CountRecordsRequest, DecideFollowUpRequest, Decision, FollowUpState,
    Identity, ImportMode, ImportRequest, ImportSummary, Reason, RecordData, RequestFollowUpRequest,
    SearchRequest, ShowFollowUpRequest, StatusRequest, VerifyAuditRequest,
    national_client::NationalClient,
};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_adep-node");

/// Records per import: fewer than one atomic write of the import code, so an import
/// is stored whole or not at all.
const IMPORT: u64 = 400;
const _: () = assert!(IMPORT as usize <= WRITE_CHUNK);
/// Records per message of an import stream.
const MESSAGE: usize = 100;
/// Records imported before the first round; FR's officer searches for them.
const BASE: u64 = 1_000;
/// The seed of the synthetic records (not of the random moments).
const RECORDS: u64 = 29;
/// How long a restarted node may take to serve, and a decision to reach FR.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_owner_node() {
    adep_node::install_crypto_provider();
    let kills: u64 = std::env::var("ADEP_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("ADEP_CRASH_KILLS is a number"))
        .unwrap_or(3);
    let seed = std::env::var("ADEP_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("ADEP_CRASH_SEED is a number"))
        .unwrap_or_else(seed_from_time);
    println!("crash loop: seed {seed} (ADEP_CRASH_SEED={seed} replays it), {kills} kills");
    let mut rng = XorShift::new(seed);

    let dir = tempfile::tempdir().expect("tmp");
    let net = Network::init(dir.path());
    let mut fr = NodeProcess::new(&net, "FR");
    let mut de = NodeProcess::new(&net, "DE");
    fr.start().await;
    de.start().await;

    let mut ledger = Ledger::default();
    let base = import(&mut net.client("DE", Role::Operator), records(0..BASE))
        .await
        .expect("the base import");
    assert_eq!(base.added, BASE);
    ledger.next_record = BASE;

    for round in 1..=kills {
        let delay = Duration::from_millis(50 + rng.below(1_950));
        let before = (ledger.acknowledged_imports(), ledger.decided.len());
        work_until_killed(&net, &mut de, &mut ledger, delay).await;
        de.start().await;
        check_owner(&net, &ledger, false).await;
        await_deliveries(&net, &ledger).await;
        println!(
            "round {round}: DE killed after {} ms; {} imports and {} decisions acknowledged in it",
            delay.as_millis(),
            ledger.acknowledged_imports() - before.0,
            ledger.decided.len() - before.1,
        );
    }

    // Once more over everything, the older rounds included.
    let stored = check_owner(&net, &ledger, true).await;
    let delivered = await_deliveries(&net, &ledger).await;
    let fr_audit = verify_audit(&net, "FR").await;
    assert!(
        kills == 0 || ledger.acknowledged_imports() + ledger.decided.len() as u64 > 0,
        "no write was acknowledged in any round: the loop checked nothing"
    );
    println!(
        "crash loop summary: seed {seed}, kills {kills}; acknowledged imports {} ({} records), \
         records stored {} (of which {} from imports killed before their acknowledgement); \
         follow-ups filed {}, decisions acknowledged {}, decisions delivered to FR {}; \
         audit entries verified DE {} FR {}",
        ledger.acknowledged_imports(),
        ledger.acknowledged_imports() * IMPORT,
        stored.records,
        stored.records - BASE - ledger.acknowledged_imports() * IMPORT,
        ledger.filed.len(),
        ledger.decided.len(),
        delivered,
        stored.audit_entries,
        fr_audit,
    );
    fr.stop();
    de.stop();
}

/// What the client was told was done, over all rounds.
#[derive(Debug, Default)]
struct Ledger {
    /// The next synthetic record number to import.
    next_record: u64,
    /// First record numbers of imports sent whose outcome is unknown (killed).
    unacknowledged: Vec<u64>,
    /// First record numbers of acknowledged imports, oldest first.
    acknowledged: Vec<u64>,
    /// The next base record FR's officer searches for.
    next_subject: u64,
    /// Follow-ups DE acknowledged (RequestFollowUp answered), in order.
    filed: Vec<String>,
    /// Acknowledged decisions.
    decided: BTreeMap<String, Decision>,
}

impl Ledger {
    fn acknowledged_imports(&self) -> u64 {
        self.acknowledged.len() as u64
    }
}

/// Imports into DE and makes follow-ups from FR until `delay` has passed, then kills DE
/// with SIGKILL while the clients are at work.
async fn work_until_killed(
    net: &Network,
    de: &mut NodeProcess,
    ledger: &mut Ledger,
    delay: Duration,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let importer = tokio::spawn(import_until(
        net.client("DE", Role::Operator),
        ledger.next_record,
        stop.clone(),
    ));
    let follow_ups = tokio::spawn(follow_ups_until(
        net.client("FR", Role::Officer),
        net.client("DE", Role::Reviewer),
        ledger.next_subject,
        stop.clone(),
    ));
    tokio::time::sleep(delay).await;
    de.kill();
    stop.store(true, Ordering::SeqCst);
    let (imports, steps) = tokio::time::timeout(PATIENCE, async {
        (
            importer.await.expect("importer"),
            follow_ups.await.expect("follow-ups"),
        )
    })
    .await
    .expect("the clients stop once DE is down");
    ledger.next_record = imports.next_record;
    ledger.acknowledged.extend(imports.acknowledged);
    ledger.unacknowledged.extend(imports.unacknowledged);
    ledger.next_subject = steps.next_subject;
    ledger.filed.extend(steps.filed);
    ledger.decided.extend(steps.decided);
}

#[derive(Debug)]
struct Imports {
    next_record: u64,
    acknowledged: Vec<u64>,
    unacknowledged: Vec<u64>,
}

async fn import_until(
    mut client: NationalClient<Channel>,
    mut next_record: u64,
    stop: Arc<AtomicBool>,
) -> Imports {
    let mut done = Imports {
        next_record,
        acknowledged: Vec::new(),
        unacknowledged: Vec::new(),
    };
    while !stop.load(Ordering::SeqCst) {
        let first = next_record;
        next_record += IMPORT;
        done.next_record = next_record;
        match import(&mut client, records(first..first + IMPORT)).await {
            Ok(summary) => {
                assert_eq!(summary.added, IMPORT, "an import of new records");
                done.acknowledged.push(first);
            }
            Err(_) => {
                done.unacknowledged.push(first);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    done
}

#[derive(Debug)]
struct Steps {
    next_subject: u64,
    filed: Vec<String>,
    decided: BTreeMap<String, Decision>,
}

/// FR's officer searches for a base record and files a follow-up for DE's hit; DE's
/// reviewer approves it, refuses it, or (one in four) leaves it pending.
async fn follow_ups_until(
    mut officer: NationalClient<Channel>,
    mut reviewer: NationalClient<Channel>,
    mut next_subject: u64,
    stop: Arc<AtomicBool>,
) -> Steps {
    let mut done = Steps {
        next_subject,
        filed: Vec::new(),
        decided: BTreeMap::new(),
    };
    while !stop.load(Ordering::SeqCst) {
        let n = next_subject;
        next_subject += 1;
        done.next_subject = next_subject;
        let subject = requests::record_identity(&synthetic::record(RECORDS, n % BASE));
        let Ok(answer) = officer
            .search(SearchRequest {
                reason: Some(reason()),
                subjects: vec![subject],
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(hit) = answer
            .into_inner()
            .hits
            .into_iter()
            .find(|h| h.country == "DE")
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(filed) = officer
            .request_follow_up(RequestFollowUpRequest {
                hit_ref: hit.hit_ref,
                justification: "Suspected in a burglary series.".into(),
                offence_description: "Burglary of dwellings".into(),
            })
            .await
        else {
            continue;
        };
        let id = filed.into_inner().id;
        done.filed.push(id.clone());
        let decision = match n % 4 {
            0 | 1 => Decision::Approve,
            2 => Decision::Refuse,
            _ => continue,
        };
        let decided = reviewer
            .decide_follow_up(DecideFollowUpRequest {
                id: id.clone(),
                decision: decision as i32,
                reason: "Checked against the local file.".into(),
            })
            .await;
        if decided.is_ok() {
            done.decided.insert(id, decision);
        }
    }
    done
}

/// What the checks of the owner found.
#[derive(Debug)]
struct Checked {
    records: u64,
    audit_entries: u64,
}

/// Checks DE after a restart: records, follow-ups, decisions, the audit log. With
/// `everything`, every acknowledged import and follow-up of every round; otherwise the
/// newest ones and a few older ones.
async fn check_owner(net: &Network, ledger: &Ledger, everything: bool) -> Checked {
    // Imports: whole or absent, and every acknowledged one stored.
    let count = net
        .client("DE", Role::Operator)
        .count_records(CountRecordsRequest {})
        .await
        .expect("count")
        .into_inner();
    let imported = count
        .records
        .checked_sub(BASE)
        .expect("the base import survives");
    assert_eq!(
        imported % IMPORT,
        0,
        "{} records stored: part of an import of {IMPORT}",
        count.records
    );
    let stored_imports = imported / IMPORT;
    let acknowledged = ledger.acknowledged_imports();
    let sent = acknowledged + ledger.unacknowledged.len() as u64;
    assert!(
        (acknowledged..=sent).contains(&stored_imports),
        "{stored_imports} imports stored; {acknowledged} acknowledged, {sent} sent"
    );
    // Every acknowledged import is found: its first and last record.
    let sample: Vec<u64> = if everything {
        ledger.acknowledged.clone()
    } else {
        ledger.acknowledged.iter().rev().take(20).copied().collect()
    };
    for chunk in sample.chunks(250) {
        let subjects: Vec<u64> = chunk.iter().flat_map(|&f| [f, f + IMPORT - 1]).collect();
        let found = hits_in_de(net, &subjects).await;
        for (i, n) in subjects.iter().enumerate() {
            assert!(
                found.contains(&(i as u32)),
                "acknowledged record {n} is not found in DE"
            );
        }
    }

    // Follow-ups and decisions, against the audit log.
    let entries = audit_entries(net, "DE").await;
    let decided_events: BTreeSet<String> = entries
        .iter()
        .filter(|(kind, _)| kind == "followup.decided")
        .filter_map(|(_, f)| f["followup"].as_str().map(str::to_owned))
        .collect();
    let ids: Vec<&String> = if everything {
        ledger.filed.iter().collect()
    } else {
        ledger.filed.iter().rev().take(40).collect()
    };
    let mut reviewer = net.client("DE", Role::Reviewer);
    for id in ids {
        let f = reviewer
            .show_follow_up(ShowFollowUpRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged follow-up {id} is lost: {e}"))
            .into_inner();
        let state = FollowUpState::try_from(f.state).unwrap_or(FollowUpState::Unspecified);
        let decided = matches!(
            state,
            FollowUpState::Approved | FollowUpState::Delivered | FollowUpState::Refused
        );
        assert_eq!(
            decided,
            decided_events.contains(id),
            "follow-up {id} is {state:?}; its followup.decided event is {}",
            if decided_events.contains(id) {
                "there"
            } else {
                "missing"
            }
        );
        if let Some(decision) = ledger.decided.get(id) {
            let expected: &[FollowUpState] = match decision {
                Decision::Approve => &[FollowUpState::Approved, FollowUpState::Delivered],
                _ => &[FollowUpState::Refused, FollowUpState::Delivered],
            };
            assert!(
                expected.contains(&state),
                "acknowledged decision {decision:?} on {id} is lost: {state:?}"
            );
            assert_eq!(
                f.steps.last().map(|s| s.decision),
                Some(*decision as i32),
                "{id}"
            );
        }
    }

    // The log verifies, and every stored record is attributed by the event written
    // with it; every acknowledged import has its summary.
    let verified = verify_audit(net, "DE").await;
    let sum = |kind: &str| -> u64 {
        entries
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, f)| f["added"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        sum("records.stored"),
        count.records,
        "records.stored events attribute {} records; {} are stored",
        sum("records.stored"),
        count.records
    );
    let summaries = entries
        .iter()
        .filter(|(k, _)| k == "records.imported")
        .count() as u64;
    assert!(
        summaries > acknowledged && sum("records.imported") >= BASE + acknowledged * IMPORT,
        "{summaries} records.imported events for {acknowledged} acknowledged imports and the base"
    );
    Checked {
        records: count.records,
        audit_entries: verified,
    }
}

/// Waits until FR shows every decision DE holds for the follow-ups of the ledger;
/// returns how many it showed.
async fn await_deliveries(net: &Network, ledger: &Ledger) -> usize {
    let mut reviewer = net.client("DE", Role::Reviewer);
    let mut officer = net.client("FR", Role::Officer);
    // What DE decided, acknowledged or not (a decision committed just before a kill).
    let mut expected = BTreeMap::new();
    for id in &ledger.filed {
        let f = reviewer
            .show_follow_up(ShowFollowUpRequest { id: id.clone() })
            .await
            .expect("show")
            .into_inner();
        let at_fr = match FollowUpState::try_from(f.state) {
            Ok(FollowUpState::Approved) => FollowUpState::Delivered,
            Ok(FollowUpState::Refused) => FollowUpState::Refused,
            Ok(FollowUpState::Delivered) if refused(&f) => FollowUpState::Refused,
            Ok(FollowUpState::Delivered) => FollowUpState::Delivered,
            _ => continue,
        };
        expected.insert(id.clone(), at_fr);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut waiting: Vec<(String, FollowUpState)> = expected.into_iter().collect();
    let total = waiting.len();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for (id, state) in waiting {
            let f = officer
                .show_follow_up(ShowFollowUpRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("FR lost its follow-up {id}: {e}"))
                .into_inner();
            if f.state == state as i32 {
                if state == FollowUpState::Delivered {
                    assert!(f.core_data.contains_key("record_id"), "{f:?}");
                }
            } else {
                still.push((id, state));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "decisions never reached FR: {waiting:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    total
}

/// Whether an owner's follow-up that is delivered was a refusal.
fn refused(f: &adep_proto::v1::FollowUp) -> bool {
    f.steps.last().map(|s| s.decision) == Some(Decision::Refuse as i32)
}

/// The subjects (by position) FR's officer finds in DE, searching for base or
/// imported records by number. Retried while FR does not reach DE yet.
async fn hits_in_de(net: &Network, numbers: &[u64]) -> BTreeSet<u32> {
    let subjects: Vec<Identity> = numbers
        .iter()
        .map(|&n| requests::record_identity(&synthetic::record(RECORDS, n)))
        .collect();
    let mut officer = net.client("FR", Role::Officer);
    for _ in 0..100 {
        let answer = officer
            .search(SearchRequest {
                reason: Some(reason()),
                subjects: subjects.clone(),
            })
            .await
            .expect("FR answers its officer")
            .into_inner();
        let de_answered = answer
            .peers
            .iter()
            .any(|p| p.country == "DE" && p.state == adep_proto::v1::PeerState::Ok as i32);
        if de_answered {
            return answer
                .hits
                .iter()
                .filter(|h| h.country == "DE")
                .map(|h| h.subject)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("FR never reached DE again");
}

/// Verifies a node's audit log as its auditor; returns how many entries it checked.
async fn verify_audit(net: &Network, country: &str) -> u64 {
    let v = net
        .client(country, Role::Auditor)
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(
        v.ok,
        "{country}'s audit log breaks at entry {}: {}",
        v.bad_entry, v.problem
    );
    v.entries
}

/// A node's audit entries as its auditor exports them: kind and fields.
async fn audit_entries(net: &Network, country: &str) -> Vec<(String, serde_json::Value)> {
    let mut stream = net
        .client(country, Role::Auditor)
        .export_audit(AuditExportRequest::default())
        .await
        .expect("export")
        .into_inner();
    let mut entries = Vec::new();
    while let Some(e) = stream.message().await.expect("entry") {
        if e.checkpoint.is_some() {
            // The export's closing head, not an entry.
            continue;
        }
        let fields = serde_json::from_str(&e.fields_json).expect("fields are JSON");
        entries.push((e.kind, fields));
    }
    entries
}

/// Imports `records` in one stream; the summary, once the final progress message
/// with it arrived (the acknowledgement).
async fn import(
    client: &mut NationalClient<Channel>,
    records: Vec<RecordData>,
) -> Result<ImportSummary, tonic::Status> {
    let mut messages: Vec<ImportRequest> = records
        .chunks(MESSAGE)
        .map(|c| ImportRequest {
            mode: 0,
            records: c.to_vec(),
        })
        .collect();
    messages[0].mode = ImportMode::Import as i32;
    let mut progress = client
        .import_records(tokio_stream::iter(messages))
        .await?
        .into_inner();
    while let Some(p) = progress.message().await? {
        if let Some(summary) = p.summary {
            return Ok(summary);
        }
    }
    Err(tonic::Status::unknown("the import ended without a summary"))
}

/// Synthetic records by number, each with its own id.
fn records(numbers: std::ops::Range<u64>) -> Vec<RecordData> {
    numbers
        .map(|n| requests::record(&synthetic::record(RECORDS, n)))
        .collect()
}

fn reason() -> Reason {
    use adep_proto::v1::{Aim, PersonCategory};
    Reason {
        case_reference: "FR-2026-0042".into(),
        offence_category: "0301 00".into(),
        person_category: PersonCategory::Suspect as i32,
        aim: Aim::Identify as i32,
    }
}

/// The PKI and configurations of FR and DE on loopback ports.
#[derive(Debug)]
struct Network {
    dir: PathBuf,
}

impl Network {
    fn init(dir: &Path) -> Network {
        let plans: Vec<NodePlan> = ["FR", "DE"]
            .iter()
            .map(|cc| NodePlan {
                country: cc.parse::<Country>().expect("cc"),
                federation: free_addr(),
                national: free_addr(),
                metrics: None,
                reach: None,
            })
            .collect();
        pki::init(dir, &plans).expect("pki init");
        let net = Network {
            dir: dir.to_owned(),
        };
        for cc in ["FR", "DE"] {
            let path = net.config_path(cc);
            let mut config = Config::load(&path).expect("config from pki init loads");
            // Deliveries and polls retried every second; no rate limit in the way.
            config.followup.retry_max = Duration::from_secs(1);
            config.limits.searches_per_minute_per_officer = 1_000_000;
            config.limits.matches_per_minute_per_peer = 1_000_000;
            let text = toml::to_string_pretty(&config).expect("config serialises");
            std::fs::write(&path, text).expect("write config");
        }
        net
    }

    fn config_path(&self, country: &str) -> PathBuf {
        self.dir.join(country).join("node.toml")
    }

    /// A national client as a country's user of `role`, through its CLI profile.
    fn client(&self, country: &str, role: Role) -> NationalClient<Channel> {
        Profile::load(&self.dir.join(country).join(format!("{role}.toml")))
            .expect("profile loads")
            .national_client()
            .expect("client")
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// One node process. Dropped while the test panics, it shows the end of its log.
#[derive(Debug)]
struct NodeProcess {
    country: &'static str,
    config: PathBuf,
    log: PathBuf,
    operator: Profile,
    child: Option<Child>,
}

impl NodeProcess {
    fn new(net: &Network, country: &'static str) -> NodeProcess {
        NodeProcess {
            country,
            config: net.config_path(country),
            log: net.dir.join(format!("{country}.log")),
            operator: Profile::load(&net.dir.join(country).join("operator.toml")).expect("profile"),
            child: None,
        }
    }

    /// Starts the node on its ports and data directory and waits until it serves.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.country);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start adep-node");
        self.child = Some(child);
        let mut client = self.operator.national_client().expect("client");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if client
                .status(StatusRequest { check_peers: false })
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited on start: {status}", self.country);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not serve",
                self.country
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the node runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    fn stop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("--- last lines of {}'s log ---\n{tail}", self.country);
        }
    }
}

fn seed_from_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1
}

/// xorshift64: the random moments of the kills, reproducible from the seed.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
