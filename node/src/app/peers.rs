//! Talking to peer nodes, in domain types. The edge implements [`PeerNetwork`] with
//! gRPC clients over mutual TLS (deadlines, failure classes); unit tests implement it
//! with a fake. [`fan_out`] calls every peer concurrently, so one slow or dead peer
//! never holds up the answers of the others.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::app::evaluate::Evaluation;
use crate::domain::{
    audit::Checkpoint,
    followup::{DecisionNotice, Filing, FollowUpId, Receipt},
    hitref::HitRef,
    principals::Country,
    pseudonymise::{HashedKey, KeyEpoch, Quality, oprf::Element},
    reason::Reason,
};

/// A peer as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's country.
    pub country: Country,
    /// Its federation endpoint, as configured.
    pub endpoint: String,
}

/// How a call to one peer ended, when it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFailure {
    /// No answer before the deadline.
    TimedOut,
    /// Not reachable, the connection failed, or the answer was malformed.
    Unavailable(String),
    /// The peer refused us (authentication, permission, rate limit).
    Refused(String),
    /// The peer answered the call with an error about it.
    Rejected(Rejection, String),
}

impl std::fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerFailure::TimedOut => f.write_str("no answer before the deadline"),
            PeerFailure::Unavailable(m) => write!(f, "unavailable: {m}"),
            PeerFailure::Refused(m) => write!(f, "refused: {m}"),
            PeerFailure::Rejected(_, m) => f.write_str(m),
        }
    }
}

/// What kind of error a peer answered a call with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The request was malformed.
    Invalid,
    /// What it names does not exist there.
    NotFound,
    /// The id is taken there.
    AlreadyExists,
    /// Not possible now (expired, closed).
    FailedPrecondition,
    /// Another error.
    Other,
}

impl PeerFailure {
    /// The outcome's name in metrics and audit events.
    pub fn name(&self) -> &'static str {
        match self {
            PeerFailure::TimedOut => "timed_out",
            PeerFailure::Unavailable(_) => "unavailable",
            PeerFailure::Refused(_) => "refused",
            PeerFailure::Rejected(..) => "failed",
        }
    }
}

/// An Evaluate call: the blinded elements of each subject of a search.
#[derive(Clone, Debug)]
pub struct EvaluateQuery {
    /// The search's request id.
    pub request_id: String,
    /// Each subject's blinded elements, in the order of its keys.
    pub subjects: Vec<Vec<Element>>,
}

/// A Match call: the digests of each subject of a search under one peer's key of an
/// epoch.
#[derive(Clone, Debug)]
pub struct MatchQuery {
    /// The search's request id.
    pub request_id: String,
    /// The reason of the search.
    pub reason: Reason,
    /// The key epoch the digests were made under.
    pub epoch: KeyEpoch,
    /// Each subject's keys, in the order of the search.
    pub subjects: Vec<Vec<HashedKey>>,
    /// This node's audit head, for the peer's log.
    pub head: Checkpoint,
}

/// A hit a peer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHit {
    /// The subject's position in the query.
    pub subject: u32,
    /// The peer's reference for the hit.
    pub hit_ref: HitRef,
    /// Its quality.
    pub quality: Quality,
    /// When the peer stops resolving the reference.
    pub expires_at: i64,
}

/// A boxed future, for the methods of [`PeerNetwork`].
pub type PeerCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, PeerFailure>> + Send + 'a>>;

/// The federation API of every peer, as this node calls it.
pub trait PeerNetwork: Send + Sync + std::fmt::Debug {
    /// Every configured peer, in configuration order.
    fn peers(&self) -> Vec<PeerInfo>;

    /// Whether `peer` answers and speaks this node's protocol.
    fn hello(&self, peer: Country) -> PeerCall<'_, ()>;

    /// Has `peer` evaluate a search's blinded elements under its own key.
    fn evaluate(&self, peer: Country, query: Arc<EvaluateQuery>) -> PeerCall<'_, Evaluation>;

    /// Looks a search's digests up in `peer`'s index.
    fn match_keys(&self, peer: Country, query: Arc<MatchQuery>) -> PeerCall<'_, Vec<PeerHit>>;

    /// Files a follow-up request with the owner node `peer`.
    fn file(&self, peer: Country, filing: Filing) -> PeerCall<'_, Receipt>;

    /// Withdraws one of this node's requests at `peer`.
    fn withdraw(&self, peer: Country, id: FollowUpId) -> PeerCall<'_, Receipt>;

    /// Asks `peer` where this node's requests stand.
    fn poll(&self, peer: Country, ids: Vec<FollowUpId>) -> PeerCall<'_, Vec<Receipt>>;

    /// Delivers a decision to the requesting node `peer`.
    fn deliver(&self, peer: Country, decision: DecisionNotice) -> PeerCall<'_, ()>;
}

/// One peer's outcome in a fan-out.
#[derive(Debug)]
pub struct PeerOutcome<T> {
    /// The peer.
    pub peer: PeerInfo,
    /// The answer or why there is none.
    pub result: Result<T, PeerFailure>,
    /// Time until the answer or the failure.
    pub elapsed: Duration,
}

impl<T> PeerOutcome<T> {
    /// The outcome's name in metrics: `ok`, `timed_out`, `unavailable`, `refused` or
    /// `failed`.
    pub fn outcome_name(&self) -> &'static str {
        match &self.result {
            Ok(_) => "ok",
            Err(f) => f.name(),
        }
    }
}

/// Calls every peer concurrently and returns every outcome in configuration order
/// once all have answered or failed (each call is bounded by the peer client's
/// deadline).
pub async fn fan_out<T, F>(peers: &Arc<dyn PeerNetwork>, call: F) -> Vec<PeerOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn PeerNetwork>, Country) -> PeerCall<'static, T>,
{
    let all = peers.peers();
    let mut set = JoinSet::new();
    for (i, peer) in all.iter().enumerate() {
        let fut = call(peers.clone(), peer.country);
        set.spawn(async move {
            let start = Instant::now();
            let result = fut.await;
            (i, result, start.elapsed())
        });
    }
    let mut results: Vec<Option<(Result<T, PeerFailure>, Duration)>> =
        (0..all.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, result, elapsed)) = joined {
            results[i] = Some((result, elapsed));
        }
    }
    all.into_iter()
        .zip(results)
        .map(|(peer, r)| {
            let (result, elapsed) = r.unwrap_or((
                Err(PeerFailure::Unavailable("the call task failed".into())),
                Duration::ZERO,
            ));
            PeerOutcome {
                peer,
                result,
                elapsed,
            }
        })
        .collect()
}
