//! `adep-node`: loads the configuration, starts logging, serves both listeners, and
//! drains on SIGINT or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use adep_node::{
    config::{Config, LogFormat},
    grpc::server,
};
use clap::Parser;

/// Runs an adep node: the federation listener for peer nodes and the national listener
/// for this state's officers, reviewers, operators and auditors, both over mutual TLS.
///
/// With `--config FILE` the node serves in the foreground until SIGINT or SIGTERM, then
/// stops accepting, lets in-flight calls finish and exits 0. It refuses to start,
/// exiting 2, on an invalid configuration, with a message that names the file and the
/// field. `adep-node check-config FILE` checks a configuration and every file it names
/// without starting anything.
#[derive(Debug, Parser)]
#[command(name = "adep-node", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// The node's TOML configuration file (for a test network, from `adep pki init`).
    #[arg(long, short, env = "ADEP_NODE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Checks a configuration and every file it names, without starting the node.
    ///
    /// Checks the TOML itself, certificates readable, matching their keys, chaining to
    /// their CAs and not about to expire,
    /// the node certificate carrying the node's identity, the key seed, data
    /// key and audit key well formed, the data directory writable, listeners distinct
    /// and free. With a node running on this configuration, checks its files (before
    /// `adep certs reload`, say): its listeners and data directory count as in use by
    /// it. Prints one line per check; exits 0 when all hold (warnings allowed), 1 when
    /// one fails. Does not start the node or open its store.
    CheckConfig {
        /// The configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// One JSON object: `ok` and the list of `checks` (`field`, `verdict`,
        /// `detail`).
        #[arg(long)]
        json: bool,
    },
    /// Asks a running node whether it serves (the Compose, Docker and Kubernetes probes).
    ///
    /// Calls the gRPC health service on one of its listeners over TLS, without a client
    /// certificate. Exits 0 when the node answers SERVING, 1 otherwise, saying why.
    Probe {
        /// The node's configuration file: the listener's address and CA come from it.
        #[arg(long, short, env = "ADEP_NODE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Which listener to ask.
        #[arg(long, value_enum, default_value = "national")]
        listener: ProbeListener,
        /// The name to verify the listener's certificate for; the development PKI
        /// puts `localhost` in every node certificate.
        #[arg(long, default_value = "localhost", value_name = "NAME")]
        server_name: String,
        /// How long to wait for the answer, such as `3s`.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ProbeListener {
    National,
    Federation,
}

fn probe(
    config: &std::path::Path,
    listener: ProbeListener,
    server_name: String,
    timeout: std::time::Duration,
) -> ExitCode {
    use adep_node::grpc::tls;
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    adep_node::install_crypto_provider();
    let answer = (|| -> Result<(), String> {
        let config = Config::load(config).map_err(|e| e.to_string())?;
        let (listen, ca) = match listener {
            ProbeListener::National => (config.national.listen, &config.tls.national_ca),
            ProbeListener::Federation => (config.federation.listen, &config.tls.network_ca),
        };
        // A listener on every address is probed on loopback.
        let host = if listen.ip().is_unspecified() {
            if listen.is_ipv4() { "127.0.0.1" } else { "::1" }.to_owned()
        } else {
            listen.ip().to_string()
        };
        let client = tls::client_config(tls::root_store(ca).map_err(|e| e.to_string())?, None)
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let channel = tls::channel(
                tls::Target {
                    host,
                    port: listen.port(),
                    server_name: Some(server_name),
                    identity: Some(adep_node::domain::principals::CertIdentity::Node(
                        config.country,
                    )),
                },
                client,
                timeout,
            )?;
            let status = tokio::time::timeout(
                timeout,
                HealthClient::new(channel).check(HealthCheckRequest::default()),
            )
            .await
            .map_err(|_| format!("no answer from {listen} within {timeout:?}"))?
            .map_err(|s| format!("{listen}: {}", s.message()))?
            .into_inner()
            .status;
            if status == ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!(
                    "{listen} answers but does not serve (status {status})"
                ))
            }
        })
    })();
    match answer {
        Ok(()) => {
            println!("serving");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("not serving: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(file: &std::path::Path, json: bool) -> ExitCode {
    use adep_node::check::{self, Verdict};
    let checks = check::check_config(file);
    let ok = checks.iter().all(|c| c.verdict != Verdict::Failed);
    if json {
        println!("{}", serde_json::json!({ "ok": ok, "checks": checks }));
    } else {
        for c in &checks {
            let mark = match c.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warning => "WARN",
                Verdict::Failed => "FAIL",
            };
            println!("{mark}  {:<22} {}", c.field, c.detail);
        }
        let failed = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Failed)
            .count();
        let running = checks.iter().any(|c| c.field == check::RUNNING);
        if ok && running {
            println!(
                "{} checks hold: the files of the node running with {} are valid (`adep certs reload` applies new certificates and the lists tls.crls names; a change to the configuration itself needs a restart)",
                checks.len(),
                file.display()
            );
        } else if ok {
            println!(
                "{} checks hold: {} can start a node",
                checks.len(),
                file.display()
            );
        } else {
            println!("{failed} of {} checks failed", checks.len());
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// mimalloc: the node and the CLI (which runs `adep bench` and `adep match-test` in
/// process) allocate many small strings while keying records, and build the index in
/// large temporary runs that the system allocator would keep resident afterwards.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_some() {
        adep_node::on_closed_output(|| std::process::exit(0));
    }
    let path = match (args.command, args.config) {
        (Some(Command::CheckConfig { file, json }), _) => return check_config(&file, json),
        (
            Some(Command::Probe {
                config,
                listener,
                server_name,
                timeout,
            }),
            _,
        ) => return probe(&config, listener, server_name, timeout),
        (None, Some(path)) => path,
        (None, None) => {
            eprintln!(
                "adep-node: --config FILE is required to run a node (or set ADEP_NODE_CONFIG); see --help"
            );
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("adep-node: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log.format, &config.log.level);
    adep_node::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("adep-node: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let listeners = server::Listeners::bind(&config).await?;
        let prepared = server::prepare(config)?;
        #[cfg(unix)]
        let reloads = tokio::spawn(reload_on_sighup(prepared.state()));
        let served = server::serve(prepared, listeners, shutdown_signal()).await;
        #[cfg(unix)]
        reloads.abort();
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, in the log's own format (the log is set up by now); on stderr
            // as plain text if the configured log level hides errors.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %e, "node stopped on an error");
            } else {
                eprintln!("adep-node: node stopped on an error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour in the log only on a terminal, and never with `NO_COLOR` set
/// (no-color.org): a file, journald or a SIEM gets plain text.
fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Reloads the node's certificates on each SIGHUP, as `adep certs reload` does.
#[cfg(unix)]
async fn reload_on_sighup(state: std::sync::Arc<adep_node::app::NodeState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload certificates with `adep certs reload`");
        return;
    };
    while hangups.recv().await.is_some() {
        if let Err(e) = adep_node::app::certificates::reload(&state, None).await {
            tracing::error!(error = %e, "certificate reload on SIGHUP refused; nothing changed");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
