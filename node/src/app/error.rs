//! What a use case answers when it does not do what was asked. The edge maps each
//! variant to one gRPC code ([`crate::grpc::status`]); a second interface would map them
//! to its own.

use crate::{
    domain::{
        epochs::{EpochRefusal, RotationError},
        followup::FollowUpError,
        index::IndexError,
    },
    store::StoreError,
};

/// Why a use case refused or failed. Every message names fields and limits, never a
/// value the caller sent, an identity or a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or over a limit; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// The id is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but not possible now (a closed follow-up, an
    /// expired reference, a rotation under way).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller is over a rate limit.
    #[error("{0}")]
    RateLimited(String),
    /// The store or a peer is unavailable; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of this node.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        tracing::error!(error = %e, "store operation failed");
        AppError::Unavailable("the store failed; nothing was changed, try again".into())
    }
}

impl From<IndexError> for AppError {
    fn from(e: IndexError) -> AppError {
        tracing::error!(error = %e, "index operation failed");
        AppError::Unavailable(format!("the store failed: {e}"))
    }
}

impl From<FollowUpError> for AppError {
    fn from(e: FollowUpError) -> AppError {
        match e {
            FollowUpError::OwnRequest(_) => AppError::PermissionDenied(e.to_string()),
            FollowUpError::Closed { .. }
            | FollowUpError::SameReviewer(_)
            | FollowUpError::RecordErased => AppError::FailedPrecondition(e.to_string()),
        }
    }
}

impl From<EpochRefusal> for AppError {
    /// An epoch this node never served is a malformed call; a retired one, or one
    /// still being built, is a matter of timing: evaluate again.
    fn from(e: EpochRefusal) -> AppError {
        match e {
            EpochRefusal::Unknown { .. } => AppError::Invalid(e.to_string()),
            EpochRefusal::Retired { .. } | EpochRefusal::Building { .. } => {
                AppError::FailedPrecondition(e.to_string())
            }
        }
    }
}

impl From<RotationError> for AppError {
    fn from(e: RotationError) -> AppError {
        tracing::warn!(error = %e, "key rotation step refused");
        AppError::FailedPrecondition(e.to_string())
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(_: tokio::task::JoinError) -> AppError {
        AppError::Internal("a store task failed".into())
    }
}
