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
    /// Check the audit log: it starts where the last pruning left it, every entry in
    /// place, chained to the one before and signed with the node's audit key; and with
    /// --witness, that it still holds every checkpoint of this node kept elsewhere, so
    /// that removing the newest entries is caught. Exit 0 when it holds, 1 naming the
    /// first bad entry or the cut, or when no witness given is this node's.
    Verify(VerifyArgs),
    /// Write the entries of a period as JSON Lines, oldest first.
    Export(ExportArgs),
}

/// `adep audit verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A file of witnesses, JSON Lines: an earlier `adep audit export` of this node
    /// (its last line is the node's signed head), or a peer's export (the
    /// `peer_audit_head` this node sent it with each Match, filing and decision).
    /// Checkpoints of other nodes are counted and left out. Repeatable.
    #[arg(long, value_name = "FILE")]
    witness: Vec<std::path::PathBuf>,
}

/// The checkpoints in a witness file: `{"checkpoint": {...}}` lines, and
/// `fields.peer_audit_head` of exported entries.
fn witnesses(path: &std::path::Path) -> Result<Vec<pb::AuditCheckpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the witness file {}", path.display()))?;
    let unhex = |v: &serde_json::Value, line: usize, what: &str| -> Result<Vec<u8>> {
        let s = v.as_str().unwrap_or_default();
        if !s.len().is_multiple_of(2) {
            bail!(
                "{}: line {line}: `{what}` is not hexadecimal",
                path.display()
            );
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| {
                    anyhow::anyhow!(
                        "{}: line {line}: `{what}` is not hexadecimal",
                        path.display()
                    )
                })
            })
            .collect()
    };
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {line_no} is not JSON", path.display()))?;
        for c in [&value["checkpoint"], &value["fields"]["peer_audit_head"]] {
            if c.is_object() {
                found.push(pb::AuditCheckpoint {
                    seq: c["seq"].as_u64().unwrap_or(0),
                    hash: unhex(&c["hash"], line_no, "hash")?,
                    time: c["time"].as_i64().unwrap_or(0),
                    signature: unhex(&c["signature"], line_no, "signature")?,
                });
            }
        }
    }
    Ok(found)
}

/// The JSON form of a checkpoint.
pub fn checkpoint_json(c: &pb::AuditCheckpoint) -> serde_json::Value {
    json!({
        "seq": c.seq,
        "hash": hex(&c.hash),
        "time": c.time,
        "signature": hex(&c.signature),
    })
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
        AuditCommand::Verify(args) => {
            let mut given = Vec::new();
            for path in &args.witness {
                let found = witnesses(path)?;
                if found.is_empty() {
                    bail!(
                        "{}: holds no checkpoint (an `adep audit export` of this node, or a peer's, ends with one)",
                        path.display()
                    );
                }
                given.extend(found);
            }
            let mut v = profile
                .national_client()?
                .verify_audit(pb::VerifyAuditRequest { witnesses: given })
                .await
                .map_err(|s| output::call_error(&profile.node, s))?
                .into_inner();
            // Witnesses given, none of them this node's: nothing was checked against them,
            // which must not read as a log that holds them.
            let unwitnessed = v.ok && !args.witness.is_empty() && v.witnesses == 0;
            if unwitnessed {
                v.ok = false;
                v.problem = format!(
                    "none of the {} checkpoints in the witness files is signed by this node's audit key (another node's, or altered): the log was not checked against them",
                    v.foreign_witnesses
                );
            }
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": v.ok, "entries": v.entries, "first": v.first, "last": v.last,
                        "bad_entry": (!v.ok && !unwitnessed).then_some(v.bad_entry),
                        "problem": v.problem, "public_key": hex(&v.public_key),
                        "witnesses": v.witnesses, "foreign_witnesses": v.foreign_witnesses,
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
                if !args.witness.is_empty() {
                    let held = if v.witnesses == 1 {
                        "the one checkpoint".to_owned()
                    } else {
                        format!("every one of the {} checkpoints", v.witnesses)
                    };
                    println!(
                        "it holds {held} of this node in the witness files ({} of other nodes left out)",
                        v.foreign_witnesses
                    );
                }
            } else if unwitnessed {
                println!(
                    "audit log NOT CHECKED against the witnesses: {}; it is chained and signed in itself ({} entries)",
                    v.problem, v.entries
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
            let mut entries = 0;
            for e in &all {
                match &e.checkpoint {
                    Some(c) => println!("{}", json!({ "checkpoint": checkpoint_json(c) })),
                    None => {
                        entries += 1;
                        println!("{}", entry_json(e));
                    }
                }
            }
            if !json {
                eprintln!(
                    "adep: {entries} audit entries; the last line is the node's signed head (keep the file: `adep audit verify --witness` checks the log still holds it)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
