//! The gRPC edge: who is calling (TLS, admission), thin handlers that convert proto
//! to domain types once ([`convert`]), call a use case of [`crate::app`] and map its
//! errors to a `Status` in one place ([`status`]); and the peer clients, the only code
//! that builds outbound proto messages ([`peers`]).

pub mod auth;
pub mod connections;
pub mod convert;
pub mod credentials;
pub mod federation;
pub mod national;
pub mod observe;
pub mod peers;
pub mod server;
pub mod status;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::{
    domain::principals::{Principal, Role},
    grpc::{auth::Authorizer, tls::ConnInfo},
};

/// Marks a call to the gRPC health service, which answers without a client
/// certificate so that container probes can use it (set by [`observe`] from the
/// request path; the health service says only whether the node serves).
#[derive(Clone, Copy, Debug)]
pub struct HealthCheck;

/// The interceptor every service of a listener runs behind: it turns the connection's
/// certificate into a [`Principal`] stored in the request, or refuses the call.
pub fn authorize_call(authorizer: Arc<Authorizer>) -> impl tonic::service::Interceptor + Clone {
    move |mut req: Request<()>| {
        if req.extensions().get::<HealthCheck>().is_some() {
            return Ok(req);
        }
        let info = req
            .extensions()
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("connection information is missing"))?;
        match authorizer.authorize(&info.authn) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                Ok(req)
            }
            Err(refusal) => {
                tracing::info!(remote = %info.remote, reason = %refusal, "call refused");
                Err(status::refused(refusal))
            }
        }
    }
}

/// The principal the interceptor stored.
pub fn principal<T>(req: &Request<T>) -> Result<&Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("the caller is not authenticated"))
}

/// The calling national user, if their role is one of `roles`.
pub fn user_with_role<T>(req: &Request<T>, roles: &[Role]) -> Result<(String, Role), Status> {
    match principal(req)? {
        Principal::User { id, role } if roles.contains(role) => Ok((id.clone(), *role)),
        Principal::User { role, .. } => {
            let needed: Vec<String> = roles.iter().map(|r| format!("{r}")).collect();
            Err(Status::permission_denied(format!(
                "the {role} role cannot make this call; it needs the {} role",
                needed.join(" or ")
            )))
        }
        Principal::Peer(_) => Err(Status::permission_denied(
            "a peer node cannot call the national API",
        )),
    }
}
