//! `adep keys`: the operator's commands on the matching-secret epochs.

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
    /// Operator: rotate the node to the network's next matching secret.
    ///
    /// Before: every node of the network has the next secret file, and its
    /// configuration names it as matching.next_secret_file and next_key_epoch (then a
    /// restart). `adep keys rotate` builds the next epoch's index in the background
    /// while the active one answers; once built, the node answers Match under both
    /// epochs. When every node of the network is in transition, `adep keys rotate
    /// --finish` on each makes the next epoch the one searches use and refuses the
    /// old one. Imports and erasures wait during a rotation. See the operator guide.
    Rotate(RotateArgs),
}

/// Arguments of `adep keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Finish the rotation: the next epoch becomes active, the old one is retired.
    #[arg(long, conflicts_with = "status")]
    finish: bool,
    /// Only show where the rotation stands.
    #[arg(long)]
    status: bool,
    /// After starting, wait until the next index is built and both epochs answer.
    #[arg(long, conflicts_with_all = ["finish", "status"])]
    wait: bool,
}

/// Runs an `adep keys` command.
pub async fn run(cmd: KeysCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    let KeysCommand::Rotate(args) = cmd;
    let mut client = profile.national_client()?;
    let action = if args.finish {
        RotateAction::Finish
    } else if args.status {
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
        let mut waited = 0u64;
        while answer.phase == "building" {
            if !json && waited.is_multiple_of(10) {
                eprintln!("building the index for epoch {} ...", answer.next_epoch);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += 1;
            answer = call(RotateAction::Status).await?;
        }
        if answer.phase != "transition" {
            bail!(
                "the rotation to epoch {} did not reach its transition (phase {}); the node's log says why",
                answer.next_epoch,
                answer.phase
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
            "building the index for epoch {}; epoch {} answers meanwhile{retired}",
            a.next_epoch, a.active_epoch
        ),
        "transition" => println!(
            "transition: epochs {} and {} both answer; searches use {}. Finish with `adep keys rotate --finish` once every node is in transition{retired}",
            a.active_epoch, a.next_epoch, a.active_epoch
        ),
        _ => println!(
            "stable: epoch {} answers and searches use it{retired}",
            a.active_epoch
        ),
    }
}
