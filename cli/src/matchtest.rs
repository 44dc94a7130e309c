//! `adep match-test`: offline matching of two record files with the node's own code.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context as _, Result};
use clap::Args;

use adep_node::{
    domain::identity::{self, Format, OnBadRow, RecordFile},
    tooling::matchtest::{self, Truth},
};

/// Arguments of `adep match-test`.
#[derive(Debug, Args)]
pub struct MatchTestArgs {
    /// The records a node would hold (CSV or JSON Lines, interchange format).
    #[arg(long, value_name = "FILE")]
    records: PathBuf,
    /// The search subjects (same format; record_id is the query id).
    #[arg(long, value_name = "FILE")]
    queries: PathBuf,
    /// Where to write the pairs: CSV `query_id,record_id,quality`, one row per hit.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Expected pairs, CSV `query_id,record_id` (empty record_id: the query must get no
    /// hit). Prints recall and precision per quality level, cumulatively.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Leave out bad rows of either file (they are reported) instead of failing.
    #[arg(long)]
    skip_invalid: bool,
}

fn read(path: &Path, on_bad_row: OnBadRow) -> Result<RecordFile> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let records = identity::read_records(file, Format::from_path(path), on_bad_row)
        .with_context(|| format!("{}", path.display()))?;
    for error in &records.skipped {
        eprintln!("adep: {}: skipped {error}", path.display());
    }
    Ok(records)
}

/// Runs the command.
pub fn run(args: &MatchTestArgs, json: bool) -> Result<ExitCode> {
    let on_bad_row = if args.skip_invalid {
        OnBadRow::Skip
    } else {
        OnBadRow::Fail
    };
    let truth = match &args.truth {
        Some(path) => Some(
            Truth::read(
                File::open(path).with_context(|| format!("{}: cannot open", path.display()))?,
            )
            .with_context(|| format!("{}", path.display()))?,
        ),
        None => None,
    };
    let records = read(&args.records, on_bad_row)?;
    let queries = read(&args.queries, on_bad_row)?;
    let started = Instant::now();
    let run = matchtest::match_records(&records.records, &queries.records);
    let pairs = run.pairs;
    let keys_per_record = run.index_keys as f64 / records.records.len().max(1) as f64;
    let elapsed = started.elapsed();

    let out = File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut out = BufWriter::new(out);
    writeln!(out, "query_id,record_id,quality")?;
    for pair in &pairs {
        writeln!(out, "{},{},{}", pair.query, pair.record, pair.quality)?;
    }
    out.flush()
        .with_context(|| format!("{}: cannot write", args.out.display()))?;

    let levels = truth.as_ref().map(|t| matchtest::evaluate(&pairs, t));
    if json {
        let levels: Vec<_> = levels
            .iter()
            .flatten()
            .map(|l| {
                serde_json::json!({
                    "quality": l.floor.name(),
                    "pairs": l.pairs,
                    "true_pairs": l.true_pairs,
                    "recall": l.recall(),
                    "precision": l.precision(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "records": records.records.len(),
                "queries": queries.records.len(),
                "pairs": pairs.len(),
                "keys_per_record": keys_per_record,
                "seconds": elapsed.as_secs_f64(),
                "levels": levels,
            })
        );
    } else {
        println!(
            "{} records, {} queries, {} pairs written to {} in {:.2} s",
            records.records.len(),
            queries.records.len(),
            pairs.len(),
            args.out.display(),
            elapsed.as_secs_f64()
        );
        println!("{keys_per_record:.1} keys per record in the index");
        if let Some(levels) = &levels {
            println!(
                "{:<16} {:>8} {:>8} {:>9} {:>9}",
                "hits", "pairs", "true", "recall", "precision"
            );
            for (label, l) in ["exact", "exact+strong", "all"].iter().zip(levels) {
                println!(
                    "{:<16} {:>8} {:>8} {:>9.4} {:>9.4}",
                    label,
                    l.pairs,
                    l.true_pairs,
                    l.recall(),
                    l.precision()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
