//! `adep bench`: the matching benchmarks on this machine, each next to a baseline
//! measured in the same run. Figures, not assertions: nothing here fails on a slow run.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use adep_node::{
    config::Config,
    domain::audit::AuditLog,
    domain::index::{self, ImportMode, NationalIndex, Written},
    domain::principals::{Country, Role},
    domain::pseudonymise::{KeyEpoch, Pseudonymiser, Side},
    grpc::server::{self, Listeners},
    secret::{DataKey, MatchingSecret},
    store::{self, Batch},
    tooling::pki::{self, NodePlan},
    tooling::profile::Profile,
    tooling::synthetic,
};
use adep_proto::v1::{
    Aim, HelloRequest, Identity, MatchKey, MatchRequest, MatchSubject, PersonCategory, Reason,
    RotateAction, RotateKeysRequest, SearchRequest, federation_client::FederationClient,
};
use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};

/// `adep bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Synthetic records in the benchmark node's national file.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Subjects sent through Match in total.
    #[arg(long, default_value_t = 200_000)]
    match_subjects: usize,
    /// Subjects per Match batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Match batches in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Calls for each latency median.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Work directory (PKI, stores). Default: a temporary directory, removed afterwards.
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
    let mut plans = Vec::new();
    let mut bound = Vec::new();
    for cc in &countries {
        let federation = TcpListener::bind("127.0.0.1:0").await?;
        let national = TcpListener::bind("127.0.0.1:0").await?;
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
    let pki_dir = dir.join("net");
    pki::init(&pki_dir, &plans)?;
    let config = |cc: &str| Config::load(&pki_dir.join(cc).join("node.toml"));
    // The benchmark calls far faster than the default rate limits allow. Each node
    // also gets a next matching secret, for the rotation figure at the end.
    let next_secret = pki_dir.join("matching-secret-2");
    std::fs::write(&next_secret, pki::new_secret_hex())?;
    for cc in &countries {
        let mut c = config(cc.as_str())?;
        c.limits.matches_per_minute_per_peer = 10_000_000;
        c.limits.searches_per_minute_per_officer = 10_000_000;
        c.matching.next_secret_file = Some(next_secret.clone());
        c.matching.next_key_epoch = Some(2);
        let text =
            toml::to_string_pretty(&c).context("cannot write the benchmark configuration")?;
        std::fs::write(pki_dir.join(cc.as_str()).join("node.toml"), text)?;
    }
    let secret = MatchingSecret::from_file(&config("DE")?.matching.secret_file)?;

    // Baseline: raw HMAC-SHA256 over 40-byte messages.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose());
    let message = [7u8; 40];
    let n = 2_000_000;
    let started = Instant::now();
    let mut acc = 0u8;
    for i in 0..n {
        let mut m = message;
        m[0] = i as u8;
        acc ^= ring::hmac::sign(&key, &m).as_ref()[0];
    }
    let hmac_rate = n as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    report.add(
        "hmac_per_second",
        json!(hmac_rate),
        format!("baseline  raw HMAC-SHA256 (one core): {hmac_rate:.0} per second"),
    );

    // Records keyed per second (normalise, derive, hash), one core.
    let sample = synthetic::records(SEED + 1, 50_000);
    let p = Pseudonymiser::new(&secret, KeyEpoch(1));
    let started = Instant::now();
    let mut keys = 0usize;
    for r in &sample {
        keys += p.hash_identity(&r.identity, Side::Record).len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let keyed_rate = sample.len() as f64 / elapsed;
    let keys_per_record = keys as f64 / sample.len() as f64;
    report.add(
        "keyed_records_per_second_one_core",
        json!(keyed_rate),
        format!("keying    {keyed_rate:.0} records per second on one core ({keys_per_record:.1} keys per record, {:.0} HMACs per second)", keys as f64 / elapsed),
    );

    // Import into DE's data directory: stored durably, keyed and indexed.
    let de = config("DE")?;
    let records = synthetic::records(SEED, args.records);
    {
        let opened = store::open(&de.data_dir, de.country, &DataKey::from_file(&de.data_key)?)?;
        let national = NationalIndex::load(
            opened.store.clone(),
            Pseudonymiser::new(&secret, KeyEpoch(1)),
            &mut |_| {},
        )?;
        // Each chunk is stored with its audit event, as the node stores it.
        let key = std::fs::read(&de.audit.signing_key)?;
        let log = AuditLog::open(opened.store.as_ref(), &key)?;
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
        let summary = national.import(records, ImportMode::Import, &mut |_| {}, &commit)?;
        let elapsed = started.elapsed().as_secs_f64();
        let rate = summary.added as f64 / elapsed;
        let counts = national.counts();
        report.add(
            "import_records_per_second",
            json!(rate),
            format!("import    {} records stored durably, keyed and indexed in {elapsed:.1} s: {rate:.0} per second ({} keys)", summary.added, counts.keys),
        );
        drop(national);
        // Rebuild from the stored records, as after a key rotation.
        let started = Instant::now();
        let rebuilt = index::build(
            opened.store.as_ref(),
            &Pseudonymiser::new(&secret, KeyEpoch(2)),
            &mut |_| {},
        )?;
        let elapsed = started.elapsed().as_secs_f64();
        let rate = rebuilt.records() as f64 / elapsed;
        report.add(
            "rebuild_records_per_second",
            json!(rate),
            format!("rebuild   {} records re-keyed for a new epoch from the store in {elapsed:.1} s: {rate:.0} per second", rebuilt.records()),
        );
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
                    "memory    adep-node DE with {} records indexed: {rss:.0} MiB resident once settled (peak {hwm:.0} MiB while building its index at start-up, ready in {ready_after:.1} s)",
                    args.records,
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
        offence_category: "0301".into(),
        person_category: PersonCategory::Suspect as i32,
        aim: Aim::Identify as i32,
    };
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
                "search    one {label}, FR to DE and ES ({hits} hits): median {} µs = {:.1} x the empty call",
                search_median.as_micros(),
                search_median.as_secs_f64() / empty.as_secs_f64().max(1e-9)
            ),
        );
    }

    // Match throughput, twice: subjects nobody holds (the common case of a query,
    // and the cost of lookup and transport), then subjects from DE's file (each
    // answer also issues and stores hit references).
    let p = Arc::new(Pseudonymiser::new(&secret, KeyEpoch(1)));
    for (label, known) in [
        ("unknown subjects", false),
        ("subjects from the file", true),
    ] {
        let batches = match_batches(&p, &reason, args, known);
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
                "match     {total} {label} in batches of {} ({} in flight) over mTLS in {elapsed:.1} s: {rate:.0} subjects per second ({hit_subjects} with a hit, {hit_refs} hit references issued)",
                args.batch, args.concurrency
            ),
        );
    }

    // A key rotation on DE: the next epoch's index is built from the store while the
    // active one answers; in the transition both are held.
    if let Some(process) = &child {
        let operator = Profile::load(&pki_dir.join("DE").join(format!("{}.toml", Role::Operator)))?;
        let mut client = operator.national_client()?;
        let rotate = |action: RotateAction| RotateKeysRequest {
            action: action as i32,
        };
        let started = Instant::now();
        client.rotate_keys(rotate(RotateAction::Start)).await?;
        loop {
            let status = client
                .rotate_keys(rotate(RotateAction::Status))
                .await?
                .into_inner();
            match status.phase.as_str() {
                "transition" => break,
                "building" => tokio::time::sleep(Duration::from_millis(100)).await,
                other => anyhow::bail!("the rotation on DE ended in phase {other}"),
            }
        }
        let built = started.elapsed().as_secs_f64();
        let (rss, hwm) = settled_memory_mib(process.id()).await;
        report.add(
            "rotation",
            json!({ "build_seconds": built, "rss": rss, "peak": hwm }),
            format!(
                "rotation  DE built the next epoch's index for {} records in {built:.1} s while answering; in transition (two indexes): {rss:.0} MiB resident once settled (peak {hwm:.0} MiB)",
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

/// Match batches: subjects from DE's synthetic file, or made-up names nobody holds.
fn match_batches(
    p: &Pseudonymiser,
    reason: &Reason,
    args: &BenchArgs,
    known: bool,
) -> Vec<MatchRequest> {
    (0..args.match_subjects.div_ceil(args.batch))
        .map(|b| MatchRequest {
            request_id: format!("bench-{known}-{b}"),
            country: "FR".into(),
            key_epoch: 1,
            reason: Some(reason.clone()),
            subjects: (0..args.batch)
                .map(|s| {
                    let i = (b * args.batch + s) as u64;
                    let mut record = synthetic::record(SEED, i % args.records.max(1));
                    if !known {
                        record.identity.name.family = format!("Qz{}", base26(i));
                        record.identity.name.given = format!("Vx{}", base26(i * 7 + 3));
                    }
                    MatchSubject {
                        subject: s as u32,
                        keys: p
                            .hash_identity(&record.identity, Side::Query)
                            .into_iter()
                            .map(|k| MatchKey {
                                kind: k.kind.code(),
                                digest: prost::bytes::Bytes::copy_from_slice(&k.digest.0),
                            })
                            .collect(),
                    }
                })
                .collect(),
            audit_head: None,
        })
        .collect()
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
    batches: Vec<MatchRequest>,
    concurrency: usize,
) -> Result<(f64, usize, usize, usize, f64)> {
    let total: usize = batches.iter().map(|b| b.subjects.len()).sum();
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
                    return Ok::<(usize, usize), tonic::Status>(hits);
                };
                let resp = client.r#match(batch).await?.into_inner();
                hits.0 += resp.results.iter().filter(|r| !r.hits.is_empty()).count();
                hits.1 += resp.results.iter().map(|r| r.hits.len()).sum::<usize>();
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
