//! The federation service: what peer nodes may call.

use std::sync::Arc;

use adep_proto::v1::{HelloRequest, HelloResponse, federation_server::Federation};
use tonic::{Request, Response, Status};

use super::{NodeState, principal};
use crate::{auth::Principal, config::Country};

/// Handlers of the federation API.
#[derive(Clone, Debug)]
pub struct FederationService {
    state: Arc<NodeState>,
}

impl FederationService {
    /// The service over the node's shared state.
    pub fn new(state: Arc<NodeState>) -> FederationService {
        FederationService { state }
    }
}

/// The calling peer, checked against the country a message claims to come from.
fn calling_peer<T>(req: &Request<T>, claimed: &str) -> Result<Country, Status> {
    let Principal::Peer(country) = principal(req)? else {
        return Err(Status::permission_denied(
            "only peer nodes call the federation API",
        ));
    };
    if claimed != country.as_str() {
        return Err(Status::permission_denied(format!(
            "field `country`: the message claims {}, but the certificate is of {country}",
            claimed.escape_debug()
        )));
    }
    Ok(*country)
}

#[tonic::async_trait]
impl Federation for FederationService {
    #[tracing::instrument(skip_all, fields(rpc = "Hello"))]
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let version = req.get_ref().protocol_version;
        if version != adep_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "field `protocol_version`: {version} is not supported; this node speaks {}",
                adep_proto::PROTOCOL_VERSION
            )));
        }
        tracing::debug!(peer = %peer, "hello");
        Ok(Response::new(HelloResponse {
            country: self.state.config.country.to_string(),
            protocol_version: adep_proto::PROTOCOL_VERSION,
        }))
    }
}
