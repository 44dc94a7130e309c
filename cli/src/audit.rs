//! `adep audit`: the auditor's view of a node's audit log.

use std::process::ExitCode;

use adep_node::tooling::profile::Profile;
use adep_proto::v1 as pb;
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use tokio_stream::StreamExt as _;

use crate::output;

/// `adep audit` commands (auditor role).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log: every entry in place, chained to the one before and
    /// signed with the node's audit key. Exit 0 when it holds, 1 naming the first bad
    /// entry.
    Verify,
    /// Write the entries of a period as JSON Lines, oldest first.
    Export(ExportArgs),
}

/// `adep audit export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// From this date or time (YYYY-MM-DD, UTC midnight, or RFC 3339), inclusive.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Until this date or time (YYYY-MM-DD, UTC midnight, or RFC 3339), exclusive.
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
}

fn parse_time(s: &str) -> Result<i64, String> {
    use time::{
        Date, OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description,
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| "expected YYYY-MM-DD or an RFC 3339 time like 2026-11-22T10:00:00Z".into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON form of an audit entry.
pub fn entry_json(e: &pb::AuditEntry) -> serde_json::Value {
    let fields: serde_json::Value =
        serde_json::from_str(&e.fields_json).unwrap_or(json!(e.fields_json));
    json!({
        "seq": e.seq,
        "time": e.time,
        "kind": e.kind,
        "fields": fields,
        "hash": hex(&e.hash),
        "prev_hash": hex(&e.prev_hash),
        "signature": hex(&e.signature),
    })
}

/// Every entry of a node's audit log in a period.
pub async fn entries(profile: &Profile, since: i64, until: i64) -> Result<Vec<pb::AuditEntry>> {
    let mut stream = profile
        .national_client()?
        .export_audit(pb::AuditExportRequest { since, until })
        .await
        .map_err(|s| output::call_error(&profile.node, s))?
        .into_inner();
    let mut all = Vec::new();
    while let Some(e) = stream.next().await {
        all.push(e.map_err(|s| output::call_error(&profile.node, s))?);
    }
    Ok(all)
}

/// Runs an audit command.
pub async fn run(cmd: AuditCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify => {
            let v = profile
                .national_client()?
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(|s| output::call_error(&profile.node, s))?
                .into_inner();
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": v.ok, "entries": v.entries, "first": v.first, "last": v.last,
                        "bad_entry": (!v.ok).then_some(v.bad_entry),
                        "problem": v.problem, "public_key": hex(&v.public_key),
                    })
                );
            } else if v.ok {
                println!(
                    "audit log verified: {} entries ({} to {}), chained and signed by key {}",
                    v.entries,
                    v.first,
                    v.last,
                    hex(&v.public_key)
                );
            } else {
                println!("audit log BROKEN at entry {}: {}", v.bad_entry, v.problem);
            }
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Export(args) => {
            let since = args.since.unwrap_or(0);
            let until = args.until.unwrap_or(0);
            if until != 0 && since >= until {
                bail!("--since must be before --until");
            }
            let all = entries(profile, since, until)
                .await
                .context("cannot export the audit log")?;
            for e in &all {
                println!("{}", entry_json(e));
            }
            if !json {
                eprintln!("adep: {} audit entries", all.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
