//! `adep`: the command line of an adep node's users.
//!
//! Exit codes: 0 success, 1 a negative answer where a command defines one (no hit for
//! `search`, a peer not answering for `status`, ids not stored for `records delete`,
//! a log that does not verify for `audit verify`), 2 any error.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

mod audit;
mod bench;
mod certs;
mod demo;
mod followup;
mod keys;
mod matchtest;
mod network;
mod output;
mod records;
mod search;

use adep_node::{domain::principals::Country, tooling::pki, tooling::profile::Profile};

/// adep: hit/no-hit police-record exchange between European states.
///
/// Officers search and file follow-up requests, reviewers decide on incoming requests,
/// operators run the node, auditors verify its audit log. `status`, `search`,
/// `followup`, `records`, `certs`, `keys` and `audit` talk to a node's national API as
/// the user of a CLI profile (`--profile` or ADEP_PROFILE), over mutual TLS with that
/// user's certificate; `demo`, `pki`, `network`, `offence-categories`, `match-test` and
/// `bench` need no profile. Exit status: 0 success, 1 a negative answer where a command
/// defines one (no hit, a peer not answering, ids not stored, an audit log that does
/// not verify), 2 an error.
#[derive(Debug, Parser)]
#[command(name = "adep", version, propagate_version = true)]
struct Cli {
    /// Still read before the command, as earlier versions took it (hidden).
    #[arg(long, hide = true, env = "ADEP_PROFILE", value_name = "FILE")]
    profile: Option<PathBuf>,

    /// Still read before the command, as earlier versions took it (hidden).
    #[arg(long, hide = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// `--profile` and `--json`, on the commands that talk to a node (and their
/// subcommands).
#[derive(Debug, Args)]
struct NodeFlags {
    /// CLI profile: node address, national CA, your certificate and key (from `adep pki init`).
    #[arg(long, global = true, env = "ADEP_PROFILE", value_name = "FILE")]
    profile: Option<PathBuf>,
    #[command(flatten)]
    json: JsonFlag,
}

/// `--json`, on the commands that print JSON.
#[derive(Debug, Args)]
struct JsonFlag {
    /// Print machine-readable JSON instead of text; errors too, as
    /// `{"error": {"kind": "usage" | "error", "message": ..}}` on stdout (exit 2).
    #[arg(long, global = true)]
    json: bool,
}

/// A command's own arguments with the flags it takes.
#[derive(Debug, Args)]
struct With<A: Args, F: Args> {
    #[command(flatten)]
    args: A,
    #[command(flatten)]
    flags: F,
}

/// A command's subcommands with the flags they take.
#[derive(Debug, Args)]
struct Sub<C: Subcommand, F: Args> {
    #[command(subcommand)]
    cmd: C,
    #[command(flatten)]
    flags: F,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start here: run the whole exchange on a fresh three-country network on
    /// loopback (PKI, nodes, synthetic national files), from a search that hits in
    /// another country through the reviewer's approval to the released core data.
    /// Needs no profile; exits 0 when every step did what it should.
    Demo(demo::DemoArgs),
    /// Development PKI: certificates, each node's keys and key seed, node
    /// configurations and CLI profiles (`init`), and revocation (`revoke`).
    Pki(Sub<PkiCommand, JsonFlag>),
    /// Run a whole test network on this machine (development and demonstrations).
    Network(Sub<network::NetworkCommand, JsonFlag>),
    /// Show the node, your identity and role, its store, and whether each peer answers.
    ///
    /// Exit status: 0 when every peer answers (or with --no-peers), 1 when one does
    /// not, 2 on an error.
    Status(With<StatusArgs, NodeFlags>),
    /// Officer: ask every peer whether it holds a record on a person (hit / no hit).
    ///
    /// Your node derives the identity's match keys and sends them blinded: each peer
    /// evaluates them under its own key (RFC 9497 OPRF), your node unblinds the result
    /// and asks for matches with it. A peer answers automatically with hit references and
    /// a match quality, never record data. All four reason fields are mandatory, recorded
    /// by every node asked, and carried by each follow-up of the search's hits; after a
    /// hit the output gives the `adep followup request` command to run next. Exit status:
    /// 0 at least one hit, 1 no hit, 2 error (including when no peer answered).
    Search(With<search::SearchArgs, NodeFlags>),
    /// The offence categories a search's reason names: codes of the ECRIS common table
    /// (Directive (EU) 2019/884, Annex), four digits, a space and two digits, such as
    /// `0301 00`. Lists the table shipped with adep and its source. Needs no profile.
    OffenceCategories(JsonFlag),
    /// Auditor: verify the node's audit log, or export a period of it as JSON Lines.
    Audit(Sub<audit::AuditCommand, NodeFlags>),
    /// Step 2: follow-up requests for hits. Officers request, list, show and
    /// withdraw; reviewers list --incoming, show, approve, refuse and hold.
    Followup(Sub<followup::FollowUpCommand, NodeFlags>),
    /// Operator: import, sync, erase and count the national records.
    Records(Sub<records::RecordsCommand, NodeFlags>),
    /// Operator: reload the node's certificates after renewing them.
    Certs(Sub<certs::CertsCommand, NodeFlags>),
    /// Operator: rotate this node's own match key (no other node takes part).
    Keys(Sub<keys::KeysCommand, NodeFlags>),
    /// Match two record files offline with the node's own code and a throwaway key.
    ///
    /// Runs the same normalisation, match keys and lookup as a node, and writes one CSV
    /// row per returned pair (query_id,record_id,quality). It keys the texts with a fast
    /// PRF (HMAC-SHA256 under a random key) in place of the nodes' OPRF: which keys of
    /// two identities coincide does not depend on the PRF, and the OPRF would cost about
    /// a hundred times more. With --truth it
    /// prints recall and precision for exact hits, exact and strong hits, and all hits.
    /// Needs no node and no profile.
    MatchTest(With<matchtest::MatchTestArgs, JsonFlag>),
    /// Measure matching on this machine: OPRF evaluation, import, index build, restart,
    /// Evaluate and Match over mTLS, search latency and memory, each next to its limit.
    ///
    /// Each figure is printed next to the physical limit it is bound by, measured in the
    /// same run: one-core rates of a bare ristretto255 scalar multiplication and of a full
    /// RFC 9497 evaluation, and an empty mTLS call. Starts a three-country network on
    /// loopback with a synthetic national file in DE (DE as its own adep-node process when
    /// that binary is next to this one). Build with --release for meaningful figures:
    /// `cargo run --release --bin adep -- bench`. Needs no profile.
    Bench(With<bench::BenchArgs, JsonFlag>),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Write a complete development PKI for a set of countries.
    ///
    /// Writes DIR/network-ca.pem (with its key, clearly named, and an empty revocation
    /// list) and per country its national CA (likewise), its own key seed
    /// DIR/CC/key-seed, data key, audit key, DIR/CC/node.toml (a ready node
    /// configuration, every other country as a peer: with --layout loopback, ports from
    /// the base port and data under DIR/CC/data; with --layout containers, fixed ports on
    /// every address, peers by host name and data in /var/lib/adep) and
    /// DIR/CC/<role>.toml, a CLI profile for each of officer, reviewer, operator and
    /// auditor. Start a node with `adep-node --config DIR/CC/node.toml`. Refuses a
    /// directory that already holds a PKI.
    Init(PkiInitArgs),
    /// Revoke a certificate: add it to its CA's revocation list.
    ///
    /// Writes the list (PEM) anew at --crl, signed by the CA and numbered after the list
    /// it replaces, or creates it. A node refuses the certificate once its
    /// configuration names the list in `tls.crls` (`adep pki init` names its CAs'
    /// lists) and it has re-read it (`adep certs reload`, SIGHUP or a restart). For a user, pass DIR/CC/national-ca.pem; for a
    /// node, DIR/network-ca.pem. Development PKI only: a production CA revokes with its
    /// own tooling and publishes the list the same way.
    Revoke(PkiRevokeArgs),
}

#[derive(Debug, Args)]
struct PkiRevokeArgs {
    /// The certificate to revoke (PEM).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The CA certificate that issued it (PEM).
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The CA's private key (PEM). Default: the CA file with `.pem` replaced by
    /// `.key.pem`, as `adep pki init` names it.
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// The revocation list to update or create. Default: the CA file with `.pem`
    /// replaced by `.crl.pem`.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PkiInitArgs {
    /// Comma-separated ISO 3166-1 alpha-2 codes, like FR,DE,ES.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_country)]
    countries: Vec<Country>,
    /// Output directory (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// First port: country i listens on base+10i (federation), base+10i+1 (national)
    /// and base+10i+2 (metrics). Loopback layout only.
    #[arg(long, default_value_t = 7100, value_name = "N")]
    base_port: u16,
    /// `loopback`: every node on this machine (for `adep-node --config` and `adep
    /// network up`). `containers`: one container per country on a shared network, as
    /// deploy/compose.yaml runs them (listen on all addresses, peers as `adep-cc`,
    /// data in /var/lib/adep, national port of country i published as 7101+10i).
    #[arg(long, value_enum, default_value = "loopback")]
    layout: Layout,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Layout {
    Loopback,
    Containers,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Do not call the peers; report the node only.
    #[arg(long)]
    no_peers: bool,
}

fn parse_country(s: &str) -> Result<Country, String> {
    s.trim().parse()
}

/// mimalloc: the node and the CLI (which runs `adep bench` and `adep match-test` in
/// process) allocate many small strings while keying records, and build the index in
/// large temporary runs that the system allocator would keep resident afterwards.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Under --json an argument error is JSON too; help and version print as usual.
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            // The error's first paragraph, on one line: the message and what it
            // names (the missing flags), without the usage and the hint.
            let text = e.render().to_string();
            let message = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.trim_start_matches("error: ");
            json_error("usage", message);
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    adep_node::install_crypto_provider();
    adep_node::on_closed_output(|| std::process::exit(0));
    // Wherever --json stands, errors follow it.
    let json = std::env::args_os().any(|a| a == "--json");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let message = causes(&e);
            if json {
                json_error("error", &message);
            } else {
                eprintln!("adep: {message}");
            }
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: a message that already
/// holds its cause's text (`cannot read the profile: No such file ...`) is not
/// followed by that cause again.
fn causes(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// The one shape of an error under --json, on stdout: `{"error": {"kind", "message"}}`,
/// `kind` being `usage` (the arguments) or `error` (anything after), exit status 2.
fn json_error(kind: &str, message: &str) {
    println!(
        "{}",
        serde_json::json!({ "error": { "kind": kind, "message": message } })
    );
}

fn run(cli: Cli) -> Result<ExitCode> {
    // A flag after the command, or before it as earlier versions took it.
    let json = |f: &JsonFlag| f.json || cli.json;
    let profile = |f: &NodeFlags| f.profile.clone().or_else(|| cli.profile.clone());
    let node = |f: &NodeFlags| -> Result<(Profile, PathBuf, bool)> {
        let path = profile(f);
        Ok((
            load_profile(path.as_deref())?,
            path.unwrap_or_default(),
            json(&f.json),
        ))
    };
    match cli.command {
        Command::Pki(Sub { cmd, flags }) => match cmd {
            PkiCommand::Init(args) => pki_init(&args, json(&flags)),
            PkiCommand::Revoke(args) => pki_revoke(&args, json(&flags)),
        },
        Command::Network(Sub { cmd, flags }) => network::run(cmd, json(&flags)),
        Command::MatchTest(With { args, flags }) => matchtest::run(&args, json(&flags)),
        Command::Bench(With { args, flags }) => bench::run(&args, json(&flags)),
        Command::Demo(args) => demo::run(&args),
        Command::OffenceCategories(flags) => {
            offence_categories(json(&flags));
            Ok(ExitCode::SUCCESS)
        }
        Command::Search(With { args, flags }) => {
            let (profile, path, json) = node(&flags)?;
            runtime()?.block_on(search::run(&args, &profile, &path, json))
        }
        Command::Audit(Sub { cmd, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(audit::run(cmd, &profile, json))
        }
        Command::Followup(Sub { cmd, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(followup::run(cmd, &profile, json))
        }
        Command::Records(Sub { cmd, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(records::run(cmd, &profile, json))
        }
        Command::Certs(Sub { cmd, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(certs::run(cmd, &profile, json))
        }
        Command::Keys(Sub { cmd, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(keys::run(cmd, &profile, json))
        }
        Command::Status(With { args, flags }) => {
            let (profile, _, json) = node(&flags)?;
            runtime()?.block_on(status(&profile, &args, json))
        }
    }
}

/// Prints the shipped ECRIS table with its source.
fn offence_categories(json: bool) {
    use adep_node::domain::reason::{offence_table, offence_table_source};
    if json {
        let table: Vec<_> = offence_table()
            .map(|(code, title)| serde_json::json!({ "code": code, "title": title }))
            .collect();
        let source: Vec<_> = offence_table_source().collect();
        println!(
            "{}",
            serde_json::json!({ "source": source.join("\n"), "categories": table })
        );
        return;
    }
    for line in offence_table_source() {
        println!("# {line}");
    }
    for (code, title) in offence_table() {
        println!("{code}  {title}");
    }
}

/// Logs of nodes run inside this process (network up, demo, bench) go to stderr at
/// `default` level unless RUST_LOG says otherwise.
pub(crate) fn in_process_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org).
pub(crate) fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_profile(path: Option<&Path>) -> Result<Profile> {
    let Some(path) = path else {
        bail!(
            "no profile: pass --profile FILE or set ADEP_PROFILE (profiles are written by `adep pki init`)"
        );
    };
    Ok(Profile::load(path)?)
}

fn pki_init(args: &PkiInitArgs, json: bool) -> Result<ExitCode> {
    let plans = match args.layout {
        Layout::Loopback => pki::NodePlan::loopback(&args.countries, args.base_port)?,
        Layout::Containers => pki::NodePlan::containers(&args.countries)?,
    };
    let summary = pki::init(&args.out, &plans)?;
    output::pki_summary(&args.out, &summary, json);
    Ok(ExitCode::SUCCESS)
}

fn pki_revoke(args: &PkiRevokeArgs, json: bool) -> Result<ExitCode> {
    let beside = |suffix: &str| -> Result<PathBuf> {
        let name = args
            .ca
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--ca {} does not end in .pem; pass --ca-key and --crl",
                    args.ca.display()
                )
            })?;
        Ok(args.ca.with_file_name(format!("{name}{suffix}")))
    };
    let ca_key = match &args.ca_key {
        Some(k) => k.clone(),
        None => beside(".key.pem")?,
    };
    let crl = match &args.crl {
        Some(c) => c.clone(),
        None => beside(".crl.pem")?,
    };
    let done = pki::revoke(&args.ca, &ca_key, &args.cert, &crl)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "crl": crl,
                "serial": done.serial,
                "already_revoked": done.already,
                "revoked": done.revoked,
                "number": done.number,
            })
        );
    } else {
        let what = if done.already {
            "was already revoked"
        } else {
            "revoked"
        };
        println!(
            "certificate {} {what}; {} lists {} (list number {})",
            done.serial,
            crl.display(),
            output::count(done.revoked as u64, "certificate", "certificates"),
            done.number
        );
        println!(
            "nodes whose tls.crls names this list (as `adep pki init` writes them) refuse it once they re-read it: adep certs reload"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(profile: &Profile, args: &StatusArgs, json: bool) -> Result<ExitCode> {
    let mut client = profile.national_client()?;
    let resp = client
        .status(adep_proto::v1::StatusRequest {
            check_peers: !args.no_peers,
        })
        .await
        .map_err(|s| output::call_error(&profile.node, s))?
        .into_inner();
    output::status(&resp, json);
    // Like `search`: 0 every peer answers (or none was asked), 1 one does not, 2 an
    // error (above).
    let all_ok = args.no_peers
        || resp
            .peers
            .iter()
            .all(|p| p.state == adep_proto::v1::PeerState::Ok as i32);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
