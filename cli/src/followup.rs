//! `adep followup`: step 2. Officers file follow-up requests for hits and read the
//! outcome; reviewers at the node that holds the record decide.

use std::process::ExitCode;

use adep_node::tooling::profile::Profile;
use adep_proto::v1::{self as pb, Decision, Direction, FollowUpState};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::{output, search};

/// `adep followup` commands.
#[derive(Debug, Subcommand)]
pub enum FollowUpCommand {
    /// Officer: file a follow-up request for a hit reference from one of your searches.
    /// It carries that search's reason (case, offence category, person category, aim)
    /// and is sent to the node that holds the record, where a reviewer decides. One
    /// request per hit, and per record and case: another only after a refusal, a
    /// withdrawal or an expiry; once one is approved, only another case (searching
    /// under its own case reference) asks again.
    Request(RequestArgs),
    /// Officer: your requests. Reviewer: requests filed with your node (--incoming).
    List(ListArgs),
    /// One request with its state and, once released, the record's core data
    /// (officer); or an incoming request next to the local record (reviewer).
    Show(IdArgs),
    /// Reviewer: approve an incoming request; the core data named by the release
    /// policy is sent to the requesting node.
    Approve(DecideArgs),
    /// Reviewer: refuse an incoming request; nothing is released.
    Refuse(DecideArgs),
    /// Reviewer: hold an incoming request while judicial authorisation is sought.
    Hold(DecideArgs),
    /// Officer: withdraw one of your undecided requests.
    Withdraw(IdArgs),
}

/// `adep followup request` arguments.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The hit reference (40 lower-case hexadecimal digits) from `adep search`.
    #[arg(long = "hit", value_name = "REF")]
    hit_ref: String,
    /// Why you need the record, for the reviewer who decides: at least 20
    /// characters, 10 of them letters (at most 4,000 bytes).
    #[arg(long, value_name = "TEXT")]
    justification: String,
    /// The offence under investigation, in your words (at most 2,000 bytes).
    #[arg(long, value_name = "TEXT")]
    offence_description: String,
}

/// A state to filter on.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    /// Waiting for a reviewer.
    Pending,
    /// Undecided past the decision deadline.
    Overdue,
    /// Waiting for judicial authorisation.
    OnHold,
    /// Approved, core data not yet acknowledged.
    Approved,
    /// Approved and delivered.
    Delivered,
    /// Refused.
    Refused,
    /// Closed undecided at its expiry.
    Expired,
    /// Withdrawn by the officer.
    Withdrawn,
}

/// `adep followup list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Reviewer: list requests filed with this node by other countries.
    #[arg(long)]
    incoming: bool,
    /// Only requests in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// At most this many, oldest first (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

/// A follow-up id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The follow-up's id (32 hexadecimal digits).
    id: String,
}

/// Arguments of a reviewer's decision.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The follow-up's id (32 hexadecimal digits).
    id: String,
    /// Why: recorded with the decision and sent to the requesting node. At least 10
    /// characters, 5 of them letters.
    #[arg(long)]
    reason: String,
}

/// Runs a follow-up command.
pub async fn run(cmd: FollowUpCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    let mut client = profile.national_client()?;
    let fail = |s| output::call_error(&profile.node, s);
    let decide = |args: &DecideArgs, decision: Decision| pb::DecideFollowUpRequest {
        id: args.id.clone(),
        decision: decision as i32,
        reason: args.reason.clone(),
    };
    let one = match cmd {
        FollowUpCommand::Request(args) => client
            .request_follow_up(pb::RequestFollowUpRequest {
                hit_ref: args.hit_ref.clone(),
                justification: args.justification.clone(),
                offence_description: args.offence_description.clone(),
            })
            .await
            .map_err(fail)?
            .into_inner(),
        FollowUpCommand::List(args) => {
            let (state, overdue) = match args.state {
                None => (FollowUpState::Unspecified, false),
                Some(StateArg::Overdue) => (FollowUpState::Unspecified, true),
                Some(s) => (state_of(s), false),
            };
            let list = client
                .list_follow_ups(pb::ListFollowUpsRequest {
                    incoming: args.incoming,
                    state: state as i32,
                    overdue,
                    limit: args.limit,
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_list(&list.follow_ups, list.total, json);
            return Ok(ExitCode::SUCCESS);
        }
        FollowUpCommand::Show(args) => client
            .show_follow_up(pb::ShowFollowUpRequest { id: args.id })
            .await
            .map_err(fail)?
            .into_inner(),
        FollowUpCommand::Approve(args) => client
            .decide_follow_up(decide(&args, Decision::Approve))
            .await
            .map_err(fail)?
            .into_inner(),
        FollowUpCommand::Refuse(args) => client
            .decide_follow_up(decide(&args, Decision::Refuse))
            .await
            .map_err(fail)?
            .into_inner(),
        FollowUpCommand::Hold(args) => client
            .decide_follow_up(decide(&args, Decision::Hold))
            .await
            .map_err(fail)?
            .into_inner(),
        FollowUpCommand::Withdraw(args) => client
            .withdraw_follow_up(pb::WithdrawFollowUpRequest { id: args.id })
            .await
            .map_err(fail)?
            .into_inner(),
    };
    if json {
        let mut v = to_json(&one);
        if one.direction == Direction::Incoming as i32 {
            // Shown one at a time, an incoming request comes with its local record.
            v["record_erased"] = json!(one.record.is_none());
        }
        println!("{v}");
    } else {
        print_one(&one);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn state_of(s: StateArg) -> FollowUpState {
    match s {
        StateArg::Pending | StateArg::Overdue => FollowUpState::Pending,
        StateArg::OnHold => FollowUpState::OnHold,
        StateArg::Approved => FollowUpState::Approved,
        StateArg::Delivered => FollowUpState::Delivered,
        StateArg::Refused => FollowUpState::Refused,
        StateArg::Expired => FollowUpState::Expired,
        StateArg::Withdrawn => FollowUpState::Withdrawn,
    }
}

/// The name of a proto follow-up state.
pub fn state_name(s: i32) -> &'static str {
    output::names::state(s)
}

fn decision_name(d: i32) -> &'static str {
    output::names::decision(d)
}

fn identity_json(i: &pb::Identity) -> Value {
    json!({
        "family_name": i.family_name,
        "given_names": i.given_names,
        "date_of_birth": i.date_of_birth,
        "sex": i.sex,
        "place_of_birth": i.place_of_birth,
        "nationalities": i.nationalities,
        "aliases": i.aliases.iter().map(|a| json!({"family_name": a.family_name, "given_names": a.given_names})).collect::<Vec<_>>(),
    })
}

/// An identity as lines of text: the name and birth, then whatever else it has.
fn identity_lines(i: &pb::Identity) -> Vec<String> {
    let mut lines = vec![format!(
        "{}, {} (born {})",
        i.family_name, i.given_names, i.date_of_birth
    )];
    for a in &i.aliases {
        lines.push(format!("alias {}, {}", a.family_name, a.given_names));
    }
    if !i.sex.is_empty() {
        lines.push(format!("sex {}", i.sex));
    }
    if !i.place_of_birth.is_empty() {
        lines.push(format!("born in {}", i.place_of_birth));
    }
    if !i.nationalities.is_empty() {
        lines.push(format!("nationality {}", i.nationalities.join(", ")));
    }
    lines
}

/// The JSON form of a follow-up.
pub fn to_json(f: &pb::FollowUp) -> Value {
    let reason = f.reason.clone().unwrap_or_default();
    let mut v = json!({
        "id": f.id,
        "direction": if f.direction == Direction::Incoming as i32 { "incoming" } else { "outgoing" },
        "country": f.country,
        "hit_ref": f.hit_ref,
        "state": state_name(f.state),
        "overdue": f.overdue,
        "officer_id": f.officer_id,
        "reason": {
            "case_reference": reason.case_reference,
            "offence_category": reason.offence_category,
            "person_category": output::names::person_category(reason.person_category),
            "aim": output::names::aim(reason.aim),
        },
        "justification": f.justification,
        "offence_description": f.offence_description,
        "subject": f.subject.as_ref().map(identity_json),
        "quality": search::quality(f.quality),
        "search_request_id": f.search_request_id,
        "filed_at": f.filed_at,
        "deadline_at": f.deadline_at,
        "expires_at": f.expires_at,
        "withdrawn_at": (f.withdrawn_at != 0).then_some(f.withdrawn_at),
        "steps": f.steps.iter().map(|s| json!({
            "reviewer": s.reviewer, "decision": decision_name(s.decision), "reason": s.reason, "at": s.at,
        })).collect::<Vec<_>>(),
        "decision_reason": f.decision_reason,
        "core_data": f.core_data.iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(r) = &f.record {
        v["record"] = json!({
            "record_id": r.record_id,
            "identity": r.identity.as_ref().map(identity_json),
            "payload": r.payload.iter().collect::<std::collections::BTreeMap<_, _>>(),
        });
    }
    v
}

fn time(t: i64) -> String {
    output::utc(t)
}

fn print_list(all: &[pb::FollowUp], total: u32, json: bool) {
    if json {
        println!(
            "{}",
            json!({ "total": total, "follow_ups": all.iter().map(to_json).collect::<Vec<_>>() })
        );
        return;
    }
    if all.is_empty() {
        println!("no follow-up requests");
        return;
    }
    println!(
        "{:<32}  {:<2}  {:<10}  {:<20}  case",
        "id", "cc", "state", "filed"
    );
    for f in all {
        let state = if f.overdue {
            "overdue"
        } else {
            state_name(f.state)
        };
        println!(
            "{:<32}  {:<2}  {:<10}  {:<20}  {}",
            f.id,
            f.country,
            state,
            time(f.filed_at),
            f.reason.as_ref().map_or("", |r| r.case_reference.as_str())
        );
    }
    if total as usize > all.len() {
        println!(
            "({} of {total} shown, oldest first; see --limit)",
            all.len()
        );
    }
}

fn print_one(f: &pb::FollowUp) {
    let incoming = f.direction == Direction::Incoming as i32;
    // One column of labels, one line per field.
    let field = |label: &str, value: &str| println!("  {label:<14} {value}");
    println!("follow-up {}", f.id);
    field(if incoming { "from" } else { "to" }, &f.country);
    field(
        "state",
        &format!(
            "{}{}",
            state_name(f.state),
            if f.overdue { " (overdue)" } else { "" }
        ),
    );
    field(
        "hit",
        &format!("{} ({})", f.hit_ref, search::quality(f.quality)),
    );
    if !f.search_request_id.is_empty() {
        field("search", &f.search_request_id);
    }
    field("officer", &f.officer_id);
    if let Some(r) = &f.reason {
        field(
            "reason",
            &format!(
                "case {}, offence {}, {}, {}",
                r.case_reference,
                r.offence_category,
                output::names::person_category(r.person_category),
                output::names::aim(r.aim)
            ),
        );
    }
    field("justification", &f.justification);
    field("offence", &f.offence_description);
    // A label, then more lines under it.
    let fields = |label: &str, values: Vec<String>| {
        for (i, v) in values.iter().enumerate() {
            field(if i == 0 { label } else { "" }, v);
        }
    };
    if let Some(s) = &f.subject {
        fields("subject", identity_lines(s));
    }
    field("filed", &time(f.filed_at));
    field("overdue from", &time(f.deadline_at));
    field("expires", &time(f.expires_at));
    if f.withdrawn_at != 0 {
        // Only the officer who filed a request withdraws it.
        field(
            "withdrawn",
            &format!("by {} on {}", f.officer_id, time(f.withdrawn_at)),
        );
    }
    // Each decision once: what, who, when and why.
    for s in &f.steps {
        let by = if s.reviewer.is_empty() {
            format!("{}'s reviewer", f.country)
        } else {
            s.reviewer.clone()
        };
        let what = match Decision::try_from(s.decision) {
            Ok(Decision::Hold) => "held",
            Ok(Decision::Approve) => "approved",
            Ok(Decision::Refuse) => "refused",
            _ => "decided",
        };
        field(what, &format!("by {by} on {}: {}", time(s.at), s.reason));
    }
    if f.steps.is_empty() && !f.decision_reason.is_empty() {
        field("decision", &f.decision_reason);
    }
    // Maps in a stable order.
    let pairs = |map: &std::collections::HashMap<String, String>| {
        let sorted: std::collections::BTreeMap<_, _> = map.iter().collect();
        sorted
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
    };
    if let Some(r) = &f.record {
        let mut lines = vec![r.record_id.clone()];
        lines.extend(r.identity.iter().flat_map(identity_lines));
        lines.extend(pairs(&r.payload));
        fields("local record", lines);
    } else if incoming {
        let then = if matches!(
            FollowUpState::try_from(f.state),
            Ok(FollowUpState::Pending | FollowUpState::OnHold)
        ) {
            ": there is nothing to release, so it can only be refused"
        } else {
            ""
        };
        field(
            "local record",
            &format!("erased from the index since the request was filed{then}"),
        );
    }
    if !f.core_data.is_empty() {
        fields("released", pairs(&f.core_data));
    }
}
