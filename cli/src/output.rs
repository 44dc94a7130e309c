//! What the CLI prints: text for people, `--json` for scripts.

use std::path::Path;

use adep_node::tooling::pki::PkiSummary;
use adep_proto::v1::{PeerState, Role, StatusResponse};
use serde_json::json;

/// Turns a failed call into an error that says what the node said, in words.
pub fn call_error(node: &str, status: tonic::Status) -> anyhow::Error {
    let what = match status.code() {
        tonic::Code::Unauthenticated => "the node did not accept your certificate",
        tonic::Code::PermissionDenied => "the node refused the call",
        tonic::Code::Unavailable => "the node is not reachable",
        tonic::Code::InvalidArgument => "the node refused the request",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "not possible now",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::ResourceExhausted => "rate limit reached",
        tonic::Code::DeadlineExceeded => "the node did not answer in time",
        _ => "the call failed",
    };
    let mut detail = status.message().to_owned();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&status);
    while let Some(e) = src {
        detail = e.to_string();
        src = e.source();
    }
    anyhow::anyhow!("{what} ({node}): {detail}")
}

pub fn pki_summary(out: &Path, summary: &PkiSummary, json: bool) {
    if json {
        let nodes: Vec<_> = summary
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "country": n.country.as_str(),
                    "config": n.config,
                    "profiles": n.profiles.iter().map(|(r, p)| (r.as_str().to_owned(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        println!("{}", json!({ "dir": out, "nodes": nodes }));
        return;
    }
    println!("development PKI written to {}", out.display());
    for n in &summary.nodes {
        println!("  {}: adep-node --config {}", n.country, n.config.display());
        for (role, p) in &n.profiles {
            println!("      {role:<9} adep --profile {} status", p.display());
        }
    }
    println!(
        "the network CA key and national CA keys are in the same directory: never deploy them"
    );
}

pub fn peer_state(s: i32) -> &'static str {
    match PeerState::try_from(s).unwrap_or(PeerState::Unspecified) {
        PeerState::Ok => "ok",
        PeerState::Unavailable => "unavailable",
        PeerState::TimedOut => "timed_out",
        PeerState::Refused => "refused",
        PeerState::Unchecked => "unchecked",
        PeerState::Unspecified => "unknown",
    }
}

fn role(r: i32) -> &'static str {
    match Role::try_from(r).unwrap_or(Role::Unspecified) {
        Role::Officer => "officer",
        Role::Reviewer => "reviewer",
        Role::Operator => "operator",
        Role::Auditor => "auditor",
        Role::Unspecified => "unknown",
    }
}

pub fn status(resp: &StatusResponse, json: bool) {
    let caller = resp.caller.clone().unwrap_or_default();
    let store = resp.store.clone().unwrap_or_default();
    if json {
        let peers: Vec<_> = resp
            .peers
            .iter()
            .map(|p| {
                json!({
                    "country": p.country,
                    "endpoint": p.endpoint,
                    "status": peer_state(p.state),
                    "detail": p.detail,
                    "latency_ms": p.latency_ms,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "country": resp.country,
                "node_version": resp.node_version,
                "caller": { "user_id": caller.user_id, "role": role(caller.role) },
                "store": {
                    "engine": store.engine,
                    "schema_version": store.schema_version,
                    "created_at": store.created_at,
                    "starts": store.starts,
                },
                "peers": peers,
            })
        );
        return;
    }
    println!(
        "node      {} (adep-node {})",
        resp.country, resp.node_version
    );
    println!("you       {} ({})", caller.user_id, role(caller.role));
    println!(
        "store     {} schema v{}, {} start(s)",
        store.engine, store.schema_version, store.starts
    );
    if resp.peers.is_empty() {
        println!("peers     none configured");
    }
    for p in &resp.peers {
        let detail = if p.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", p.detail)
        };
        println!(
            "peer      {} {:<11} {:>4} ms  {}{}",
            p.country,
            peer_state(p.state),
            p.latency_ms,
            p.endpoint,
            detail
        );
    }
}

/// A time in seconds since the epoch as RFC 3339 UTC text.
pub fn utc(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}
