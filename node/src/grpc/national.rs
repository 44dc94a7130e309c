//! The national service: what the state's own users may call through the CLI.

use std::sync::Arc;

use std::{collections::HashMap, pin::Pin};

use adep_proto::v1::{
    AuditEntry, AuditExportRequest, Caller, CertificateExpiry, CountRecordsRequest,
    CountRecordsResponse, DecideFollowUpRequest, DeleteRecordsRequest, DeleteRecordsResponse,
    FollowUp, HelloRequest, ImportMode as ProtoImportMode, ImportProgress, ImportRequest,
    ImportSummary as ProtoImportSummary, ListFollowUpsRequest, ListFollowUpsResponse, MatchKey,
    MatchRequest, MatchSubject, PeerState, PeerStatus, ReloadCertificatesRequest,
    ReloadCertificatesResponse, RequestFollowUpRequest, RotateAction, RotateKeysRequest,
    RotateKeysResponse, SearchHit, SearchRequest, SearchResponse, ShowFollowUpRequest,
    StatusRequest, StatusResponse, StoreInfo, VerifyAuditRequest, VerifyAuditResponse,
    WithdrawFollowUpRequest, national_server::National,
};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{NodeState, convert, followups, user_with_role};
use crate::{
    domain::followup::ReceivedHit,
    domain::identity::RecordId,
    domain::index::{ImportMode, IndexError, Progress},
    domain::principals::Role,
    domain::pseudonymise::Side,
    grpc::peers::{PeerFailure, PeerOutcome},
};

/// Records per message the CLI sends in an import (the node accepts any size within
/// the message limit).
pub const IMPORT_BATCH: usize = 1_000;

/// Most ids in one DeleteRecords call.
pub const MAX_DELETE_IDS: usize = 100_000;

/// A peer state as audit events name it.
fn peer_state_name(state: i32) -> &'static str {
    match PeerState::try_from(state) {
        Ok(PeerState::Ok) => "ok",
        Ok(PeerState::Unavailable) => "unavailable",
        Ok(PeerState::TimedOut) => "timed_out",
        Ok(PeerState::Refused) => "refused",
        _ => "unknown",
    }
}

/// The status an officer or operator sees for one peer's outcome.
fn peer_status<T>(o: &PeerOutcome<T>) -> PeerStatus {
    let (state, detail) = match &o.result {
        Ok(_) => (PeerState::Ok, String::new()),
        Err(PeerFailure::TimedOut) => (PeerState::TimedOut, "no answer before the deadline".into()),
        Err(PeerFailure::Unavailable(m)) => (PeerState::Unavailable, m.clone()),
        Err(PeerFailure::Refused(m)) => (PeerState::Refused, m.clone()),
        Err(PeerFailure::Failed(m)) => (PeerState::Unavailable, m.clone()),
    };
    PeerStatus {
        country: o.country.to_string(),
        endpoint: o.endpoint.clone(),
        state: state as i32,
        detail,
        latency_ms: u32::try_from(o.elapsed.as_millis()).unwrap_or(u32::MAX),
    }
}

fn index_error(e: IndexError) -> Status {
    tracing::error!(error = %e, "index operation failed");
    Status::unavailable(format!("the store failed: {e}"))
}

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
            let outcomes = self
                .state
                .peers
                .fan_out(config.limits.peer_timeout(), move |peer| {
                    let mut client = peer.client;
                    let hello = HelloRequest {
                        country: own.clone(),
                        protocol_version: adep_proto::PROTOCOL_VERSION,
                    };
                    async move { client.hello(hello).await.map(Response::into_inner) }
                })
                .await;
            self.state.count_peer_calls("Hello", &outcomes);
            outcomes.iter().map(peer_status).collect()
        } else {
            self.state
                .peers
                .all()
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

    type ImportRecordsStream =
        Pin<Box<dyn Stream<Item = Result<ImportProgress, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all, fields(rpc = "Search", request_id, subjects))]
    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let officer = user_with_role(&req, &[Role::Officer])?.0.to_owned();
        let state = &self.state;
        state.admit_search(&officer).await?;
        let search = req.get_ref();
        let reason = convert::reason(search.reason.as_ref())?;
        let max = state.config.limits.max_subjects_per_search;
        if search.subjects.is_empty() {
            return Err(Status::invalid_argument("field `subjects` is empty"));
        }
        if search.subjects.len() > max {
            return Err(Status::invalid_argument(format!(
                "field `subjects`: {} subjects exceed the limit of {max} per search (limits.max_subjects_per_search)",
                search.subjects.len()
            )));
        }
        let identities = search
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| convert::identity("subjects", i, s))
            .collect::<Result<Vec<_>, Status>>()?;
        // Searches go out under the active epoch; in a rotation's transition the
        // peers may not have the next one yet.
        let index = state.index.active();
        let pseudonymiser = index.pseudonymiser();
        let subjects: Vec<MatchSubject> = identities
            .iter()
            .enumerate()
            .map(|(i, identity)| MatchSubject {
                subject: i as u32,
                keys: pseudonymiser
                    .hash_identity(identity, Side::Query)
                    .into_iter()
                    .map(|k| MatchKey {
                        kind: k.kind.code(),
                        digest: prost::bytes::Bytes::copy_from_slice(&k.digest.0),
                    })
                    .collect(),
            })
            .collect();
        let request_id = super::random_id()?;
        let span = tracing::Span::current();
        span.record("request_id", request_id.as_str());
        span.record("subjects", subjects.len());
        let request = Arc::new(MatchRequest {
            request_id: request_id.clone(),
            country: state.config.country.to_string(),
            key_epoch: index.epoch().0,
            reason: Some(convert::reason_to_proto(&reason)),
            subjects,
        });
        let subject_count = request.subjects.len() as u32;
        let outcomes = state
            .peers
            .fan_out(state.config.limits.peer_timeout(), move |peer| {
                let mut client = peer.client;
                let request = (*request).clone();
                async move { client.r#match(request).await.map(Response::into_inner) }
            })
            .await;
        state.count_peer_calls("Match", &outcomes);
        let mut hits = Vec::new();
        let mut peers = Vec::with_capacity(outcomes.len());
        for outcome in &outcomes {
            let mut status = peer_status(outcome);
            if let Ok(answer) = &outcome.result {
                let bad = answer.results.iter().any(|r| r.subject >= subject_count);
                if bad {
                    status.state = PeerState::Unavailable as i32;
                    status.detail = "the peer answered for subjects that were not asked".into();
                } else {
                    for result in &answer.results {
                        for hit in &result.hits {
                            if let Some(q) = convert::quality_from_proto(hit.quality) {
                                state.metrics.hits("received", q.name(), 1);
                            }
                            hits.push(SearchHit {
                                subject: result.subject,
                                country: outcome.country.to_string(),
                                hit_ref: hit.hit_ref.clone(),
                                quality: hit.quality,
                                expires_at: hit.expires_at,
                            });
                        }
                    }
                }
            }
            peers.push(status);
        }
        // Remember each hit with the subject as searched, so that a follow-up can be
        // filed for it (and tell the owner who the requesting state is looking for).
        let now = followups::now();
        let received = hits
            .iter()
            .filter(|h| h.hit_ref.parse::<crate::domain::hitref::HitRef>().is_ok())
            .filter_map(|h| {
                Some((
                    h.hit_ref.clone(),
                    ReceivedHit {
                        country: h.country.clone(),
                        quality: convert::quality_from_proto(h.quality)?,
                        // A peer's answer: kept at most a year, whatever it says.
                        expires_at: h.expires_at.min(now + 366 * 24 * 3600),
                        subject: identities.get(h.subject as usize)?.clone(),
                        request_id: request_id.clone(),
                    },
                ))
            })
            .collect();
        drop(identities);
        followups::remember_hits(&self.state, received).await?;
        let ok = peers
            .iter()
            .filter(|p| p.state == PeerState::Ok as i32)
            .count();
        state
            .audit(
                "search.sent",
                serde_json::json!({
                    "request_id": request_id,
                    "officer": officer,
                    "reason": convert::reason_json(&reason),
                    "subjects": subject_count,
                    "peers": peers.iter().map(|p| serde_json::json!({
                        "country": p.country,
                        "status": peer_state_name(p.state),
                        "hits": hits.iter().filter(|h| h.country == p.country).count(),
                    })).collect::<Vec<_>>(),
                }),
            )
            .await;
        tracing::info!(
            peers = peers.len(),
            peers_ok = ok,
            hits = hits.len(),
            "search answered"
        );
        Ok(Response::new(SearchResponse {
            request_id,
            peers,
            hits,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ImportRecords"))]
    async fn import_records(
        &self,
        req: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportRecordsStream>, Status> {
        let operator = user_with_role(&req, &[Role::Operator])?.0.to_owned();
        self.state.refuse_during_rotation()?;
        let max = self.state.config.limits.max_import_records;
        let mut stream = req.into_inner();
        let mut mode = None;
        let mut records = Vec::new();
        let mut first_seen: HashMap<RecordId, usize> = HashMap::new();
        while let Some(message) = stream.next().await {
            let message = message?;
            let this_mode = match ProtoImportMode::try_from(message.mode) {
                Ok(ProtoImportMode::Import) => Some(ImportMode::Import),
                Ok(ProtoImportMode::Sync) => Some(ImportMode::Sync),
                _ => None,
            };
            match (mode, this_mode) {
                (None, None) => {
                    return Err(Status::invalid_argument(
                        "field `mode` is required in the first message (import or sync)",
                    ));
                }
                (None, Some(m)) => mode = Some(m),
                (Some(a), Some(b)) if a != b => {
                    return Err(Status::invalid_argument(
                        "field `mode` changed in the middle of the stream",
                    ));
                }
                _ => {}
            }
            for data in message.records {
                let i = records.len();
                if i >= max {
                    return Err(Status::invalid_argument(format!(
                        "field `records`: more than {max} records (limits.max_import_records)"
                    )));
                }
                let record = convert::record(i, data)?;
                if let Some(first) = first_seen.insert(record.id.clone(), i) {
                    return Err(Status::invalid_argument(format!(
                        "records[{i}]: field `record_id` repeats records[{first}]"
                    )));
                }
                records.push(record);
            }
        }
        drop(first_seen);
        let Some(mode) = mode else {
            return Err(Status::invalid_argument("the stream is empty"));
        };
        let received = records.len() as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let index = self.state.index.active();
        let state = self.state.clone();
        let mode_name = match mode {
            ImportMode::Import => "import",
            ImportMode::Sync => "sync",
        };
        tokio::task::spawn_blocking(move || {
            let progress_tx = tx.clone();
            let mut progress = |p: Progress| {
                let _ = progress_tx.blocking_send(Ok(ImportProgress {
                    stage: p.stage.name().to_owned(),
                    done: p.done as u64,
                    total: p.total as u64,
                    summary: None,
                }));
            };
            let result = index.import(records, mode, &mut progress);
            let last = match result {
                Ok(s) => {
                    tracing::info!(
                        received,
                        added = s.added,
                        updated = s.updated,
                        unchanged = s.unchanged,
                        erased = s.erased,
                        "records imported"
                    );
                    let fields = serde_json::json!({
                        "operator": operator,
                        "mode": mode_name,
                        "received": received,
                        "added": s.added,
                        "updated": s.updated,
                        "unchanged": s.unchanged,
                        "erased": s.erased,
                    });
                    if let Err(e) =
                        state.commit(crate::store::Batch::new(), "records.imported", &fields)
                    {
                        tracing::error!(error = %e, "cannot record an audit event");
                    }
                    Ok(ImportProgress {
                        stage: "done".into(),
                        done: received,
                        total: received,
                        summary: Some(ProtoImportSummary {
                            received,
                            added: s.added as u64,
                            updated: s.updated as u64,
                            unchanged: s.unchanged as u64,
                            erased: s.erased as u64,
                            records: index.counts().records as u64,
                        }),
                    })
                }
                Err(e) => Err(index_error(e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteRecords"))]
    async fn delete_records(
        &self,
        req: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        let operator = user_with_role(&req, &[Role::Operator])?.0.to_owned();
        self.state.refuse_during_rotation()?;
        let ids = &req.get_ref().record_ids;
        if ids.is_empty() || ids.len() > MAX_DELETE_IDS {
            return Err(Status::invalid_argument(format!(
                "field `record_ids` must hold 1 to {MAX_DELETE_IDS} ids"
            )));
        }
        let ids = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                RecordId::try_from(id.as_str())
                    .map_err(|p| Status::invalid_argument(format!("field `record_ids[{i}]` {p}")))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let index = self.state.index.active();
        let asked = ids.clone();
        let erased = tokio::task::spawn_blocking(move || index.delete(&asked))
            .await
            .map_err(|_| Status::internal("the erase task failed"))?
            .map_err(index_error)?;
        let unknown = ids
            .iter()
            .filter(|id| !erased.contains(id))
            .map(ToString::to_string)
            .collect();
        tracing::info!(erased = erased.len(), "records erased");
        self.state
            .audit_durably(
                "records.erased",
                serde_json::json!({
                    "operator": operator,
                    "requested": ids.len(),
                    "erased": erased.len(),
                }),
            )
            .await;
        Ok(Response::new(DeleteRecordsResponse {
            erased: erased.iter().map(ToString::to_string).collect(),
            unknown,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CountRecords"))]
    async fn count_records(
        &self,
        req: Request<CountRecordsRequest>,
    ) -> Result<Response<CountRecordsResponse>, Status> {
        user_with_role(&req, &[Role::Operator])?;
        let counts = self.state.index.active().counts();
        Ok(Response::new(CountRecordsResponse {
            records: counts.records as u64,
            keys: counts.keys as u64,
            key_epoch: counts.epoch.0,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RequestFollowUp"))]
    async fn request_follow_up(
        &self,
        req: Request<RequestFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (user, _) = user_with_role(&req, &[Role::Officer])?;
        let user = user.to_owned();
        followups::request(&self.state, user, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowUps"))]
    async fn list_follow_ups(
        &self,
        req: Request<ListFollowUpsRequest>,
    ) -> Result<Response<ListFollowUpsResponse>, Status> {
        let (user, role) = user_with_role(&req, &[Role::Officer, Role::Reviewer])?;
        let user = user.to_owned();
        followups::list(&self.state, user, role, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "ShowFollowUp"))]
    async fn show_follow_up(
        &self,
        req: Request<ShowFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (user, role) = user_with_role(&req, &[Role::Officer, Role::Reviewer])?;
        let user = user.to_owned();
        followups::show(&self.state, user, role, req.into_inner().id)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "DecideFollowUp"))]
    async fn decide_follow_up(
        &self,
        req: Request<DecideFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (user, _) = user_with_role(&req, &[Role::Reviewer])?;
        let user = user.to_owned();
        followups::decide(&self.state, user, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(rpc = "WithdrawFollowUp"))]
    async fn withdraw_follow_up(
        &self,
        req: Request<WithdrawFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (user, _) = user_with_role(&req, &[Role::Officer])?;
        let user = user.to_owned();
        followups::withdraw_outgoing(&self.state, user, req.into_inner().id)
            .await
            .map(Response::new)
    }

    type ExportAuditStream =
        Pin<Box<dyn Stream<Item = Result<AuditEntry, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all, fields(rpc = "ExportAudit"))]
    async fn export_audit(
        &self,
        req: Request<AuditExportRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        user_with_role(&req, &[Role::Auditor])?;
        let AuditExportRequest { since, until } = req.into_inner();
        let until = if until == 0 { i64::MAX } else { until };
        if since >= until {
            return Err(Status::invalid_argument(
                "field `since` must be before field `until`",
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.state.store.clone();
        tokio::task::spawn_blocking(move || {
            for entry in crate::domain::audit::AuditLog::export(store.as_ref(), since, until) {
                let message = entry
                    .map(|e| AuditEntry {
                        seq: e.seq,
                        time: e.time,
                        kind: e.kind,
                        fields_json: e.fields,
                        hash: e.hash.to_vec(),
                        prev_hash: e.prev.to_vec(),
                        signature: e.signature,
                    })
                    .map_err(|e| Status::unavailable(format!("the store failed: {e}")));
                let failed = message.is_err();
                if tx.blocking_send(message).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(rpc = "VerifyAudit"))]
    async fn verify_audit(
        &self,
        req: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        user_with_role(&req, &[Role::Auditor])?;
        let state = self.state.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            crate::domain::audit::verify(state.store.as_ref(), state.audit.public_key())
        })
        .await
        .map_err(|_| Status::internal("the verification task failed"))?
        .map_err(|e| Status::unavailable(format!("the store failed: {e}")))?;
        let public_key = self.state.audit.public_key().to_vec();
        Ok(Response::new(match outcome {
            Ok(v) => VerifyAuditResponse {
                ok: true,
                entries: v.entries,
                first: v.range.map_or(0, |r| r.0),
                last: v.range.map_or(0, |r| r.1),
                public_key,
                ..VerifyAuditResponse::default()
            },
            Err(broken) => VerifyAuditResponse {
                ok: false,
                bad_entry: broken.entry(),
                problem: broken.to_string(),
                public_key,
                ..VerifyAuditResponse::default()
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RotateKeys"))]
    async fn rotate_keys(
        &self,
        req: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        let operator = user_with_role(&req, &[Role::Operator])?.0.to_owned();
        let refused = |e: crate::domain::epochs::RotationError| {
            tracing::warn!(error = %e, "key rotation step refused");
            Status::failed_precondition(e.to_string())
        };
        let status = match RotateAction::try_from(req.get_ref().action) {
            Ok(RotateAction::Status) => self.state.index.status(),
            Ok(RotateAction::Start) => self
                .state
                .start_rotation(&operator)
                .await
                .map_err(refused)?,
            Ok(RotateAction::Finish) => self
                .state
                .finish_rotation(&operator)
                .await
                .map_err(refused)?,
            _ => {
                return Err(Status::invalid_argument(
                    "field `action`: STATUS, START or FINISH",
                ));
            }
        };
        Ok(Response::new(RotateKeysResponse {
            phase: status.phase().into(),
            active_epoch: status.active.0,
            next_epoch: status.next.map_or(0, |e| e.0),
            retired_epochs: status.retired,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReloadCertificates"))]
    async fn reload_certificates(
        &self,
        req: Request<ReloadCertificatesRequest>,
    ) -> Result<Response<ReloadCertificatesResponse>, Status> {
        let operator = user_with_role(&req, &[Role::Operator])?.0.to_owned();
        let (loaded, revoked) = self
            .state
            .reload_certificates(&operator)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "certificate reload refused; nothing changed");
                Status::failed_precondition(format!("nothing reloaded: {e}"))
            })?;
        Ok(Response::new(ReloadCertificatesResponse {
            certificates: loaded
                .into_iter()
                .map(|(name, not_after)| CertificateExpiry {
                    name: name.into(),
                    not_after,
                })
                .collect(),
            revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }
}
