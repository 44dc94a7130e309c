//! Per-peer and per-officer call rates (DESIGN section 8): over them, a call is
//! refused and the refusal audited.

use std::{num::NonZeroU32, sync::Arc};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{
    app::{AppError, NodeState, events},
    config::Limits,
    domain::{audit::Event, principals::Country},
    metrics::RpcLabels,
};

/// The rate limiters of a node.
#[derive(Debug)]
pub struct RateLimits {
    matches: DefaultKeyedRateLimiter<Country>,
    evaluations: DefaultKeyedRateLimiter<Country>,
    searches: DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// Limits from the configuration.
    pub fn new(limits: &Limits) -> RateLimits {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        RateLimits {
            matches: RateLimiter::keyed(per_minute(limits.matches_per_minute_per_peer)),
            evaluations: RateLimiter::keyed(per_minute(limits.evaluations_per_minute_per_peer)),
            searches: RateLimiter::keyed(per_minute(limits.searches_per_minute_per_officer)),
        }
    }
}

/// Admits one Match call of `peer`, or refuses it (an audit event).
pub async fn admit_match(state: &Arc<NodeState>, peer: Country) -> Result<(), AppError> {
    if state.rate_limits.matches.check_key(&peer).is_ok() {
        return Ok(());
    }
    tracing::warn!(peer = %peer, "Match refused: rate limit");
    count(state, "federation", "Match");
    events::record(
        state,
        Event::new(
            "rate_limited",
            serde_json::json!({ "rpc": "Match", "peer": peer.as_str() }),
        ),
    )
    .await;
    Err(AppError::RateLimited(format!(
        "{peer} made more than {} Match calls in a minute (limits.matches_per_minute_per_peer); try again later",
        state.config.limits.matches_per_minute_per_peer
    )))
}

/// Admits the evaluation of `elements` blinded elements for `peer`, or refuses it (an
/// audit event with the count).
pub async fn admit_evaluations(
    state: &Arc<NodeState>,
    peer: Country,
    elements: usize,
) -> Result<(), AppError> {
    let admitted = u32::try_from(elements)
        .ok()
        .and_then(NonZeroU32::new)
        .is_none_or(|n| {
            matches!(
                state.rate_limits.evaluations.check_key_n(&peer, n),
                Ok(Ok(_))
            )
        });
    if admitted {
        return Ok(());
    }
    tracing::warn!(peer = %peer, elements, "Evaluate refused: rate limit");
    count(state, "federation", "Evaluate");
    events::record(
        state,
        Event::new(
            "rate_limited",
            serde_json::json!({ "rpc": "Evaluate", "peer": peer.as_str(), "elements": elements }),
        ),
    )
    .await;
    Err(AppError::RateLimited(format!(
        "{peer} asked for more than {} evaluations in a minute (limits.evaluations_per_minute_per_peer); try again later",
        state.config.limits.evaluations_per_minute_per_peer
    )))
}

/// Admits one search by `officer`, or refuses it (an audit event).
pub async fn admit_search(state: &Arc<NodeState>, officer: &str) -> Result<(), AppError> {
    if state
        .rate_limits
        .searches
        .check_key(&officer.to_owned())
        .is_ok()
    {
        return Ok(());
    }
    tracing::warn!(officer, "Search refused: rate limit");
    count(state, "national", "Search");
    events::record(
        state,
        Event::new(
            "rate_limited",
            serde_json::json!({ "rpc": "Search", "officer": officer }),
        ),
    )
    .await;
    Err(AppError::RateLimited(format!(
        "more than {} searches in a minute (limits.searches_per_minute_per_officer); try again later",
        state.config.limits.searches_per_minute_per_officer
    )))
}

fn count(state: &NodeState, listener: &'static str, rpc: &'static str) {
    state
        .metrics
        .rate_limited
        .get_or_create(&RpcLabels { listener, rpc })
        .inc();
}
