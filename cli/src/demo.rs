//! `adep demo`: the whole exchange on a fresh three-country network on loopback,
//! told step by step, through the same APIs the CLI's users call.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use adep_node::{
    config::Config,
    domain::identity::{DateOfBirth, Identity, Name, Record, RecordId, Sex},
    domain::principals::{Country, Role},
    grpc::server,
    tooling::pki,
    tooling::profile::Profile,
    tooling::requests,
    tooling::synthetic,
};
use adep_proto::v1::{
    self as pb, Aim, Decision, FollowUpState, ImportMode, ImportRequest, PeerState, PersonCategory,
};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::StreamExt as _;

use crate::{audit, followup, output, search};

/// `adep demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the network running afterwards (until Ctrl-C) and print the CLI profiles,
    /// to try the commands yourself.
    #[arg(long)]
    keep_running: bool,
    /// Directory for the PKI and the three nodes' stores. Default: a temporary
    /// directory, removed at the end. Must not hold a PKI already.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Synthetic records in each country's national file.
    #[arg(long, default_value_t = 2000)]
    records: u64,
}

const COUNTRIES: [&str; 3] = ["FR", "DE", "ES"];

/// The person DE holds and FR asks about.
fn wanted_person() -> Record {
    Record {
        id: RecordId::try_from("DE-BKA-2019-004711").unwrap_or_else(|_| unreachable()),
        identity: Identity {
            name: Name {
                family: "Müller".into(),
                given: "Hans Peter".into(),
            },
            date_of_birth: DateOfBirth::Full {
                year: 1970,
                month: 5,
                day: 12,
            },
            aliases: Vec::new(),
        },
        sex: Some(Sex::M),
        place_of_birth: Some("Köln".into()),
        nationalities: vec!["DE".into()],
        payload: [
            ("offence_category", "0202 00"),
            ("file_reference", "BKA-2019-004711"),
            ("authority", "Bundeskriminalamt, Wiesbaden"),
            (
                "notes",
                "Convicted 2019 of aggravated burglary as a member of an organised gang; released 2023.",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

#[allow(clippy::panic)]
fn unreachable() -> RecordId {
    panic!("the demo's record id is valid")
}

/// A follow-up as `user` sees it.
async fn show(user: &Profile, id: &str) -> Result<pb::FollowUp> {
    Ok(user
        .national_client()?
        .show_follow_up(pb::ShowFollowUpRequest { id: id.to_owned() })
        .await
        .map_err(|s| output::call_error(&user.node, s))?
        .into_inner())
}

/// The follow-up as `user` sees it once delivered, or None after 10 s.
async fn until_delivered(user: &Profile, id: &str) -> Result<Option<pb::FollowUp>> {
    for _ in 0..100 {
        let f = show(user, id).await?;
        if f.state == FollowUpState::Delivered as i32 {
            return Ok(Some(f));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

/// Runs the demo. Exit 0 when every step did what it should.
pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    super::in_process_logs("error");
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_owned()
        }
    };
    super::runtime()?.block_on(demo(args, dir))
}

async fn demo(args: &DemoArgs, dir: PathBuf) -> Result<ExitCode> {
    step(
        1,
        "A development PKI and three nodes on loopback: FR, DE, ES",
    );
    let mut plans = Vec::new();
    let mut bound = Vec::new();
    for cc in COUNTRIES {
        let country: Country = cc.parse().map_err(anyhow::Error::msg)?;
        let federation = TcpListener::bind("127.0.0.1:0").await?;
        let national = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        plans.push(pki::NodePlan {
            country,
            federation: federation.local_addr()?,
            national: national.local_addr()?,
            metrics: Some(metrics.local_addr()?),
            reach: None,
        });
        bound.push(server::Listeners {
            federation,
            national,
            metrics: Some(metrics),
        });
    }
    pki::init(&dir, &plans)?;
    println!(
        "   network CA, national CAs, node and user certificates in {}",
        dir.display()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = Vec::new();
    for (cc, listeners) in COUNTRIES.iter().zip(bound) {
        let config = Config::load(&dir.join(cc).join("node.toml"))?;
        let prepared = server::prepare(config).with_context(|| format!("node {cc}"))?;
        let mut rx = stop_rx.clone();
        nodes.push(tokio::spawn(server::serve(
            prepared,
            listeners,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
        println!("   {cc} node started");
    }
    let profile = |cc: &str, role: Role| Profile::load(&dir.join(cc).join(format!("{role}.toml")));
    let outcome = story(args, &profile).await;
    if outcome.is_ok() && args.keep_running {
        println!("\nThe network stays up. Try, from another terminal:");
        for cc in COUNTRIES {
            for role in [Role::Officer, Role::Reviewer, Role::Operator] {
                println!(
                    "  {} {} --profile {}",
                    output::program(),
                    match role {
                        Role::Officer => "followup list",
                        Role::Reviewer => "followup list --incoming",
                        _ => "status",
                    },
                    output::shell_word(
                        &dir.join(cc)
                            .join(format!("{role}.toml"))
                            .display()
                            .to_string()
                    ),
                );
            }
        }
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(true);
    for node in nodes {
        let _ = node.await;
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}

async fn story(
    args: &DemoArgs,
    profile: &impl Fn(&str, Role) -> Result<Profile, adep_node::tooling::profile::ProfileError>,
) -> Result<()> {
    step(2, "Each operator imports a synthetic national file");
    for (i, cc) in COUNTRIES.iter().enumerate() {
        let mut records = synthetic::records(100 + i as u64, args.records);
        if *cc == "DE" {
            records.push(wanted_person());
        }
        let count = records.len();
        let operator = profile(cc, Role::Operator)?;
        let batches: Vec<ImportRequest> = records
            .chunks(1000)
            .enumerate()
            .map(|(j, chunk)| ImportRequest {
                mode: if j == 0 { ImportMode::Import as i32 } else { 0 },
                records: chunk.iter().map(requests::record).collect(),
            })
            .collect();
        let mut progress = operator
            .national_client()?
            .import_records(tokio_stream::iter(batches))
            .await
            .map_err(|s| output::call_error(&operator.node, s))?
            .into_inner();
        while let Some(p) = progress.next().await {
            p.map_err(|s| output::call_error(&operator.node, s))?;
        }
        println!("   {cc}: {count} records stored, pseudonymised and indexed");
    }

    step(
        3,
        "An officer in FR searches for MUELLER, Hans Peter, born 1970-05-12",
    );
    println!(
        "   FR's node derives the subject's match keys and blinds them (RFC 9497 OPRF); DE and ES"
    );
    println!(
        "   each evaluate the blinded elements under their own key, seeing no name; FR unblinds"
    );
    println!("   them into each node's own digests and sends those in a Match: hit or no hit.");
    let reason = pb::Reason {
        case_reference: "FR-PJ-2026-0815".into(),
        // 0202 00: knowingly taking part in the criminal activities of a criminal
        // organisation (`adep offence-categories`).
        offence_category: "0202 00".into(),
        person_category: PersonCategory::Suspect as i32,
        aim: Aim::LearnMore as i32,
    };
    let officer = profile("FR", Role::Officer)?;
    let answer = officer
        .national_client()?
        .search(pb::SearchRequest {
            reason: Some(reason.clone()),
            subjects: vec![pb::Identity {
                family_name: "MUELLER".into(),
                given_names: "Hans Peter".into(),
                date_of_birth: "1970-05-12".into(),
                ..pb::Identity::default()
            }],
        })
        .await
        .map_err(|s| output::call_error(&officer.node, s))?
        .into_inner();
    for p in &answer.peers {
        let hits = answer
            .hits
            .iter()
            .filter(|h| h.country == p.country)
            .count();
        println!(
            "   {}: {} ({} ms), {}",
            p.country,
            output::peer_state(p.state),
            p.latency_ms,
            if hits == 0 {
                "no hit".to_owned()
            } else {
                output::count(hits as u64, "hit", "hits")
            }
        );
    }
    if answer.peers.iter().any(|p| p.state != PeerState::Ok as i32) {
        bail!("not every peer answered the search");
    }
    let Some(hit) = answer.hits.iter().find(|h| h.country == "DE") else {
        bail!("the search found no hit in DE");
    };
    // Checked, not just told: nothing of DE's record (its id, its payload's texts) is
    // in FR's hands. (Short codes, like the offence category FR searched with too,
    // would prove nothing.)
    let wanted = wanted_person();
    let holds_record_data = |text: &str| {
        text.contains(wanted.id.as_str())
            || wanted
                .payload
                .values()
                .filter(|v| v.len() >= 8)
                .any(|v| text.contains(v.as_str()))
    };
    if holds_record_data(&format!("{answer:?}")) {
        bail!("the search answer holds data of DE's record");
    }
    println!(
        "   hit in DE: reference {} ({}); no record data has left DE",
        hit.hit_ref,
        search::quality(hit.quality)
    );

    step(4, "The FR officer files a follow-up request with DE");
    let filed = officer
        .national_client()?
        .request_follow_up(pb::RequestFollowUpRequest {
            hit_ref: hit.hit_ref.clone(),
            justification: "Suspected of a series of burglaries by an organised gang in Lyon \
                            in 2026; we need his criminal record to decide on pre-trial detention."
                .into(),
            offence_description: "Aggravated burglary of dwellings by an organised gang, 7 cases"
                .into(),
        })
        .await
        .map_err(|s| output::call_error(&officer.node, s))?
        .into_inner();
    if !filed.core_data.is_empty()
        || filed.record.is_some()
        || holds_record_data(&format!("{filed:?}"))
    {
        bail!("the filed follow-up holds data of DE's record before any approval");
    }
    println!(
        "   follow-up {} filed with DE: {}; FR holds no data of the record",
        filed.id,
        followup::state_name(filed.state)
    );

    step(
        5,
        "A reviewer in DE sees the request next to the local record",
    );
    let reviewer = profile("DE", Role::Reviewer)?;
    let incoming = show(&reviewer, &filed.id).await?;
    let subject = incoming.subject.clone().unwrap_or_default();
    println!(
        "   asked by officer {} of FR for search {}:",
        incoming.officer_id, incoming.search_request_id
    );
    // The request and the local record side by side, field by field.
    let Some(record) = &incoming.record else {
        bail!("the reviewer does not see the local record");
    };
    let local = record.identity.clone().unwrap_or_default();
    println!(
        "     {:<22} {:<32} local record {}",
        "", "request", record.record_id
    );
    for (field, asked, held) in [
        ("family name", &subject.family_name, &local.family_name),
        ("given names", &subject.given_names, &local.given_names),
        (
            "date of birth",
            &subject.date_of_birth,
            &local.date_of_birth,
        ),
    ] {
        println!("     {field:<22} {asked:<32} {held}");
    }
    let sorted: std::collections::BTreeMap<_, _> = record.payload.iter().collect();
    for (k, v) in sorted {
        println!("     {k:<22} {:<32} {v}", "");
    }
    if let Some(r) = &incoming.reason {
        println!(
            "     reason: case {}, offence {}, {}, {}",
            r.case_reference,
            r.offence_category,
            output::names::person_category(r.person_category),
            output::names::aim(r.aim)
        );
    }
    println!("     justification: {}", incoming.justification);

    step(
        6,
        "The DE reviewer approves; only the release policy's fields go to FR",
    );
    reviewer
        .national_client()?
        .decide_follow_up(pb::DecideFollowUpRequest {
            id: filed.id.clone(),
            decision: Decision::Approve as i32,
            reason: "Identity confirmed against the local file; proportionate to the offence."
                .into(),
        })
        .await
        .map_err(|s| output::call_error(&reviewer.node, s))?;
    let Some(delivered) = until_delivered(&officer, &filed.id).await? else {
        bail!("the decision did not reach FR");
    };
    // DE closes its side once FR acknowledged, a moment later; the audit trail
    // below shows both.
    if until_delivered(&reviewer, &filed.id).await?.is_none() {
        bail!("DE never saw FR acknowledge the release");
    }
    println!("   released core data, as the FR officer sees it:");
    let sorted: std::collections::BTreeMap<_, _> = delivered.core_data.iter().collect();
    for (k, v) in sorted {
        println!("     {k}: {v}");
    }

    step(
        7,
        "The audit trail so far, as each node's auditor exports and verifies it",
    );
    for cc in COUNTRIES {
        let auditor = profile(cc, Role::Auditor)?;
        let exported = audit::entries(&auditor, 0, 0).await?;
        for e in exported.iter().filter(|e| e.checkpoint.is_none()) {
            let fields: serde_json::Value =
                serde_json::from_str(&e.fields_json).unwrap_or_default();
            println!("   {cc} #{:<3} {:<28} {}", e.seq, e.kind, fields);
        }
        let v = auditor
            .national_client()?
            .verify_audit(pb::VerifyAuditRequest::default())
            .await
            .map_err(|s| output::call_error(&auditor.node, s))?
            .into_inner();
        if !v.ok {
            bail!("{cc}'s audit log does not verify: {}", v.problem);
        }
        println!(
            "   {cc}: {} entries, hash-chained and signed: verified",
            v.entries
        );
    }
    println!("\ndemo complete: hit, follow-up, human approval, release of core data");
    Ok(())
}
