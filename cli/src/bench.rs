//! `adep bench`: the matching benchmarks on this machine, each next to the physical
//! limit or baseline it is bound by, measured in the same run: the one-core rates of
//! a bare ristretto255 scalar multiplication and of a full RFC 9497 evaluation, and
//! an empty mTLS call. Figures, not assertions: nothing here fails on a slow run.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use adep_node::{
    config::Config,
    domain::audit::AuditLog,
    domain::epochs::StoredEpochs,
    domain::index::{self, ImportMode, NationalIndex, Written},
    domain::principals::{Country, Role},
    domain::pseudonymise::{
        KeyEpoch, KeyMaterial, KeyedDigest, Side, derive_keys,
        oprf::{Blinded, Element, NodeKey},
    },
    grpc::server::{self, Listeners},
    secret::DataKey,
    store::{self, Batch},
    tooling::pki::{self, NodePlan},
    tooling::profile::Profile,
    tooling::synthetic,
};
use adep_proto::v1::{
    Aim, BlindedSubject, EvaluateRequest, HelloRequest, Identity, MatchKey, MatchRequest,
    MatchSubject, PersonCategory, Reason, RotateAction, RotateKeysRequest, SearchRequest,
    federation_client::FederationClient,
};
use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};
use voprf::{Group, Ristretto255};

/// `adep bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Synthetic records in the benchmark node's national file. Keying costs about
    /// one OPRF evaluation per match key (32 per record): 100,000 records take a few
    /// minutes on 2 cores, 1,000,000 about twenty; with --dir the store is kept and
    /// reused by the next run with the same count.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Subjects sent through Evaluate and Match in total.
    #[arg(long, default_value_t = 20_000)]
    match_subjects: usize,
    /// Subjects per Evaluate and Match batch.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Match batches in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Skip the figures that key the whole store again (the index build for a new
    /// epoch, and the rotation): with --records 1000000 each takes as long as the
    /// import. For a run that measures restart and memory on a large store.
    #[arg(long)]
    no_rebuild: bool,
    /// Calls for each latency median.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Work directory (PKI, stores), kept afterwards: a later run with the same
    /// --records reuses its stores and skips the import and the index build. Default:
    /// a temporary directory, removed afterwards.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

const SEED: u64 = 2026;

struct Report {
    json: bool,
    figures: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn add(&mut self, key: &str, value: serde_json::Value, text: String) {
        if !self.json {
            println!("{text}");
        }
        self.figures.insert(key.to_owned(), value);
    }
}

/// Resident and peak resident memory of a process, from /proc (0 where unavailable).
fn process_memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Runs the benchmarks.
pub fn run(args: &BenchArgs, json: bool) -> Result<ExitCode> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("{}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("temporary directory")?;
            temp.path().to_owned()
        }
    };
    let mut report = Report {
        json,
        figures: serde_json::Map::new(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.add(
        "machine",
        json!({ "cores": cores }),
        format!(
            "adep bench: {} records, {cores} cores, work directory {}",
            args.records,
            dir.display()
        ),
    );
    let runtime = super::runtime()?;
    runtime.block_on(bench(args, &dir, &mut report))?;
    if json {
        println!("{}", serde_json::Value::Object(report.figures));
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: &BenchArgs, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    // The network: three nodes on loopback, listeners bound first so the PKI names them.
    let countries: Vec<Country> = ["FR", "DE", "ES"]
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    // A kept work directory's PKI names the listeners of the run that made it; a new
    // one names the ports bound now.
    let pki_dir = dir.join("net");
    let reuse = pki_dir.join("network-ca.pem").is_file();
    let mut plans = Vec::new();
    let mut bound = Vec::new();
    for cc in &countries {
        let (federation, national) = if reuse {
            let c = Config::load(&pki_dir.join(cc.as_str()).join("node.toml"))?;
            (c.federation.listen, c.national.listen)
        } else {
            let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
            (any, any)
        };
        let federation = TcpListener::bind(federation).await?;
        let national = TcpListener::bind(national).await?;
        plans.push(NodePlan {
            country: *cc,
            federation: federation.local_addr()?,
            national: national.local_addr()?,
            metrics: None,
            reach: None,
        });
        bound.push(Listeners {
            federation,
            national,
            metrics: None,
        });
    }
    if !reuse {
        pki::init(&pki_dir, &plans)?;
    }
    let config = |cc: &str| Config::load(&pki_dir.join(cc).join("node.toml"));
    // The benchmark calls far faster than the default rate limits allow.
    for cc in &countries {
        let mut c = config(cc.as_str())?;
        c.limits.matches_per_minute_per_peer = 10_000_000;
        c.limits.evaluations_per_minute_per_peer = 1_000_000_000;
        c.limits.searches_per_minute_per_officer = 10_000_000;
        c.limits.peer_timeout_ms = 60_000;
        let text =
            toml::to_string_pretty(&c).context("cannot write the benchmark configuration")?;
        std::fs::write(pki_dir.join(cc.as_str()).join("node.toml"), text)?;
    }
    let de = config("DE")?;
    let de_key =
        || -> Result<NodeKey> { Ok(server::node_key(&de.matching.seed_file, KeyEpoch(1))?) };
    let key = de_key()?;

    // The physical limits, one core: a bare ristretto255 scalar multiplication, and a
    // full RFC 9497 evaluation (hash to group, multiplication, final hash).
    let mut rng = rand_core::OsRng;
    let scalar = <Ristretto255 as Group>::random_scalar(&mut rng);
    let mut point = <Ristretto255 as Group>::base_elem();
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        point *= scalar;
    }
    std::hint::black_box(point);
    let mult_rate = n as f64 / started.elapsed().as_secs_f64();
    report.add(
        "scalar_multiplications_per_second_one_core",
        json!(mult_rate),
        format!("limit     bare ristretto255 scalar multiplication (one core): {mult_rate:.0} per second"),
    );
    let started = Instant::now();
    for i in 0..n {
        std::hint::black_box(key.digest_text(format!("full|bench|{i}|1970-01-01").as_bytes()));
    }
    let eval_rate = n as f64 / started.elapsed().as_secs_f64();
    report.add(
        "full_evaluations_per_second_one_core",
        json!(eval_rate),
        format!("limit     full RFC 9497 evaluation (one core): {eval_rate:.0} per second"),
    );

    // Blinded evaluation at the answering node, one core: decode, multiply, encode.
    let sample = synthetic::records(SEED + 1, 2_000);
    let keys: Vec<Vec<KeyMaterial>> = sample
        .iter()
        .take(400)
        .map(|r| derive_keys(&r.identity, Side::Query))
        .collect();
    let blinded = Blinded::blind(keys).context("the system random generator failed")?;
    let elements = blinded.len();
    let started = Instant::now();
    let evaluated = key.evaluate(blinded.elements())?;
    let blinded_rate = elements as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(evaluated);
    report.add(
        "blinded_evaluations_per_second_one_core",
        json!(blinded_rate),
        format!(
            "evaluate  {blinded_rate:.0} blinded elements per second on one core = {:.0} % of the bare multiplication (target >= 80 %)",
            100.0 * blinded_rate / mult_rate
        ),
    );

    // Records keyed per second (normalise, derive, evaluate), one core.
    let started = Instant::now();
    let mut key_count = 0usize;
    for r in &sample {
        key_count += key.hash_identity(&r.identity, Side::Record).len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let keyed_rate = sample.len() as f64 / elapsed;
    let keys_per_record = key_count as f64 / sample.len() as f64;
    report.add(
        "keyed_records_per_second_one_core",
        json!(keyed_rate),
        format!("keying    {keyed_rate:.0} records per second on one core ({keys_per_record:.1} keys per record)"),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = cores as f64 * eval_rate / keys_per_record;

    // Import into DE's data directory: stored durably with their digests, indexed.
    {
        let opened = store::open(&de.data_dir, de.country, &DataKey::from_file(&de.data_key)?)?;
        // A reused store may have rotated: load it under its own active epoch.
        let epoch = StoredEpochs::read(opened.store.as_ref())?
            .active
            .unwrap_or(1);
        let national = NationalIndex::load(
            opened.store.clone(),
            server::node_key(&de.matching.seed_file, KeyEpoch(epoch))?,
            &mut |_| {},
        )?;
        let stored = national.counts().records as u64;
        if stored == args.records {
            report.add(
                "import_records_per_second",
                json!(null),
                format!(
                    "import    reused the {stored} records stored by an earlier run in {}",
                    dir.display()
                ),
            );
        } else {
            if stored != 0 {
                anyhow::bail!(
                    "{} holds {stored} records, not {}: give another --dir or the same --records",
                    dir.display(),
                    args.records
                );
            }
            let records = synthetic::records(SEED, args.records);
            // Each chunk is stored with its audit event, as the node stores it.
            let signing = std::fs::read(&de.audit.signing_key)?;
            let log = AuditLog::open(opened.store.as_ref(), &signing)?;
            let commit = |batch: Batch, written: Written| {
                log.apply_with(
                    opened.store.as_ref(),
                    0,
                    batch,
                    "records.stored",
                    &json!({ "operator": "bench", "written": format!("{written:?}") }),
                )
                .map(|_| ())
            };
            let started = Instant::now();
            let mut last = Instant::now();
            let summary = national.import(
                records,
                ImportMode::Import,
                &mut |p| {
                    if !report.json && last.elapsed() > Duration::from_secs(10) {
                        eprintln!("          importing: {} of {} records", p.done, p.total);
                        last = Instant::now();
                    }
                },
                &commit,
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            let rate = summary.added as f64 / elapsed;
            report.add(
                "import_records_per_second",
                json!(rate),
                format!(
                    "import    {} records stored durably with their digests and indexed in {elapsed:.1} s: {rate:.0} per second = {:.0} % of {cores} cores x evaluations / keys per record = {limit:.0} (target >= 70 %)",
                    summary.added,
                    100.0 * rate / limit
                ),
            );
        }
        drop(national);
        if args.no_rebuild {
            report.add(
                "build_records_per_second",
                json!(null),
                "build     skipped (--no-rebuild)".into(),
            );
        }
        // Build from the stored records under a new epoch, as a rotation does.
        let next = server::node_key(&de.matching.seed_file, KeyEpoch(9_999))?;
        let started = Instant::now();
        let built = if args.no_rebuild {
            None
        } else {
            Some(index::build(opened.store.as_ref(), &next, &mut |_| {})?)
        };
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(built) = built {
            let rate = built.records() as f64 / elapsed;
            index::erase_digests(opened.store.as_ref(), KeyEpoch(9_999))?;
            report.add(
            "build_records_per_second",
            json!(rate),
            format!(
                "build     {} stored records keyed under a new epoch and indexed in {elapsed:.1} s: {rate:.0} per second = {:.0} % of {limit:.0} (target >= 70 %)",
                built.records(),
                100.0 * rate / limit
            ),
        );
        }
    }

    // Start the network. DE runs as its own `adep-node` process (when the binary is
    // next to this one), so its memory is measured alone; it builds its index from
    // the store at start-up. FR and ES run in this process.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let node_binary = std::env::current_exe()?.with_file_name("adep-node");
    let mut child = None;
    for (cc, listeners) in countries.iter().zip(bound) {
        if cc.as_str() == "DE" && node_binary.is_file() {
            drop(listeners);
            let started = Instant::now();
            let mut process = std::process::Command::new(&node_binary)
                .arg("--config")
                .arg(pki_dir.join("DE").join("node.toml"))
                .env("RUST_LOG", "warn")
                .spawn()
                .with_context(|| format!("cannot start {}", node_binary.display()))?;
            let operator =
                Profile::load(&pki_dir.join("DE").join(format!("{}.toml", Role::Operator)))?;
            let mut ready = false;
            for _ in 0..600 {
                if let Ok(mut client) = operator.national_client()
                    && client
                        .count_records(adep_proto::v1::CountRecordsRequest {})
                        .await
                        .is_ok()
                {
                    ready = true;
                    break;
                }
                if let Ok(Some(status)) = process.try_wait() {
                    anyhow::bail!("adep-node for DE exited: {status}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !ready {
                let _ = process.kill();
                anyhow::bail!("adep-node for DE did not become ready");
            }
            let ready_after = started.elapsed().as_secs_f64();
            let (rss, hwm) = settled_memory_mib(process.id()).await;
            report.add(
                "node_memory_mib",
                json!({ "rss": rss, "peak": hwm, "start_seconds": ready_after }),
                format!(
                    "restart   adep-node DE with {} records answers {ready_after:.1} s after it starts, loading the stored digests (target < 30 s at 1,000,000)\nmemory    adep-node DE with {} records indexed: {rss:.0} MiB resident once settled (peak {hwm:.0} MiB while loading; target < 1 GiB)",
                    args.records, args.records,
                ),
            );
            child = Some(process);
            continue;
        }
        let prepared = server::prepare(config(cc.as_str())?)?;
        let mut rx = stop_rx.clone();
        handles.push(tokio::spawn(server::serve(
            prepared,
            listeners,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
    }
    if child.is_none() {
        let (rss, hwm) = process_memory_mib(std::process::id());
        report.add(
            "memory_mib",
            json!({ "rss": rss, "peak": hwm }),
            format!("memory    {rss:.0} MiB resident for the whole benchmark process with {} records indexed (peak {hwm:.0} MiB; build adep-node next to adep to measure the node alone)", args.records),
        );
    }

    // Clients: FR's node certificate to DE's federation listener; FR's officer.
    let fr_dir = pki_dir.join("FR");
    let tls = adep_node::grpc::tls::client_config(
        adep_node::grpc::tls::root_store(&pki_dir.join("network-ca.pem"))?,
        Some((
            adep_node::grpc::tls::load_certs(&fr_dir.join("node.pem"))?,
            adep_node::grpc::tls::load_key(&fr_dir.join("node.key.pem"))?,
        )),
    )?;
    let de_addr = plans[1].federation;
    let channel = adep_node::grpc::tls::channel(
        adep_node::grpc::tls::Target {
            host: de_addr.ip().to_string(),
            port: de_addr.port(),
            server_name: None,
            identity: None,
        },
        tls,
        Duration::from_secs(30),
    )
    .map_err(anyhow::Error::msg)?;
    let mut fed = FederationClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let hello = HelloRequest {
        country: "FR".into(),
        protocol_version: adep_proto::PROTOCOL_VERSION,
    };
    for _ in 0..20 {
        fed.hello(hello.clone()).await?;
    }
    let mut samples = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let started = Instant::now();
        fed.hello(hello.clone()).await?;
        samples.push(started.elapsed());
    }
    let empty = median(samples);
    report.add(
        "empty_call_median_us",
        json!(empty.as_micros()),
        format!(
            "baseline  empty mTLS call (Hello, FR to DE): median {} µs",
            empty.as_micros()
        ),
    );

    let reason = Reason {
        case_reference: "BENCH-1".into(),
        offence_category: "0301 00".into(),
        person_category: PersonCategory::Suspect as i32,
        aim: Aim::Identify as i32,
    };
    // The cryptography of a one-subject search, timed alone: blind its keys once, and
    // for each of two peers evaluate (at the peer) and finalize (here).
    let other = server::node_key(&config("ES")?.matching.seed_file, KeyEpoch(1))?;
    let subject = synthetic::record(SEED, 42).identity;
    let mut samples = Vec::with_capacity(args.calls.min(100));
    for _ in 0..args.calls.min(100) {
        let started = Instant::now();
        let blinded = Blinded::blind(vec![derive_keys(&subject, Side::Query)])
            .context("the system random generator failed")?;
        for peer in [&key, &other] {
            let evaluated = peer.evaluate(blinded.elements())?;
            std::hint::black_box(blinded.finalize(&evaluated)?);
        }
        samples.push(started.elapsed());
    }
    let crypto = median(samples);
    let search_target = 2 * (crypto + 2 * empty);
    report.add(
        "search_cryptography_median_us",
        json!(crypto.as_micros()),
        format!(
            "crypto    one subject's blinding, and evaluation and finalizing for two peers, alone: median {} µs; a search's target is 2 x (this + two empty calls) = {} µs",
            crypto.as_micros(),
            search_target.as_micros()
        ),
    );

    // Search latency: one subject from FR's officer, fanned out to DE and ES; a
    // subject nobody holds, then one DE holds (its answer issues hit references).
    let officer = Profile::load(&pki_dir.join("FR").join(format!("{}.toml", Role::Officer)))?;
    let mut national = officer.national_client()?;
    for (label, known) in [("unknown subject", false), ("subject DE holds", true)] {
        let mut record = synthetic::record(SEED, 42);
        if !known {
            record.identity.name.family = "Qzunknown".into();
        }
        let subject = Identity {
            family_name: record.identity.name.family.clone(),
            given_names: record.identity.name.given.clone(),
            date_of_birth: record.identity.date_of_birth.to_string(),
            ..Identity::default()
        };
        let search = SearchRequest {
            reason: Some(reason.clone()),
            subjects: vec![subject],
        };
        for _ in 0..20 {
            national.search(search.clone()).await?;
        }
        let mut samples = Vec::with_capacity(args.calls);
        let mut hits = 0;
        for _ in 0..args.calls {
            let started = Instant::now();
            let resp = national.search(search.clone()).await?.into_inner();
            samples.push(started.elapsed());
            hits = resp.hits.len();
        }
        let search_median = median(samples);
        let key = if known {
            "search_known_median_us"
        } else {
            "search_unknown_median_us"
        };
        report.add(
            key,
            json!(search_median.as_micros()),
            format!(
                "search    one {label}, FR to DE and ES ({hits} hits): median {} µs = {:.2} x the target",
                search_median.as_micros(),
                search_median.as_secs_f64() / search_target.as_secs_f64().max(1e-9)
            ),
        );
    }

    // Match throughput, twice: subjects nobody holds (the common case of a query,
    // and the cost of lookup and transport), then subjects from DE's file (each
    // answer also issues and stores hit references).
    for (label, known) in [
        ("unknown subjects", false),
        ("subjects from the file", true),
    ] {
        let batches = match_batches(&reason, args, known)?;
        let (rate, total, hit_subjects, hit_refs, elapsed) =
            match_throughput(&fed, batches, args.concurrency).await?;
        let key = if known {
            "match_known_subjects_per_second"
        } else {
            "match_unknown_subjects_per_second"
        };
        report.add(
            key,
            json!(rate),
            format!(
                "match     {total} {label} through Evaluate and Match in batches of {} ({} in flight, finalized here) over mTLS in {elapsed:.1} s: {rate:.0} subjects per second ({hit_subjects} with a hit, {hit_refs} hit references issued)",
                args.batch, args.concurrency
            ),
        );
    }

    // A key rotation on DE alone: the next epoch's index is built from the store while
    // the active one answers; after the switch, both are held during the grace.
    if let Some(process) = child.as_ref().filter(|_| !args.no_rebuild) {
        let operator = Profile::load(&pki_dir.join("DE").join(format!("{}.toml", Role::Operator)))?;
        let mut client = operator.national_client()?;
        let rotate = |action: RotateAction| RotateKeysRequest {
            action: action as i32,
        };
        let started = Instant::now();
        let target = client
            .rotate_keys(rotate(RotateAction::Start))
            .await?
            .into_inner()
            .next_epoch;
        loop {
            let status = client
                .rotate_keys(rotate(RotateAction::Status))
                .await?
                .into_inner();
            match status.phase.as_str() {
                "building" => tokio::time::sleep(Duration::from_millis(100)).await,
                _ if status.active_epoch == target => break,
                other => anyhow::bail!("the rotation on DE ended in phase {other}"),
            }
        }
        let built = started.elapsed().as_secs_f64();
        let (rss, hwm) = settled_memory_mib(process.id()).await;
        report.add(
            "rotation",
            json!({ "build_seconds": built, "rss": rss, "peak": hwm }),
            format!(
                "rotation  DE keyed its {} records under its next epoch and switched in {built:.1} s while answering; in the grace (two indexes): {rss:.0} MiB resident once settled (peak {hwm:.0} MiB)",
                args.records
            ),
        );
    }

    let _ = stop_tx.send(true);
    for h in handles {
        h.await??;
    }
    if let Some(mut process) = child {
        let _ = process.kill();
        let _ = process.wait();
    }
    Ok(())
}

/// A process's resident memory once the allocator has handed back temporary memory:
/// unchanged (within 0.5 %) for two seconds, at most 15 s; and its peak.
async fn settled_memory_mib(pid: u32) -> (f64, f64) {
    let (mut rss, mut hwm) = process_memory_mib(pid);
    let mut steady = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (now, peak) = process_memory_mib(pid);
        steady = if (now - rss).abs() <= rss * 0.005 {
            steady + 1
        } else {
            0
        };
        (rss, hwm) = (now, peak);
        if steady == 8 {
            break;
        }
    }
    (rss, hwm)
}

/// A Match batch before its evaluation: the blinded keys of its subjects.
struct Batched {
    request_id: String,
    blinded: Blinded,
    reason: Reason,
}

/// Batches of subjects from DE's synthetic file, or made-up names nobody holds, each
/// blinded as the requesting node would.
fn match_batches(reason: &Reason, args: &BenchArgs, known: bool) -> Result<Vec<Batched>> {
    (0..args.match_subjects.div_ceil(args.batch))
        .map(|b| {
            let keys = (0..args.batch)
                .map(|s| {
                    let i = (b * args.batch + s) as u64;
                    let mut record = synthetic::record(SEED, i % args.records.max(1));
                    if !known {
                        record.identity.name.family = format!("Qz{}", base26(i));
                        record.identity.name.given = format!("Vx{}", base26(i * 7 + 3));
                    }
                    derive_keys(&record.identity, Side::Query)
                })
                .collect();
            Ok(Batched {
                request_id: format!("bench-{known}-{b}"),
                blinded: Blinded::blind(keys).context("the system random generator failed")?,
                reason: reason.clone(),
            })
        })
        .collect()
}

/// One batch through Evaluate, finalizing, and Match; returns subjects with a hit and
/// hit references.
async fn evaluate_and_match(
    client: &mut FederationClient<tonic::transport::Channel>,
    batch: Batched,
) -> Result<(usize, usize)> {
    let evaluation = client
        .evaluate(EvaluateRequest {
            request_id: batch.request_id.clone(),
            country: "FR".into(),
            subjects: batch
                .blinded
                .elements()
                .iter()
                .map(|s| BlindedSubject {
                    elements: s
                        .iter()
                        .map(|e| prost::bytes::Bytes::copy_from_slice(&e.0))
                        .collect(),
                })
                .collect(),
        })
        .await?
        .into_inner();
    let epoch = evaluation.key_epoch;
    let evaluated: Vec<Vec<Element>> = evaluation
        .subjects
        .iter()
        .map(|s| {
            s.elements
                .iter()
                .map(|e| Element::try_from(e.as_ref()).map_err(|n| anyhow::anyhow!("{n} bytes")))
                .collect()
        })
        .collect::<Result<_>>()?;
    let blinded = batch.blinded;
    let subjects = tokio::task::spawn_blocking(move || blinded.finalize(&evaluated)).await??;
    let resp = client
        .r#match(MatchRequest {
            request_id: batch.request_id,
            country: "FR".into(),
            key_epoch: epoch,
            reason: Some(batch.reason),
            subjects: subjects
                .iter()
                .enumerate()
                .map(|(s, keys)| MatchSubject {
                    subject: s as u32,
                    keys: keys
                        .iter()
                        .map(|k| MatchKey {
                            kind: k.kind.code(),
                            digest: prost::bytes::Bytes::copy_from_slice(&k.digest.0),
                        })
                        .collect(),
                })
                .collect(),
            audit_head: None,
        })
        .await?
        .into_inner();
    Ok((
        resp.results.iter().filter(|r| !r.hits.is_empty()).count(),
        resp.results.iter().map(|r| r.hits.len()).sum(),
    ))
}

fn base26(mut n: u64) -> String {
    let mut s = String::new();
    loop {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// Sends every batch through Match with `concurrency` calls in flight; returns the
/// rate, subjects, subjects with a hit, hit references and seconds.
async fn match_throughput(
    fed: &FederationClient<tonic::transport::Channel>,
    batches: Vec<Batched>,
    concurrency: usize,
) -> Result<(f64, usize, usize, usize, f64)> {
    let total: usize = batches.iter().map(|b| b.blinded.elements().len()).sum();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let mut client = fed.clone();
        workers.push(tokio::spawn(async move {
            let mut hits = (0usize, 0usize);
            loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some(batch) = next else {
                    return Ok::<(usize, usize), anyhow::Error>(hits);
                };
                let (s, r) = evaluate_and_match(&mut client, batch).await?;
                hits.0 += s;
                hits.1 += r;
            }
        }));
    }
    let (mut hit_subjects, mut hit_refs) = (0, 0);
    for w in workers {
        let (s, r) = w.await??;
        hit_subjects += s;
        hit_refs += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        total as f64 / elapsed,
        total,
        hit_subjects,
        hit_refs,
        elapsed,
    ))
}
