//! What the CLI prints: text for people, `--json` for scripts.

use std::path::Path;

use adep_node::tooling::pki::PkiSummary;
use adep_proto::v1::{PeerState, Role, StatusResponse};
use serde_json::json;

/// `n` and the noun that goes with it: `1 record`, `2 records`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Turns a failed call into an error that says what the node said, in words.
pub fn call_error(node: &str, status: tonic::Status) -> anyhow::Error {
    // A status with a source is the client's own transport failing; without one, the
    // node answered with it (a peer it could not reach, a store that failed).
    let transport = std::error::Error::source(&status).is_some();
    let what = match status.code() {
        tonic::Code::Unauthenticated => "the node did not accept your certificate",
        tonic::Code::PermissionDenied => "the node refused the call",
        tonic::Code::Unavailable if transport => "the node is not reachable",
        tonic::Code::Unavailable => "the node answered that it cannot do it now",
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
    anyhow::anyhow!("{what} ({node}): {}", with_flags(without_os_code(&detail)))
}

/// `Connection refused (os error 111)` without the code, which tells a user nothing.
fn without_os_code(detail: &str) -> &str {
    match detail.rfind(" (os error ") {
        Some(at) if detail.ends_with(')') => &detail[..at],
        _ => detail,
    }
}

/// The node names request fields as the protocol does; beside each, the flag that
/// sets it, so that the user knows what to change.
fn with_flags(detail: &str) -> String {
    const FLAGS: &[(&str, &str)] = &[
        ("hit_ref", "--hit"),
        ("justification", "--justification"),
        ("offence_description", "--offence-description"),
        ("reason.case_reference", "--case-ref"),
        ("reason.offence_category", "--offence-category"),
        ("reason.person_category", "--person-category"),
        ("reason.aim", "--aim"),
    ];
    let mut out = detail.to_owned();
    for (field, flag) in FLAGS {
        let named = format!("field `{field}`");
        out = out.replacen(&named, &format!("{named} ({flag})"), 1);
    }
    out
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
            println!(
                "      {role:<9} {} status --profile {}",
                program(),
                shell_word(&p.display().to_string())
            );
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
                    "latency_ms": (p.state != PeerState::Unchecked as i32)
                        .then_some(p.latency_ms),
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
        "store     {} schema v{}, {}",
        store.engine,
        store.schema_version,
        count(store.starts, "start", "starts")
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
        // A peer not called has no latency to show.
        let latency = if p.state == PeerState::Unchecked as i32 {
            "   -   ".to_owned()
        } else {
            format!("{:>4} ms", p.latency_ms)
        };
        println!(
            "peer      {} {:<11} {latency}  {}{}",
            p.country,
            peer_state(p.state),
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

/// The one spelling of each value (defined by the node's domain types, as its audit
/// events write them) for the proto enums the CLI prints.
pub mod names {
    use adep_node::domain::{
        followup::{Decision, State},
        reason::{Aim, PersonCategory},
    };
    use adep_proto::v1;

    /// A person category.
    pub fn person_category(v: i32) -> &'static str {
        match v1::PersonCategory::try_from(v) {
            Ok(v1::PersonCategory::Suspect) => PersonCategory::Suspect.name(),
            Ok(v1::PersonCategory::Convicted) => PersonCategory::Convicted.name(),
            Ok(v1::PersonCategory::Victim) => PersonCategory::Victim.name(),
            Ok(v1::PersonCategory::MissingPerson) => PersonCategory::MissingPerson.name(),
            Ok(v1::PersonCategory::UnidentifiedRemains) => {
                PersonCategory::UnidentifiedRemains.name()
            }
            _ => "unknown",
        }
    }

    /// An aim.
    pub fn aim(v: i32) -> &'static str {
        match v1::Aim::try_from(v) {
            Ok(v1::Aim::Identify) => Aim::Identify.name(),
            Ok(v1::Aim::LearnMore) => Aim::LearnMore.name(),
            _ => "unknown",
        }
    }

    /// A follow-up state.
    pub fn state(v: i32) -> &'static str {
        match v1::FollowUpState::try_from(v) {
            Ok(v1::FollowUpState::Pending) => State::Pending.name(),
            Ok(v1::FollowUpState::OnHold) => State::OnHold.name(),
            Ok(v1::FollowUpState::Approved) => State::Approved.name(),
            Ok(v1::FollowUpState::Delivered) => State::Delivered.name(),
            Ok(v1::FollowUpState::Refused) => State::Refused.name(),
            Ok(v1::FollowUpState::Expired) => State::Expired.name(),
            Ok(v1::FollowUpState::Withdrawn) => State::Withdrawn.name(),
            _ => "unknown",
        }
    }

    /// A reviewer's decision.
    pub fn decision(v: i32) -> &'static str {
        match v1::Decision::try_from(v) {
            Ok(v1::Decision::Approve) => Decision::Approve.name(),
            Ok(v1::Decision::Refuse) => Decision::Refuse.name(),
            Ok(v1::Decision::Hold) => Decision::Hold.name(),
            _ => "unknown",
        }
    }
}

/// This program as the user can run it again: the path it was started by (often
/// `./target/debug/adep`, not on PATH), or `adep`.
pub fn program() -> String {
    std::env::args()
        .next()
        .filter(|p| !p.is_empty())
        .map_or_else(|| "adep".to_owned(), |p| shell_word(&p))
}

/// `word` as one shell word: as is when it is made of safe characters, else in single
/// quotes.
pub fn shell_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_fields_are_shown_with_their_flags() {
        assert_eq!(
            super::with_flags("field `hit_ref`: the hit reference has expired; search again"),
            "field `hit_ref` (--hit): the hit reference has expired; search again"
        );
        assert_eq!(
            super::with_flags("field `reason.offence_category` is required"),
            "field `reason.offence_category` (--offence-category) is required"
        );
        assert_eq!(super::with_flags("no field here"), "no field here");
    }

    #[test]
    fn a_node_that_answers_unavailable_is_not_called_unreachable() {
        let answered = super::call_error(
            "https://fr.example:7300",
            tonic::Status::unavailable("DE is unreachable; try again"),
        )
        .to_string();
        assert_eq!(
            answered,
            "the node answered that it cannot do it now (https://fr.example:7300): DE is unreachable; try again"
        );
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(refused));
        assert_eq!(
            super::call_error("https://fr.example:7300", status).to_string(),
            "the node is not reachable (https://fr.example:7300): Connection refused"
        );
    }

    use adep_proto::v1;
    use clap::ValueEnum as _;

    use crate::{
        followup::StateArg,
        search::{AimArg, PersonCategoryArg},
    };

    /// What one types on the command line is what the CLI prints, for every value.
    #[test]
    fn every_value_is_spelled_as_the_node_spells_it() {
        let typed =
            |v: Option<clap::builder::PossibleValue>| v.expect("a value").get_name().to_owned();
        for (arg, proto) in PersonCategoryArg::value_variants().iter().zip(1..) {
            assert_eq!(
                typed(arg.to_possible_value()),
                super::names::person_category(proto)
            );
        }
        for (arg, proto) in AimArg::value_variants().iter().zip(1..) {
            assert_eq!(typed(arg.to_possible_value()), super::names::aim(proto));
        }
        for arg in StateArg::value_variants() {
            let name = typed(arg.to_possible_value());
            if name != "overdue" {
                let proto = crate::followup::state_of(*arg) as i32;
                assert_eq!(name, super::names::state(proto));
            }
        }
        assert_eq!(
            super::names::state(v1::FollowUpState::OnHold as i32),
            "on-hold"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            super::shell_word("adep-net/FR/officer.toml"),
            "adep-net/FR/officer.toml"
        );
        assert_eq!(
            super::shell_word("my dir/it's.toml"),
            r"'my dir/it'\''s.toml'"
        );
        assert_eq!(super::shell_word(""), "''");
    }
}
