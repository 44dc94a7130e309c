//! `adep keys`: the operator's commands on the node's own match key epochs.

use std::{process::ExitCode, time::Duration};

use adep_node::tooling::profile::Profile;
use adep_proto::v1::{RotateAction, RotateKeysRequest, RotateKeysResponse};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output;

/// `adep keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Operator: rotate this node's own match key. No other node takes part.
    ///
    /// The node derives its next epoch's key from matching.seed_file (read again now,
    /// so a seed replaced in that file takes effect with this rotation) and keys every
    /// stored record under it in the background while the active epoch answers; this
    /// costs about one OPRF evaluation per match key (see docs/benchmarks.md). Then
    /// the next epoch becomes active by itself, and the previous one still answers a
    /// Match for matching.previous_epoch_grace (searches evaluated just before the
    /// switch), then is retired. Imports and erasures are refused during a rotation
    /// and its grace. See the operator guide.
    Rotate(RotateArgs),
}

/// Arguments of `adep keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Only show where the rotation stands.
    #[arg(long)]
    status: bool,
    /// After starting, wait until the next index is built and the node has switched
    /// to it.
    #[arg(long, conflicts_with = "status")]
    wait: bool,
}

/// Runs an `adep keys` command.
pub async fn run(cmd: KeysCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    let KeysCommand::Rotate(args) = cmd;
    let mut client = profile.national_client()?;
    let action = if args.status {
        RotateAction::Status
    } else {
        RotateAction::Start
    };
    let mut call = async |action: RotateAction| {
        client
            .rotate_keys(RotateKeysRequest {
                action: action as i32,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| output::call_error(&profile.node, s))
    };
    let mut answer = call(action).await?;
    if args.wait {
        let target = answer.next_epoch;
        let mut waited = 0u64;
        while answer.phase == "building" {
            if !json && waited.is_multiple_of(10) {
                eprintln!("keying the stored records under epoch {target} ...");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += 1;
            answer = call(RotateAction::Status).await?;
        }
        if answer.active_epoch != target {
            bail!(
                "the rotation to epoch {target} did not switch (phase {}, epoch {} active); the node's log says why",
                answer.phase,
                answer.active_epoch
            );
        }
    }
    print(&answer, json);
    Ok(ExitCode::SUCCESS)
}

fn print(a: &RotateKeysResponse, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "phase": a.phase,
                "active_epoch": a.active_epoch,
                "next_epoch": (a.next_epoch != 0).then_some(a.next_epoch),
                "previous_epoch": (a.previous_epoch != 0).then_some(a.previous_epoch),
                "previous_until": (a.previous_until != 0).then_some(a.previous_until),
                "retired_epochs": a.retired_epochs,
            })
        );
        return;
    }
    let retired = if a.retired_epochs.is_empty() {
        String::new()
    } else {
        format!(
            "; retired: {}",
            a.retired_epochs
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match a.phase.as_str() {
        "building" => println!(
            "building: keying the stored records under epoch {}; epoch {} answers meanwhile{retired}",
            a.next_epoch, a.active_epoch
        ),
        "grace" => println!(
            "grace: epoch {} is active; epoch {} still answers a Match for {} s more, then is retired{retired}",
            a.active_epoch,
            a.previous_epoch,
            (a.previous_until - unix_now()).max(0)
        ),
        _ => println!("stable: epoch {} is active{retired}", a.active_epoch),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
