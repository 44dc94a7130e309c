//! The national service: what the state's own users may call through the CLI.

use std::sync::Arc;

use adep_proto::v1::{
    Caller, HelloRequest, PeerState, PeerStatus, StatusRequest, StatusResponse, StoreInfo,
    national_server::National,
};
use tonic::{Request, Response, Status};

use super::{NodeState, user_with_role};
use crate::{config::Role, peers::PeerFailure};

/// Handlers of the national API.
#[derive(Clone, Debug)]
pub struct NationalService {
    state: Arc<NodeState>,
}

impl NationalService {
    /// The service over the node's shared state.
    pub fn new(state: Arc<NodeState>) -> NationalService {
        NationalService { state }
    }
}

/// The proto role of a configured role.
pub fn role_to_proto(role: Role) -> adep_proto::v1::Role {
    match role {
        Role::Officer => adep_proto::v1::Role::Officer,
        Role::Reviewer => adep_proto::v1::Role::Reviewer,
        Role::Operator => adep_proto::v1::Role::Operator,
        Role::Auditor => adep_proto::v1::Role::Auditor,
    }
}

#[tonic::async_trait]
impl National for NationalService {
    #[tracing::instrument(skip_all, fields(rpc = "Status"))]
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (user, role) = user_with_role(&req, &Role::ALL)?;
        let config = &self.state.config;
        let peers = if req.get_ref().check_peers {
            let own = config.country.to_string();
            self.state
                .peers
                .fan_out(config.limits.peer_timeout(), move |peer| {
                    let mut client = peer.client;
                    let hello = HelloRequest {
                        country: own.clone(),
                        protocol_version: adep_proto::PROTOCOL_VERSION,
                    };
                    async move { client.hello(hello).await.map(Response::into_inner) }
                })
                .await
                .into_iter()
                .map(|o| {
                    let (state, detail) = match o.result {
                        Ok(_) => (PeerState::Ok, String::new()),
                        Err(PeerFailure::TimedOut) => {
                            (PeerState::TimedOut, "no answer before the deadline".into())
                        }
                        Err(PeerFailure::Unavailable(m)) => (PeerState::Unavailable, m),
                        Err(PeerFailure::Refused(m)) => (PeerState::Refused, m),
                        Err(PeerFailure::Failed(m)) => (PeerState::Unavailable, m),
                    };
                    PeerStatus {
                        country: o.country.to_string(),
                        endpoint: o.endpoint,
                        state: state as i32,
                        detail,
                        latency_ms: u32::try_from(o.elapsed.as_millis()).unwrap_or(u32::MAX),
                    }
                })
                .collect()
        } else {
            self.state
                .peers
                .iter()
                .map(|p| PeerStatus {
                    country: p.country.to_string(),
                    endpoint: p.endpoint.clone(),
                    state: PeerState::Unchecked as i32,
                    detail: String::new(),
                    latency_ms: 0,
                })
                .collect()
        };
        let info = &self.state.store_info;
        Ok(Response::new(StatusResponse {
            country: config.country.to_string(),
            node_version: env!("CARGO_PKG_VERSION").to_owned(),
            caller: Some(Caller {
                user_id: user.to_owned(),
                role: role_to_proto(role) as i32,
            }),
            store: Some(StoreInfo {
                schema_version: info.schema_version,
                engine: info.engine.to_owned(),
                created_at: info.created_at,
                starts: info.starts,
            }),
            peers,
        }))
    }
}
