//! `adep network up`: a whole test network in one process, for development and demos.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use adep_node::{
    config::Config,
    domain::{
        audit::AuditLog,
        principals::{Country, Role},
    },
    grpc::server,
    tooling::pki,
    tooling::profile::Profile,
};
use adep_proto::v1::{PeerState, StatusRequest};
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use tokio::sync::watch;

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Start one node per country on loopback, creating the PKI first if DIR has none.
    ///
    /// Each node runs in this process with the configuration `adep pki init` wrote
    /// (DIR/CC/node.toml), so its store persists in DIR/CC/data between runs. Once every
    /// node answers and sees all its peers, every CLI profile of every country is printed
    /// with a command that runs as printed, and the network stays up until Ctrl-C (or,
    /// with --check, stops and exits 0), showing its activity on stderr meanwhile:
    /// searches, Match calls, follow-ups and decisions per node, as counts.
    Up(UpArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Countries of the network.
    #[arg(long, value_delimiter = ',', default_value = "FR,DE,ES", value_parser = super::parse_country)]
    countries: Vec<Country>,
    /// Directory of the PKI, configurations and data.
    #[arg(long, default_value = "adep-net", value_name = "DIR")]
    dir: PathBuf,
    /// First port when creating the PKI (see `adep pki init`).
    #[arg(long, default_value_t = 7100, value_name = "N")]
    base_port: u16,
    /// Stop and exit 0 once every node sees all its peers (exit 2 if not).
    #[arg(long)]
    check: bool,
}

pub fn run(cmd: NetworkCommand, json: bool) -> Result<ExitCode> {
    let NetworkCommand::Up(args) = cmd;
    super::in_process_logs("warn");
    super::runtime()?.block_on(up(args, json))
}

async fn up(args: UpArgs, json: bool) -> Result<ExitCode> {
    if args.dir.join("network-ca.pem").exists() {
        eprintln!("using the existing PKI in {}", args.dir.display());
    } else {
        let plans = pki::NodePlan::loopback(&args.countries, args.base_port)?;
        pki::init(&args.dir, &plans)?;
        eprintln!("created a development PKI in {}", args.dir.display());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = Vec::new();
    let mut states = Vec::new();
    for cc in &args.countries {
        let path = args.dir.join(cc.as_str()).join("node.toml");
        let config = Config::load(&path)?;
        let listeners = server::Listeners::bind(&config).await.with_context(|| {
            format!(
                "node {cc}: is a network already running from {}? Stop it with Ctrl-C, or give another --dir and --base-port",
                args.dir.display()
            )
        })?;
        let prepared = server::prepare(config).with_context(|| format!("node {cc}"))?;
        states.push((*cc, prepared.state()));
        let mut rx = stop_rx.clone();
        let handle = tokio::spawn(server::serve(prepared, listeners, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        nodes.push((*cc, handle));
    }

    let all_ok = wait_until_connected(&args).await;
    let profiles: Vec<_> = args
        .countries
        .iter()
        .map(|cc| (cc, args.dir.join(cc.as_str())))
        .collect();
    if json {
        let list: Vec<_> = profiles
            .iter()
            .map(|(cc, d)| {
                serde_json::json!({
                    "country": cc.as_str(),
                    "config": d.join("node.toml"),
                    "profiles": Role::ALL.iter().map(|r| (r.as_str().to_owned(), serde_json::json!(d.join(format!("{r}.toml"))))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "connected": all_ok.is_ok(), "nodes": list })
        );
    } else {
        match &all_ok {
            Ok(()) => println!("network up: {} nodes, every peer connected", nodes.len()),
            Err(e) => println!("network up, but not fully connected: {e:#}"),
        }
        let program = crate::output::program();
        for (cc, d) in &profiles {
            println!("  {cc}:");
            for role in Role::ALL {
                let profile = d.join(format!("{role}.toml"));
                println!(
                    "    {:<9} {program} status --profile {}",
                    role.as_str(),
                    crate::output::shell_word(&profile.display().to_string())
                );
            }
        }
    }
    if !args.check {
        eprintln!("press Ctrl-C to stop the network; the network's activity is shown below");
        let activity = tokio::spawn(show_activity(states));
        let _ = tokio::signal::ctrl_c().await;
        activity.abort();
        eprintln!("stopping the network");
    }
    let _ = stop_tx.send(true);
    for (cc, handle) in nodes {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("node {cc}: {e}"),
            Err(e) => eprintln!("node {cc}: {e}"),
        }
    }
    if args.check && !json {
        eprintln!(
            "network stopped (--check): run `network up` without --check to use these profiles"
        );
    } else if !json {
        eprintln!("network stopped: every node shut down");
    }
    Ok(if all_ok.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The audit events `network up` counts, with how it names one and several.
const ACTIVITY: [(&str, &str, &str); 6] = [
    ("search.sent", "search", "searches"),
    (
        "match.received",
        "Match call answered",
        "Match calls answered",
    ),
    (
        "followup.requested",
        "follow-up requested",
        "follow-ups requested",
    ),
    (
        "followup.filed",
        "follow-up received",
        "follow-ups received",
    ),
    ("followup.decided", "decision", "decisions"),
    (
        "followup.decision_received",
        "decision received",
        "decisions received",
    ),
];

/// Every few seconds, one line per node whose activity changed: counts of searches,
/// Match calls, follow-ups and decisions from its audit log since the network came up.
/// Counts only: no name, reason or reference.
async fn show_activity(states: Vec<(Country, std::sync::Arc<adep_node::app::NodeState>)>) {
    let since = adep_node::store::unix_now();
    let mut shown: Vec<Vec<usize>> = vec![Vec::new(); states.len()];
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        for ((cc, state), last) in states.iter().zip(shown.iter_mut()) {
            let state = state.clone();
            let counts = tokio::task::spawn_blocking(move || {
                let mut counts = vec![0usize; ACTIVITY.len()];
                for entry in AuditLog::export(state.store.as_ref(), since, i64::MAX).flatten() {
                    if let Some(i) = ACTIVITY.iter().position(|(k, ..)| *k == entry.kind) {
                        counts[i] += 1;
                    }
                }
                counts
            })
            .await
            .unwrap_or_default();
            if counts != *last && counts.iter().any(|n| *n > 0) {
                let said: Vec<String> = ACTIVITY
                    .iter()
                    .zip(&counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|((_, one, several), n)| {
                        format!("{n} {}", if *n == 1 { one } else { several })
                    })
                    .collect();
                eprintln!("activity {cc}: {}", said.join(", "));
                *last = counts;
            }
        }
    }
}

/// Asks every node, as its operator, until each sees all its peers (at most ~15 s).
async fn wait_until_connected(args: &UpArgs) -> Result<()> {
    let mut last = String::new();
    for _ in 0..60 {
        match check_all(args).await {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{last}")
}

async fn check_all(args: &UpArgs) -> Result<()> {
    for cc in &args.countries {
        let profile = Profile::load(&args.dir.join(cc.as_str()).join("operator.toml"))?;
        let resp = profile
            .national_client()?
            .status(StatusRequest { check_peers: true })
            .await
            .map_err(|s| super::output::call_error(&profile.node, s))?
            .into_inner();
        if let Some(p) = resp.peers.iter().find(|p| p.state != PeerState::Ok as i32) {
            bail!("{cc} cannot reach peer {}: {}", p.country, p.detail);
        }
    }
    Ok(())
}
