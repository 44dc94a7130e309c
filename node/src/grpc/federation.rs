//! The federation service: what peer nodes may call. Each handler checks that the
//! message comes from the country of the caller's certificate, converts, and calls a
//! use case.

use std::sync::Arc;

use adep_proto::v1::{
    DecisionReceipt, EvaluateRequest, EvaluateResponse, FollowUpDecision, FollowUpFiling,
    FollowUpPoll, FollowUpPollResponse, FollowUpReceipt, FollowUpWithdrawal, HelloRequest,
    HelloResponse, MatchRequest, MatchResponse, federation_server::Federation,
};
use tonic::{Request, Response, Status};

use crate::{
    app::{NodeState, answer, evaluate, limits, owner, requester},
    domain::principals::{Country, Principal},
    grpc::{
        convert::{self, Invalid, federation as wire},
        principal,
    },
};

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
            "field `country`: the message claims another country than the certificate's ({country})"
        )));
    }
    tracing::Span::current().record("peer", country.as_str());
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

    #[tracing::instrument(skip_all, fields(rpc = "Evaluate", peer, request_id, subjects))]
    async fn evaluate(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let m = req.get_ref();
        wire::request_id(&m.request_id)?;
        let span = tracing::Span::current();
        span.record("request_id", m.request_id.as_str());
        span.record("subjects", m.subjects.len());
        // The limits first, so that an oversized call is refused before its elements
        // are read.
        let elements: Vec<usize> = m.subjects.iter().map(|s| s.elements.len()).collect();
        evaluate::check_bounds(&self.state, &elements)?;
        let call = evaluate::EvaluateCall::try_from(m)?;
        let evaluation = evaluate::evaluate(&self.state, peer, call).await?;
        Ok(Response::new((&evaluation).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Match", peer, request_id, subjects))]
    async fn r#match(&self, req: Request<MatchRequest>) -> Result<Response<MatchResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        limits::admit_match(&self.state, peer).await?;
        let m = req.get_ref();
        wire::request_id(&m.request_id)?;
        let span = tracing::Span::current();
        span.record("request_id", m.request_id.as_str());
        span.record("subjects", m.subjects.len());
        // The limits first, so that an oversized call is refused before its keys are
        // read.
        let keys: Vec<usize> = m.subjects.iter().map(|s| s.keys.len()).collect();
        answer::check_bounds(&self.state, m.subjects.len(), &keys, "keys")?;
        let call = answer::MatchCall::try_from(m)?;
        let issued = answer::answer(&self.state, peer, call).await?;
        Ok(Response::new(wire::match_response(m, &issued)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "FileFollowUp", peer))]
    async fn file_follow_up(
        &self,
        req: Request<FollowUpFiling>,
    ) -> Result<Response<FollowUpReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let filing = req.into_inner().try_into()?;
        let receipt = owner::file(&self.state, peer, filing).await?;
        Ok(Response::new((&receipt).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "WithdrawFollowUp", peer))]
    async fn withdraw_follow_up(
        &self,
        req: Request<FollowUpWithdrawal>,
    ) -> Result<Response<FollowUpReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let id = convert::followup_id("request_id", &req.get_ref().request_id)?;
        let receipt = owner::withdraw(&self.state, peer, id).await?;
        Ok(Response::new((&receipt).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PollFollowUps", peer))]
    async fn poll_follow_ups(
        &self,
        req: Request<FollowUpPoll>,
    ) -> Result<Response<FollowUpPollResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let ids = &req.get_ref().request_ids;
        if ids.len() > owner::MAX_POLL_IDS {
            return Err(Invalid(format!(
                "field `request_ids`: {} ids exceed the limit of {}",
                ids.len(),
                owner::MAX_POLL_IDS
            ))
            .into());
        }
        let ids = ids
            .iter()
            .enumerate()
            .map(|(i, id)| convert::followup_id(&format!("request_ids[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let receipts = owner::poll(&self.state, peer, ids).await?;
        Ok(Response::new(FollowUpPollResponse {
            receipts: receipts.iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeliverDecision", peer))]
    async fn deliver_decision(
        &self,
        req: Request<FollowUpDecision>,
    ) -> Result<Response<DecisionReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let notice = req.into_inner().try_into()?;
        requester::receive_decision(&self.state, peer, notice).await?;
        Ok(Response::new(DecisionReceipt {}))
    }
}
