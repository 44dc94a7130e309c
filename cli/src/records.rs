//! `adep records`: the operator's commands on the national index.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use adep_node::{
    domain::identity::{self, Format, OnBadRow, RecordFile},
    tooling::profile::Profile,
    tooling::requests::{self, IMPORT_BATCH},
};
use adep_proto::v1::{
    CountRecordsRequest, DeleteRecordsRequest, ImportMode, ImportRequest, ImportSummary,
};
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use crate::output;

/// `adep records ...`
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Add and update records from a file (CSV with a header, or .jsonl JSON Lines).
    ///
    /// The file is checked completely first: any bad row is reported with its line and
    /// field and nothing is imported, unless --skip-invalid. Re-importing a file changes
    /// nothing. Stored records absent from the file are kept (see `sync`).
    Import(FileArgs),
    /// Make the index equal to a file: import it and erase stored records it lacks.
    ///
    /// Use it with the daily full national export. Erased records' hit references stop
    /// resolving. A file without a record is refused unless --allow-empty, since it
    /// would erase the whole index.
    Sync(SyncArgs),
    /// Erase records by id. Exit 0 when every id was erased, 1 when some were not
    /// stored (the others are erased).
    Delete(DeleteArgs),
    /// How many records and match keys the node holds, and its key epoch.
    Count,
}

/// A record file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The record file. `.jsonl` / `.ndjson` are JSON Lines; anything else is CSV.
    file: PathBuf,
    /// Leave out bad rows (each is reported on stderr) instead of importing nothing.
    #[arg(long)]
    skip_invalid: bool,
}

/// A full national export.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Accept a file without a record (or whose every row was left out as bad), which
    /// erases every stored record.
    #[arg(long)]
    allow_empty: bool,
}

/// Record ids.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Ids of the records to erase.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

fn read(path: &Path, skip_invalid: bool) -> Result<RecordFile> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let on_bad_row = if skip_invalid {
        OnBadRow::Skip
    } else {
        OnBadRow::Fail
    };
    let records =
        identity::read_records(file, Format::from_path(path), on_bad_row).map_err(|e| {
            if let identity::FileError::BadRows { errors, total } = &e {
                for error in errors {
                    eprintln!("adep: {}: {error}", path.display());
                }
                if *total > errors.len() {
                    eprintln!(
                        "adep: {}: ... and {} more",
                        path.display(),
                        total - errors.len()
                    );
                }
            }
            let hint = if matches!(e, identity::FileError::BadRows { .. }) {
                " (--skip-invalid leaves bad rows out)"
            } else {
                ""
            };
            anyhow::anyhow!("{}: {e}; nothing was imported{hint}", path.display())
        })?;
    for error in &records.skipped {
        eprintln!("adep: {}: skipped {error}", path.display());
    }
    if records.skipped_total > records.skipped.len() {
        eprintln!(
            "adep: {}: ... and {} more skipped",
            path.display(),
            records.skipped_total - records.skipped.len()
        );
    }
    Ok(records)
}

/// Runs a records command.
pub async fn run(cmd: RecordsCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    match cmd {
        RecordsCommand::Import(args) => import(profile, &args, Sync::No, json).await,
        RecordsCommand::Sync(args) => {
            let mode = if args.allow_empty {
                Sync::EmptyAllowed
            } else {
                Sync::NonEmpty
            };
            import(profile, &args.file, mode, json).await
        }
        RecordsCommand::Delete(args) => delete(profile, &args, json).await,
        RecordsCommand::Count => count(profile, json).await,
    }
}

/// Whether an import makes the index equal to its file, and whether it may empty it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    No,
    NonEmpty,
    EmptyAllowed,
}

async fn import(profile: &Profile, args: &FileArgs, sync: Sync, json: bool) -> Result<ExitCode> {
    let mode = if sync == Sync::No {
        ImportMode::Import
    } else {
        ImportMode::Sync
    };
    let file = read(&args.file, args.skip_invalid)?;
    if sync == Sync::NonEmpty && file.records.is_empty() {
        let why = if file.skipped_total > 0 {
            "every row of it was left out as bad"
        } else {
            "it holds no record"
        };
        bail!(
            "{}: {why}, so a sync would erase every stored record; nothing was changed (--allow-empty does erase them)",
            args.file.display()
        );
    }
    let total = file.records.len();
    let skipped = file.skipped_total;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut first = true;
        let mut sent = 0usize;
        let mut last = Instant::now();
        let mut records = file.records.into_iter().peekable();
        while first || records.peek().is_some() {
            let batch: Vec<_> = records
                .by_ref()
                .take(IMPORT_BATCH)
                .map(|r| requests::record(&r))
                .collect();
            sent += batch.len();
            let message = ImportRequest {
                mode: if first { mode as i32 } else { 0 },
                records: batch,
            };
            first = false;
            if tx.send(message).await.is_err() {
                return;
            }
            if !json && last.elapsed() > Duration::from_secs(1) {
                eprintln!("adep: sent {sent} of {total} records");
                last = Instant::now();
            }
        }
    });
    let mut client = profile.national_client()?;
    let mut progress = client
        .import_records(ReceiverStream::new(rx))
        .await
        .map_err(|s| output::call_error(&profile.node, s))?
        .into_inner();
    let mut summary: Option<ImportSummary> = None;
    let mut last = Instant::now();
    while let Some(message) = progress.next().await {
        let message = message.map_err(|s| output::call_error(&profile.node, s))?;
        if let Some(s) = message.summary {
            summary = Some(s);
        } else if !json && last.elapsed() > Duration::from_secs(1) && message.total > 0 {
            eprintln!(
                "adep: {} {} of {}",
                message.stage, message.done, message.total
            );
            last = Instant::now();
        }
    }
    let Some(s) = summary else {
        bail!(
            "the node ended the import without a summary; run `adep records count` to see what is stored"
        );
    };
    let verb = if mode == ImportMode::Sync {
        "synced"
    } else {
        "imported"
    };
    if json {
        println!(
            "{}",
            json!({
                "file": args.file,
                "mode": if mode == ImportMode::Sync { "sync" } else { "import" },
                "received": s.received,
                "skipped": skipped,
                "added": s.added,
                "updated": s.updated,
                "unchanged": s.unchanged,
                "erased": s.erased,
                "records": s.records,
            })
        );
    } else {
        println!(
            "{verb} {}: {} records sent ({skipped} bad rows skipped): {} added, {} updated, {} unchanged, {} erased; the node holds {} records",
            args.file.display(),
            s.received,
            s.added,
            s.updated,
            s.unchanged,
            s.erased,
            s.records
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(profile: &Profile, args: &DeleteArgs, json: bool) -> Result<ExitCode> {
    let mut client = profile.national_client()?;
    let resp = client
        .delete_records(DeleteRecordsRequest {
            record_ids: args.ids.clone(),
        })
        .await
        .map_err(|s| output::call_error(&profile.node, s))?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({ "erased": resp.erased, "unknown": resp.unknown })
        );
    } else {
        println!(
            "erased {}",
            output::count(resp.erased.len() as u64, "record", "records")
        );
        for id in &resp.unknown {
            println!("not stored: {id}");
        }
    }
    // Like rm: an id that was not there is a failure a script should see.
    Ok(if resp.unknown.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn count(profile: &Profile, json: bool) -> Result<ExitCode> {
    let mut client = profile.national_client()?;
    let resp = client
        .count_records(CountRecordsRequest {})
        .await
        .map_err(|s| output::call_error(&profile.node, s))?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({ "records": resp.records, "keys": resp.keys, "key_epoch": resp.key_epoch })
        );
    } else {
        println!(
            "{} records, {} match keys, key epoch {}",
            resp.records, resp.keys, resp.key_epoch
        );
    }
    Ok(ExitCode::SUCCESS)
}
