//! What officers and reviewers see of follow-ups: an officer their own outgoing
//! requests, a reviewer the incoming ones, each next to the local record it concerns.

use std::sync::Arc;

use crate::{
    app::{AppError, NodeState, events},
    domain::{
        followup::{Book, Direction, FollowUp, FollowUpId, State},
        identity::Record,
        principals::Role,
    },
    store::unix_now,
};

/// Follow-ups listed when the caller names no limit, and the most it may name.
pub const DEFAULT_LIST: usize = 100;
/// The most follow-ups one list returns.
pub const MAX_LIST: usize = 1000;

/// Which follow-ups to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Incoming (a reviewer's) rather than the caller's outgoing requests.
    pub incoming: bool,
    /// Only those in this state.
    pub state: Option<State>,
    /// Only the undecided ones past their deadline.
    pub overdue: bool,
    /// At most this many (oldest first); None for [`DEFAULT_LIST`].
    pub limit: Option<usize>,
}

/// A page of follow-ups and how many match in all.
#[derive(Clone, Debug)]
pub struct Page {
    /// The follow-ups, oldest first.
    pub follow_ups: Vec<FollowUp>,
    /// How many match the filter.
    pub total: usize,
    /// The time the list was made (for `overdue`).
    pub now: i64,
}

/// Lists follow-ups: an officer's own outgoing ones, or (reviewer) incoming ones.
pub async fn list(
    state: &Arc<NodeState>,
    user: String,
    role: Role,
    filter: Filter,
) -> Result<Page, AppError> {
    let direction = match (role, filter.incoming) {
        (Role::Reviewer, true) => Direction::Incoming,
        (Role::Officer, false) => Direction::Outgoing,
        (Role::Reviewer, false) => {
            return Err(AppError::PermissionDenied(
                "reviewers list incoming follow-ups (--incoming); only officers file requests"
                    .into(),
            ));
        }
        _ => {
            return Err(AppError::PermissionDenied(format!(
                "the {role} role cannot list follow-ups; it needs the officer role (its own requests) or the reviewer role (--incoming)"
            )));
        }
    };
    let limit = match filter.limit {
        None => DEFAULT_LIST,
        Some(n) if n > MAX_LIST => {
            return Err(AppError::Invalid(format!(
                "field `limit`: at most {MAX_LIST}"
            )));
        }
        Some(n) => n,
    };
    let now = unix_now();
    let all = events::followup_work(state, move |state| {
        Ok(Book::new(state.store.as_ref()).list(direction)?)
    })
    .await?;
    let matching: Vec<FollowUp> = all
        .into_iter()
        .filter(|f| direction == Direction::Incoming || f.officer_id == user)
        .filter(|f| filter.state.is_none_or(|w| f.state() == w))
        .filter(|f| !filter.overdue || f.overdue(now))
        .collect();
    Ok(Page {
        total: matching.len(),
        follow_ups: matching.into_iter().take(limit).collect(),
        now,
    })
}

/// Shows one follow-up: an officer's own, or (reviewer) an incoming one next to the
/// local record it concerns.
pub async fn show(
    state: &Arc<NodeState>,
    user: String,
    role: Role,
    id: FollowUpId,
) -> Result<(FollowUp, Option<Record>), AppError> {
    let index = state.index.active();
    let key = id.clone();
    let found = events::followup_work(state, move |state| {
        let book = Book::new(state.store.as_ref());
        Ok(match role {
            Role::Reviewer => match book.get(Direction::Incoming, &key)? {
                Some(f) => {
                    let record = match &f.record {
                        Some(r) => index.record(r)?,
                        None => None,
                    };
                    Some((f, record))
                }
                None => None,
            },
            _ => book
                .get(Direction::Outgoing, &key)?
                .filter(|f| f.officer_id == user)
                .map(|f| (f, None)),
        })
    })
    .await?;
    found.ok_or_else(|| AppError::NotFound("field `id`: no follow-up of yours has this id".into()))
}
