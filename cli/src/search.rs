//! `adep search`: the officer's hit/no-hit query across every peer.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::ExitCode,
};

use adep_node::{
    domain::identity::{self, Format, OnBadRow},
    tooling::profile::Profile,
    tooling::requests,
};
use adep_proto::v1::{self, PeerState, Quality, SearchRequest};
use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::output;

/// Subjects per Search call when searching a file.
const FILE_BATCH: usize = 500;

/// Person category of the query (Prüm II Art. 33).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PersonCategoryArg {
    /// A suspect.
    Suspect,
    /// A convicted person.
    Convicted,
    /// A victim.
    Victim,
    /// A missing person.
    MissingPerson,
    /// Unidentified human remains.
    UnidentifiedRemains,
}

/// Aim of the query.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AimArg {
    /// Identify a person.
    Identify,
    /// Learn more about a person already identified.
    LearnMore,
}

/// `adep search` arguments.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Family name(s) of the subject, any script.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    family_name: Option<String>,
    /// Given name(s); leave out when unknown.
    #[arg(long, default_value = "", conflicts_with = "file")]
    given_names: String,
    /// Date of birth: YYYY-MM-DD, YYYY-MM or YYYY.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    dob: Option<String>,
    /// Another name of the subject, as FAMILY/GIVEN (repeatable).
    #[arg(long = "alias", value_name = "FAMILY/GIVEN", conflicts_with = "file")]
    aliases: Vec<String>,
    /// Search every subject of a record file (CSV or .jsonl, interchange format), in batches.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(flatten)]
    reason: ReasonArgs,
}

/// The reason of a search (Prüm II Art. 33): all four are mandatory, recorded by
/// every node asked, and inherited by each follow-up of the search's hits.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// Your case reference (at most 64 characters of A-Z a-z 0-9 - _ . / : and
    /// spaces), sent with the query to every node asked.
    #[arg(long, value_name = "REF")]
    case_ref: String,
    /// The case's offence category: a code of the ECRIS common table, four digits, a
    /// space and two digits, such as `0301 00` (quote it; `030100` works too). `adep
    /// offence-categories` lists the table.
    #[arg(long, value_name = "CODE")]
    offence_category: String,
    /// Person category of the subject.
    #[arg(long, value_enum)]
    person_category: PersonCategoryArg,
    /// Aim of the query.
    #[arg(long, value_enum)]
    aim: AimArg,
}

/// The proto reason of the reason arguments.
pub fn reason(args: &ReasonArgs) -> v1::Reason {
    let person = match args.person_category {
        PersonCategoryArg::Suspect => v1::PersonCategory::Suspect,
        PersonCategoryArg::Convicted => v1::PersonCategory::Convicted,
        PersonCategoryArg::Victim => v1::PersonCategory::Victim,
        PersonCategoryArg::MissingPerson => v1::PersonCategory::MissingPerson,
        PersonCategoryArg::UnidentifiedRemains => v1::PersonCategory::UnidentifiedRemains,
    };
    let aim = match args.aim {
        AimArg::Identify => v1::Aim::Identify,
        AimArg::LearnMore => v1::Aim::LearnMore,
    };
    v1::Reason {
        case_reference: args.case_ref.clone(),
        offence_category: args.offence_category.clone(),
        person_category: person as i32,
        aim: aim as i32,
    }
}

/// The subjects to search, each with its record id when read from a file.
fn subjects(args: &SearchArgs) -> Result<Vec<(Option<String>, v1::Identity)>> {
    if let Some(path) = &args.file {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let records = identity::read_records(file, Format::from_path(path), OnBadRow::Fail)
            .with_context(|| format!("{}", path.display()))?;
        if records.records.is_empty() {
            bail!("{}: no subjects", path.display());
        }
        return Ok(records
            .records
            .iter()
            .map(|r| (Some(r.id.to_string()), requests::record_identity(r)))
            .collect());
    }
    let aliases = args
        .aliases
        .iter()
        .map(|a| {
            let (family, given) = a
                .split_once('/')
                .with_context(|| "--alias takes FAMILY/GIVEN".to_owned())?;
            Ok(v1::Alias {
                family_name: family.to_owned(),
                given_names: given.to_owned(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![(
        None,
        v1::Identity {
            family_name: args.family_name.clone().unwrap_or_default(),
            given_names: args.given_names.clone(),
            date_of_birth: args.dob.clone().unwrap_or_default(),
            aliases,
            ..v1::Identity::default()
        },
    )])
}

/// The name of a proto quality.
pub fn quality(q: i32) -> &'static str {
    match Quality::try_from(q).unwrap_or(Quality::Unspecified) {
        Quality::Exact => "exact",
        Quality::Strong => "strong",
        Quality::Weak => "weak",
        Quality::Unspecified => "unknown",
    }
}

/// What a search in which no peer answered established.
const NO_ANSWER: &str =
    "no peer answered, so whether any holds the person is not known; `adep status` shows each peer";

/// Runs the search. Exit 0: at least one hit; 1: no hit; 2: error (also when no peer
/// answered, since "no hit" could not be established).
pub async fn run(
    args: &SearchArgs,
    profile: &Profile,
    profile_path: &Path,
    json: bool,
) -> Result<ExitCode> {
    let subjects = subjects(args)?;
    let reason = reason(&args.reason);
    let mut client = profile.national_client()?;
    let mut request_ids = Vec::new();
    // Per peer, the worst state seen over all batches.
    let mut peers: BTreeMap<String, v1::PeerStatus> = BTreeMap::new();
    let mut hits = Vec::new();
    for (b, batch) in subjects.chunks(FILE_BATCH).enumerate() {
        let resp = client
            .search(SearchRequest {
                reason: Some(reason.clone()),
                subjects: batch.iter().map(|(_, i)| i.clone()).collect(),
            })
            .await
            .map_err(|s| output::call_error(&profile.node, s))?
            .into_inner();
        request_ids.push(resp.request_id);
        for peer in resp.peers {
            let worse = peers
                .get(&peer.country)
                .is_none_or(|seen| seen.state == PeerState::Ok as i32);
            if worse {
                peers.insert(peer.country.clone(), peer);
            }
        }
        for hit in resp.hits {
            // The subject's position among all searched, from 1, and its record id.
            let position = b * FILE_BATCH + hit.subject as usize + 1;
            let record_id = batch
                .get(hit.subject as usize)
                .and_then(|(id, _)| id.clone());
            hits.push((position, record_id, hit));
        }
    }
    let answered = peers
        .values()
        .filter(|p| p.state == PeerState::Ok as i32)
        .count();
    if json {
        let peers: Vec<_> = peers
            .values()
            .map(|p| {
                json!({
                    "country": p.country,
                    "status": output::peer_state(p.state),
                    "detail": p.detail,
                    "latency_ms": p.latency_ms,
                })
            })
            .collect();
        let hits: Vec<_> = hits
            .iter()
            .map(|(position, record_id, h)| {
                json!({
                    "subject": position,
                    "record_id": record_id,
                    "country": h.country,
                    "hit_ref": h.hit_ref,
                    "quality": quality(h.quality),
                    "expires_at": h.expires_at,
                })
            })
            .collect();
        let mut out = json!({
            "request_ids": request_ids,
            "subjects": subjects.len(),
            "peers": peers,
            "hits": hits,
        });
        // Exit 2 carries an error in the one shape of errors, beside what was seen.
        if hits.is_empty() && answered == 0 && !peers.is_empty() {
            out["error"] = json!({ "kind": "error", "message": NO_ANSWER });
        }
        println!("{out}");
    } else {
        println!(
            "searched {} in {} (request {})",
            output::count(subjects.len() as u64, "subject", "subjects"),
            output::count(peers.len() as u64, "peer", "peers"),
            request_ids.join(", ")
        );
        for p in peers.values() {
            let detail = if p.detail.is_empty() {
                String::new()
            } else {
                format!("  {}", p.detail)
            };
            println!(
                "  {:<3} {:<12} {:>6} ms{detail}",
                p.country,
                output::peer_state(p.state),
                p.latency_ms
            );
        }
        let silent = peers.len() - answered;
        if hits.is_empty() && answered == 0 && silent > 0 {
            println!("no answer: {NO_ANSWER}");
        } else if hits.is_empty() && silent > 0 {
            println!(
                "no hit in the {} that answered; {silent} did not, so a hit there is not ruled out",
                output::count(answered as u64, "peer", "peers")
            );
        } else if hits.is_empty() {
            println!("no hit");
        }
        for (_, record_id, h) in &hits {
            let subject = record_id
                .as_ref()
                .map_or_else(String::new, |id| format!("{id}  "));
            println!(
                "HIT {subject}{} {:<6} {}",
                h.country,
                quality(h.quality),
                h.hit_ref
            );
        }
    }
    if let Some((_, _, first)) = hits.first().filter(|_| !json) {
        if hits.len() == 1 {
            println!(
                "next: ask {} for the record with a follow-up request; it carries this search's reason:",
                first.country
            );
        } else {
            println!(
                "next: ask each hit's country for its record with a follow-up request, one per hit; it carries this search's reason. For the first, in {}:",
                first.country
            );
        }
        println!(
            "  {} followup request --profile {} --hit {} --justification '<why you need the record, for the reviewer>' --offence-description '<the offence, in your words>'",
            output::program(),
            output::shell_word(&profile_path.display().to_string()),
            first.hit_ref
        );
    }
    if !hits.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else if answered == 0 && !peers.is_empty() {
        Ok(ExitCode::from(2))
    } else {
        Ok(ExitCode::from(1))
    }
}
