//! The one mapping from the application's errors, and from admission refusals, to
//! gRPC status codes.

use tonic::Status;

use crate::{app::AppError, grpc::auth::Refusal};

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        match e {
            AppError::Invalid(m) => Status::invalid_argument(m),
            AppError::NotFound(m) => Status::not_found(m),
            AppError::AlreadyExists(m) => Status::already_exists(m),
            AppError::FailedPrecondition(m) => Status::failed_precondition(m),
            AppError::PermissionDenied(m) => Status::permission_denied(m),
            AppError::RateLimited(m) => Status::resource_exhausted(m),
            AppError::Unavailable(m) => Status::unavailable(m),
            AppError::Internal(m) => Status::internal(m),
        }
    }
}

/// The status of a refused caller.
pub fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Unauthenticated(m) => Status::unauthenticated(m),
        Refusal::PermissionDenied(m) => Status::permission_denied(m),
    }
}
