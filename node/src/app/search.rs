//! Step 1 on the requesting node: an officer's search. The subjects' key texts are
//! derived and blinded once; each peer, concurrently, evaluates the blinded elements
//! under its own key, this node finalizes them into that peer's digests and sends
//! them in a Match; the hits are returned with each peer's status. The cleartext identity stays here: it is
//! remembered with each hit (so a follow-up can name the subject as searched), never
//! sent.

use std::sync::Arc;

use crate::{
    app::{
        AppError, NodeState, events, limits,
        peers::{self, EvaluateQuery, MatchQuery, PeerFailure, PeerInfo, PeerOutcome},
    },
    domain::{
        audit::Event,
        followup::{Book, ReceivedHit, random_hex_id},
        hitref::HitRef,
        identity::Identity,
        principals::Country,
        pseudonymise::{KeyMaterial, Quality, Side, derive_keys, oprf::Blinded},
        reason::Reason,
    },
    store::unix_now,
};

/// Longest a requesting node remembers a hit, whatever the peer says.
const MAX_HIT_MEMORY_SECONDS: i64 = 366 * 24 * 3600;

/// An officer's search.
#[derive(Clone, Debug)]
pub struct Search {
    /// The reason for the query.
    pub reason: Reason,
    /// The subjects, validated.
    pub subjects: Vec<Identity>,
}

/// How one peer answered, as the officer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer.
    pub peer: PeerInfo,
    /// Its answer, or why there is none.
    pub outcome: PeerState,
    /// Milliseconds until the answer or the failure.
    pub latency_ms: u32,
}

/// Where a peer stands after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// It answered.
    Ok,
    /// Not reachable, or its answer was unusable; with the cause.
    Unavailable(String),
    /// No answer before the deadline.
    TimedOut,
    /// It refused this node; with its message.
    Refused(String),
}

impl PeerState {
    /// `ok`, `unavailable`, `timed_out` or `refused`, as audit events name it.
    pub fn name(&self) -> &'static str {
        match self {
            PeerState::Ok => "ok",
            PeerState::Unavailable(_) => "unavailable",
            PeerState::TimedOut => "timed_out",
            PeerState::Refused(_) => "refused",
        }
    }
}

impl<T> From<&PeerOutcome<T>> for PeerReport {
    fn from(o: &PeerOutcome<T>) -> PeerReport {
        let outcome = match &o.result {
            Ok(_) => PeerState::Ok,
            Err(PeerFailure::TimedOut) => PeerState::TimedOut,
            Err(PeerFailure::Unavailable(m)) => PeerState::Unavailable(m.clone()),
            Err(PeerFailure::Refused(m)) => PeerState::Refused(m.clone()),
            Err(PeerFailure::Rejected(_, m)) => PeerState::Unavailable(m.clone()),
        };
        PeerReport {
            peer: o.peer.clone(),
            outcome,
            latency_ms: u32::try_from(o.elapsed.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

/// A hit in a peer, as the officer receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    /// The subject's position in the search.
    pub subject: u32,
    /// The owner node.
    pub country: Country,
    /// The owner's reference for the hit.
    pub hit_ref: HitRef,
    /// Its quality.
    pub quality: Quality,
    /// When the owner stops resolving the reference.
    pub expires_at: i64,
}

/// The outcome of a search.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    /// The search's request id (in both nodes' audit logs).
    pub request_id: String,
    /// Each peer's status, in configuration order.
    pub peers: Vec<PeerReport>,
    /// Every hit.
    pub hits: Vec<SearchHit>,
}

/// Runs an officer's search across every peer.
pub async fn search(
    state: &Arc<NodeState>,
    officer: &str,
    search: Search,
) -> Result<SearchOutcome, AppError> {
    limits::admit_search(state, officer).await?;
    let max = state.config.limits.max_subjects_per_search;
    if search.subjects.is_empty() {
        return Err(AppError::Invalid("field `subjects` is empty".into()));
    }
    if search.subjects.len() > max {
        return Err(AppError::Invalid(format!(
            "field `subjects`: {} subjects exceed the limit of {max} per search (limits.max_subjects_per_search)",
            search.subjects.len()
        )));
    }
    let today = today();
    if let Some(i) = search
        .subjects
        .iter()
        .position(|s| s.date_of_birth.is_after(today))
    {
        return Err(AppError::Invalid(format!(
            "field `subjects[{i}].date_of_birth` is invalid: a date in the future"
        )));
    }
    let max_keys = state.config.limits.max_keys_per_subject;
    let keys: Vec<Vec<KeyMaterial>> = search
        .subjects
        .iter()
        .map(|identity| derive_keys(identity, Side::Query))
        .collect();
    if let Some((i, k)) = keys.iter().enumerate().find(|(_, k)| k.len() > max_keys) {
        return Err(AppError::Invalid(format!(
            "field `subjects[{i}]`: its names derive {} match keys, more than the {max_keys} a peer accepts per subject (limits.max_keys_per_subject); search with fewer aliases or shorter names",
            k.len()
        )));
    }
    let request_id = random_hex_id()
        .ok_or_else(|| AppError::Internal("the system random generator failed".into()))?;
    let span = tracing::Span::current();
    span.record("request_id", request_id.as_str());
    span.record("subjects", search.subjects.len());
    // Blinded once; each peer evaluates the same elements under its own key.
    let blinded = tokio::task::spawn_blocking(move || Blinded::blind(keys))
        .await?
        .ok_or_else(|| AppError::Internal("the system random generator failed".into()))?;
    let blinded = Arc::new(blinded);
    let evaluate = Arc::new(EvaluateQuery {
        request_id: request_id.clone(),
        subjects: blinded.elements().to_vec(),
    });
    let head = state.audit.checkpoint(unix_now());
    let reason = search.reason.clone();
    let subject_count = search.subjects.len() as u32;
    let id = request_id.clone();
    let outcomes = peers::fan_out(&state.peers, move |peers, peer| {
        let blinded = blinded.clone();
        let evaluate = evaluate.clone();
        let (request_id, reason, head) = (id.clone(), reason.clone(), head.clone());
        Box::pin(async move {
            let evaluation = peers.evaluate(peer, evaluate).await?;
            let epoch = evaluation.epoch;
            let subjects =
                tokio::task::spawn_blocking(move || blinded.finalize(&evaluation.subjects))
                    .await
                    .map_err(|_| PeerFailure::Unavailable("the finalizing task failed".into()))?
                    .map_err(|e| {
                        PeerFailure::Unavailable(format!("the peer's evaluation is unusable: {e}"))
                    })?;
            let query = Arc::new(MatchQuery {
                request_id,
                reason,
                epoch,
                head,
                subjects,
            });
            peers.match_keys(peer, query).await
        })
    })
    .await;
    count_peer_calls(state, "Match", &outcomes);
    let mut hits = Vec::new();
    let mut reports = Vec::with_capacity(outcomes.len());
    for outcome in &outcomes {
        let mut report = PeerReport::from(outcome);
        if let Ok(answer) = &outcome.result {
            if answer.iter().any(|h| h.subject >= subject_count) {
                report.outcome = PeerState::Unavailable(
                    "the peer answered for subjects that were not asked".into(),
                );
            } else {
                for hit in answer {
                    state.metrics.hits("received", hit.quality.name(), 1);
                    hits.push(SearchHit {
                        subject: hit.subject,
                        country: outcome.peer.country,
                        hit_ref: hit.hit_ref,
                        quality: hit.quality,
                        expires_at: hit.expires_at,
                    });
                }
            }
        }
        reports.push(report);
    }
    remember(state, &hits, &search.subjects, &request_id, &search.reason).await?;
    drop(search.subjects);
    let ok = reports
        .iter()
        .filter(|p| p.outcome == PeerState::Ok)
        .count();
    events::record(
        state,
        Event::new(
            "search.sent",
            serde_json::json!({
                "request_id": request_id,
                "officer": officer,
                "reason": search.reason.audit_fields(),
                "subjects": subject_count,
                "peers": reports.iter().map(|p| serde_json::json!({
                    "country": p.peer.country.as_str(),
                    "status": p.outcome.name(),
                    "hits": hits.iter().filter(|h| h.country == p.peer.country).count(),
                })).collect::<Vec<_>>(),
            }),
        ),
    )
    .await;
    tracing::info!(
        peers = reports.len(),
        peers_ok = ok,
        hits = hits.len(),
        "search answered"
    );
    Ok(SearchOutcome {
        request_id,
        peers: reports,
        hits,
    })
}

/// The latest date it is anywhere on Earth, as (year, month, day): today at UTC+14
/// (Kiribati), so that a birth registered today in any time zone is not "in the
/// future" here.
fn today() -> (u16, u8, u8) {
    const EARLIEST_ZONE: std::time::Duration = std::time::Duration::from_secs(14 * 3600);
    let now =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + EARLIEST_ZONE).to_string();
    let part = |range: std::ops::Range<usize>| now.get(range).and_then(|p| p.parse().ok());
    match (part(0..4), part(5..7), part(8..10)) {
        (Some(y), Some(m), Some(d)) => (y, m as u8, d as u8),
        // Not reached: RFC 3339 always starts YYYY-MM-DD. Refuse nothing then.
        _ => (u16::MAX, 12, 31),
    }
}

/// Remembers each hit with the subject as searched, so that a follow-up can be filed
/// for it (and tell the owner who the requesting state is looking for).
async fn remember(
    state: &Arc<NodeState>,
    hits: &[SearchHit],
    subjects: &[Identity],
    request_id: &str,
    reason: &Reason,
) -> Result<(), AppError> {
    let now = unix_now();
    let received: Vec<(HitRef, ReceivedHit)> = hits
        .iter()
        .filter_map(|h| {
            Some((
                h.hit_ref,
                ReceivedHit {
                    country: h.country,
                    quality: h.quality,
                    // A peer's answer: kept at most a year, whatever it says.
                    expires_at: h.expires_at.min(now + MAX_HIT_MEMORY_SECONDS),
                    subject: subjects.get(h.subject as usize)?.clone(),
                    request_id: request_id.to_owned(),
                    reason: reason.clone(),
                },
            ))
        })
        .collect();
    if received.is_empty() {
        return Ok(());
    }
    // Writes only new keys: no follow-up is read or changed, so this does not wait
    // for the follow-up lock (a search stays off it).
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || Book::new(store.as_ref()).remember_hits(&received))
        .await??;
    Ok(())
}

/// Counts and times the calls of a fan-out to the peers.
pub fn count_peer_calls<T>(state: &NodeState, rpc: &'static str, outcomes: &[PeerOutcome<T>]) {
    for o in outcomes {
        state
            .metrics
            .peer_call(o.peer.country.as_str(), rpc, o.outcome_name(), o.elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{
        peers::PeerHit,
        testkit::{Behaviour, FakePeers, audit_kinds, mueller, node_with, reason},
    };

    #[tokio::test]
    async fn reports_each_peer_on_its_own_and_remembers_the_hits() {
        let hit = PeerHit {
            subject: 0,
            hit_ref: "ab".repeat(20).parse().expect("a hit reference"),
            quality: Quality::Strong,
            expires_at: unix_now() + 3600,
        };
        let peers = FakePeers::new(&[
            (
                "DE",
                Behaviour::Answers {
                    hits: vec![hit.clone()],
                    state: crate::domain::followup::State::Pending,
                },
            ),
            ("ES", Behaviour::Fails(PeerFailure::TimedOut)),
            (
                "IT",
                Behaviour::Fails(PeerFailure::Refused("over the rate limit".into())),
            ),
        ]);
        let node = node_with("FR", peers, |_| {});
        let subject = mueller("fr-1").identity;
        let outcome = search(
            &node.state,
            "officer-1",
            Search {
                reason: reason(),
                subjects: vec![subject.clone()],
            },
        )
        .await
        .expect("the search runs");

        let states: Vec<(String, PeerState)> = outcome
            .peers
            .iter()
            .map(|p| (p.peer.country.to_string(), p.outcome.clone()))
            .collect();
        assert_eq!(
            states,
            [
                ("DE".to_owned(), PeerState::Ok),
                ("ES".to_owned(), PeerState::TimedOut),
                (
                    "IT".to_owned(),
                    PeerState::Refused("over the rate limit".into())
                ),
            ]
        );
        assert_eq!(outcome.hits.len(), 1);
        assert_eq!(outcome.hits[0].country.as_str(), "DE");
        assert_eq!(outcome.hits[0].hit_ref, hit.hit_ref);
        let remembered = Book::new(node.state.store.as_ref())
            .received_hit(&hit.hit_ref)
            .expect("the store reads")
            .expect("the hit is remembered");
        assert_eq!(remembered.subject, subject);
        assert_eq!(remembered.request_id, outcome.request_id);
        assert_eq!(audit_kinds(&node), ["search.sent"]);
    }

    #[tokio::test]
    async fn refuses_a_search_without_subjects_and_an_answer_about_unasked_subjects() {
        let node = node_with(
            "FR",
            FakePeers::new(&[(
                "DE",
                Behaviour::Answers {
                    hits: vec![PeerHit {
                        subject: 3,
                        hit_ref: "cd".repeat(20).parse().expect("a hit reference"),
                        quality: Quality::Exact,
                        expires_at: unix_now() + 3600,
                    }],
                    state: crate::domain::followup::State::Pending,
                },
            )]),
            |_| {},
        );
        let empty = search(
            &node.state,
            "officer-1",
            Search {
                reason: reason(),
                subjects: Vec::new(),
            },
        )
        .await;
        assert_eq!(
            empty.expect_err("no subject").to_string(),
            "field `subjects` is empty"
        );
        let outcome = search(
            &node.state,
            "officer-1",
            Search {
                reason: reason(),
                subjects: vec![mueller("fr-1").identity],
            },
        )
        .await
        .expect("the search runs");
        assert!(outcome.hits.is_empty());
        assert!(
            matches!(&outcome.peers[0].outcome, PeerState::Unavailable(m) if m.contains("not asked"))
        );
    }

    #[tokio::test]
    async fn a_subject_deriving_more_keys_than_a_peer_accepts_is_refused_before_sending() {
        let peers = FakePeers::new(&[(
            "DE",
            Behaviour::Answers {
                hits: Vec::new(),
                state: crate::domain::followup::State::Pending,
            },
        )]);
        let node = node_with("FR", peers, |_| {});
        // U+FDFA expands to 18 characters under NFKC: 100 of them pass the field checks
        // (100 characters) and derive 1,027 query keys.
        let long = Identity::from_fields(&"\u{fdfa}".repeat(100), "x", "1970-01-02", &[])
            .expect("valid fields");
        let refused = search(
            &node.state,
            "officer-1",
            Search {
                reason: reason(),
                subjects: vec![mueller("fr-1").identity, long],
            },
        )
        .await
        .expect_err("over limits.max_keys_per_subject");
        assert_eq!(
            refused.to_string(),
            "field `subjects[1]`: its names derive 1027 match keys, more than the 1024 a peer accepts per subject (limits.max_keys_per_subject); search with fewer aliases or shorter names"
        );
        assert!(audit_kinds(&node).is_empty(), "nothing was sent");
    }

    #[tokio::test]
    async fn a_date_of_birth_in_the_future_is_refused_before_sending() {
        let node = node_with("FR", FakePeers::new(&[]), |_| {});
        let (year, month, day) = today();
        let born = |dob: &str| Identity::from_fields("Müller", "Hans", dob, &[]).expect("valid");
        let next_year = format!("{}", year + 1);
        let tomorrow_or_next_month = if day < 28 {
            format!("{year:04}-{month:02}-{:02}", day + 1)
        } else if month < 12 {
            format!("{year:04}-{:02}", month + 1)
        } else {
            next_year.clone()
        };
        for future in [next_year, tomorrow_or_next_month] {
            let refused = search(
                &node.state,
                "officer-1",
                Search {
                    reason: reason(),
                    subjects: vec![mueller("fr-1").identity, born(&future)],
                },
            )
            .await
            .expect_err("a birth that has not happened");
            assert_eq!(
                refused.to_string(),
                "field `subjects[1].date_of_birth` is invalid: a date in the future",
                "{future}"
            );
        }
        // This year, or this month, may be today: searched.
        let this_month = format!("{year:04}-{month:02}");
        assert!(!born(&this_month).date_of_birth.is_after((year, month, day)));
        assert!(audit_kinds(&node).is_empty(), "nothing was sent");
    }
}
