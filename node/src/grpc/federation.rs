//! The federation service: what peer nodes may call.

use std::sync::Arc;

use adep_proto::v1::{
    DecisionReceipt, FollowUpDecision, FollowUpFiling, FollowUpPoll, FollowUpPollResponse,
    FollowUpReceipt, FollowUpWithdrawal, HelloRequest, HelloResponse, Hit, MatchRequest,
    MatchResponse, SubjectResult, federation_server::Federation,
};
use tonic::{Request, Response, Status};

use super::{NodeState, convert, followups, principal};
use crate::{
    domain::hitref,
    domain::identity::RecordId,
    domain::principals::Country,
    domain::principals::Principal,
    domain::pseudonymise::{Digest, HashedKey, KeyKind, Quality},
};

/// Longest request id, in bytes.
pub const REQUEST_ID_BYTES: usize = 64;

/// Checks a request id: 1-64 bytes of `A-Za-z0-9-_`.
pub fn check_request_id(id: &str) -> Result<(), Status> {
    if id.is_empty()
        || id.len() > REQUEST_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Status::invalid_argument(
            "field `request_id` must be 1-64 characters of A-Z a-z 0-9 - _",
        ));
    }
    Ok(())
}

/// The subjects of a Match request as hashed keys, within the configured limits.
fn subjects(req: &MatchRequest, state: &NodeState) -> Result<Vec<Vec<HashedKey>>, Status> {
    let limits = &state.config.limits;
    if req.subjects.is_empty() {
        return Err(Status::invalid_argument("field `subjects` is empty"));
    }
    if req.subjects.len() > limits.max_subjects_per_match {
        return Err(Status::invalid_argument(format!(
            "field `subjects`: {} subjects exceed the limit of {} per batch (limits.max_subjects_per_match)",
            req.subjects.len(),
            limits.max_subjects_per_match
        )));
    }
    req.subjects
        .iter()
        .enumerate()
        .map(|(i, subject)| {
            if subject.keys.len() > limits.max_keys_per_subject {
                return Err(Status::invalid_argument(format!(
                    "field `subjects[{i}].keys`: {} keys exceed the limit of {} per subject (limits.max_keys_per_subject)",
                    subject.keys.len(),
                    limits.max_keys_per_subject
                )));
            }
            subject
                .keys
                .iter()
                .enumerate()
                .map(|(j, key)| {
                    let kind = KeyKind::from_code(key.kind).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "field `subjects[{i}].keys[{j}].kind`: {} is not a key kind of scheme v1",
                            key.kind
                        ))
                    })?;
                    let digest = Digest::try_from(key.digest.as_ref()).map_err(|len| {
                        Status::invalid_argument(format!(
                            "field `subjects[{i}].keys[{j}].digest`: {len} bytes, expected {}",
                            crate::domain::pseudonymise::DIGEST_BYTES
                        ))
                    })?;
                    Ok(HashedKey { kind, digest })
                })
                .collect()
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

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

    #[tracing::instrument(skip_all, fields(rpc = "Match", peer, request_id, subjects))]
    async fn r#match(&self, req: Request<MatchRequest>) -> Result<Response<MatchResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        let span = tracing::Span::current();
        span.record("peer", peer.as_str());
        self.state.admit_match(peer).await?;
        let m = req.get_ref();
        check_request_id(&m.request_id)?;
        span.record("request_id", m.request_id.as_str());
        span.record("subjects", m.subjects.len());
        let reason = convert::reason(m.reason.as_ref())?;
        let index = self
            .state
            .index
            .for_match(m.key_epoch)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let subjects = subjects(m, &self.state)?;
        let found = index.lookup(&subjects);
        let hits: Vec<(RecordId, Quality)> = found
            .iter()
            .flatten()
            .map(|f| (f.record.clone(), f.quality))
            .collect();
        let now = now();
        let expires_at = now + self.state.config.matching.hit_ref_ttl.as_secs() as i64;
        let store = self.state.store.clone();
        let request_id = m.request_id.clone();
        let hit_count = hits.len();
        for (_, quality) in &hits {
            self.state.metrics.hits("issued", quality.name(), 1);
        }
        let refs = tokio::task::spawn_blocking(move || {
            hitref::issue(store.as_ref(), &hits, peer, now, expires_at, &request_id)
        })
        .await
        .map_err(|_| Status::internal("issuing hit references failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store hit references");
            Status::unavailable("cannot store hit references; try again")
        })?;
        let mut refs = refs.into_iter();
        let results = m
            .subjects
            .iter()
            .zip(&found)
            .map(|(subject, found)| SubjectResult {
                subject: subject.subject,
                hits: found
                    .iter()
                    .zip(refs.by_ref())
                    .map(|(f, r)| Hit {
                        hit_ref: r.to_string(),
                        quality: convert::quality_to_proto(f.quality) as i32,
                        expires_at,
                    })
                    .collect(),
            })
            .collect();
        tracing::info!(hits = hit_count, "match answered");
        self.state
            .audit(
                "match.received",
                serde_json::json!({
                    "request_id": m.request_id,
                    "peer": peer.as_str(),
                    "reason": convert::reason_json(&reason),
                    "subjects": m.subjects.len(),
                    "subjects_with_hits": found.iter().filter(|f| !f.is_empty()).count(),
                    "hit_refs_issued": hit_count,
                }),
            )
            .await;
        Ok(Response::new(MatchResponse { results }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "FileFollowUp", peer))]
    async fn file_follow_up(
        &self,
        req: Request<FollowUpFiling>,
    ) -> Result<Response<FollowUpReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        tracing::Span::current().record("peer", peer.as_str());
        followups::file(&self.state, peer, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "WithdrawFollowUp", peer))]
    async fn withdraw_follow_up(
        &self,
        req: Request<FollowUpWithdrawal>,
    ) -> Result<Response<FollowUpReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        tracing::Span::current().record("peer", peer.as_str());
        followups::withdraw_incoming(&self.state, peer, req.into_inner().request_id)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "PollFollowUps", peer))]
    async fn poll_follow_ups(
        &self,
        req: Request<FollowUpPoll>,
    ) -> Result<Response<FollowUpPollResponse>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        tracing::Span::current().record("peer", peer.as_str());
        followups::poll(&self.state, peer, req.into_inner().request_ids)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeliverDecision", peer))]
    async fn deliver_decision(
        &self,
        req: Request<FollowUpDecision>,
    ) -> Result<Response<DecisionReceipt>, Status> {
        let peer = calling_peer(&req, &req.get_ref().country)?;
        tracing::Span::current().record("peer", peer.as_str());
        followups::deliver(&self.state, peer, req.into_inner()).await?;
        Ok(Response::new(DecisionReceipt {}))
    }
}
