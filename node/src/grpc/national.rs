//! The national service: what the state's own users may call through the CLI. Each
//! handler checks the caller's role, converts, and calls a use case.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use adep_proto::v1::{
    AuditEntry, AuditExportRequest, CountRecordsRequest, CountRecordsResponse,
    DecideFollowUpRequest, DeleteRecordsRequest, DeleteRecordsResponse, FollowUp, ImportProgress,
    ImportRequest, ListFollowUpsRequest, ListFollowUpsResponse, ReloadCertificatesRequest,
    ReloadCertificatesResponse, RequestFollowUpRequest, RotateAction, RotateKeysRequest,
    RotateKeysResponse, SearchRequest, SearchResponse, ShowFollowUpRequest, StatusRequest,
    StatusResponse, VerifyAuditRequest, VerifyAuditResponse, WithdrawFollowUpRequest,
    national_server::National,
};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    app::{
        self, NodeState, certificates, listing, owner, records, requester, rotation, search, status,
    },
    domain::{identity::RecordId, index::Progress, principals::Role},
    grpc::{
        convert::{self, Invalid, national as wire},
        user_with_role,
    },
    store::unix_now,
};

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

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl National for NationalService {
    #[tracing::instrument(skip_all, fields(rpc = "Status"))]
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (user, role) = user_with_role(&req, &Role::ALL)?;
        let s = status::status(&self.state, &user, role, req.get_ref().check_peers).await;
        Ok(Response::new(wire::status_response(
            self.state.config.country.as_str(),
            &s,
        )))
    }

    type ImportRecordsStream = Stream_<ImportProgress>;

    #[tracing::instrument(skip_all, fields(rpc = "Search", request_id, subjects))]
    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let (officer, _) = user_with_role(&req, &[Role::Officer])?;
        let query = search::Search::try_from(req.get_ref())?;
        let outcome = search::search(&self.state, &officer, query).await?;
        Ok(Response::new((&outcome).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ImportRecords"))]
    async fn import_records(
        &self,
        req: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportRecordsStream>, Status> {
        let (operator, _) = user_with_role(&req, &[Role::Operator])?;
        records::refuse_during_rotation(&self.state)?;
        let mut stream = req.into_inner();
        let mut mode = None;
        let mut batch = Vec::new();
        let mut first_seen: HashMap<RecordId, usize> = HashMap::new();
        while let Some(message) = stream.next().await {
            let message = message?;
            let this_mode = wire::import_mode(message.mode);
            match (mode, this_mode) {
                (None, None) => {
                    return Err(Invalid(
                        "field `mode` is required in the first message (import or sync)".into(),
                    )
                    .into());
                }
                (None, Some(m)) => mode = Some(m),
                (Some(a), Some(b)) if a != b => {
                    return Err(
                        Invalid("field `mode` changed in the middle of the stream".into()).into(),
                    );
                }
                _ => {}
            }
            for data in message.records {
                let i = batch.len();
                records::check_import_size(&self.state, i + 1)?;
                let record = convert::record(i, data)?;
                if let Some(first) = first_seen.insert(record.id.clone(), i) {
                    return Err(Invalid(format!(
                        "records[{i}]: field `record_id` repeats records[{first}]"
                    ))
                    .into());
                }
                batch.push(record);
            }
        }
        drop(first_seen);
        let Some(mode) = mode else {
            return Err(Invalid("the stream is empty".into()).into());
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let progress_tx = tx.clone();
            let mut progress = |p: Progress| {
                let _ = progress_tx.blocking_send(Ok(ImportProgress::from(p)));
            };
            let last = records::import(&state, &operator, batch, mode, &mut progress)
                .map(|imported| ImportProgress::from(&imported))
                .map_err(Status::from);
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteRecords"))]
    async fn delete_records(
        &self,
        req: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        let (operator, _) = user_with_role(&req, &[Role::Operator])?;
        records::refuse_during_rotation(&self.state)?;
        let ids = wire::record_ids(&req.get_ref().record_ids)?;
        let erased = records::delete(&self.state, &operator, ids.clone()).await?;
        let unknown = ids
            .iter()
            .filter(|id| !erased.contains(id))
            .map(ToString::to_string)
            .collect();
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
        Ok(Response::new(records::count(&self.state).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RequestFollowUp"))]
    async fn request_follow_up(
        &self,
        req: Request<RequestFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (officer, _) = user_with_role(&req, &[Role::Officer])?;
        let request = req.into_inner().try_into()?;
        let f = requester::request(&self.state, officer, request).await?;
        Ok(Response::new(wire::followup(&f, None, unix_now())))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowUps"))]
    async fn list_follow_ups(
        &self,
        req: Request<ListFollowUpsRequest>,
    ) -> Result<Response<ListFollowUpsResponse>, Status> {
        let (user, role) = user_with_role(&req, &[Role::Officer, Role::Reviewer])?;
        let filter = listing::Filter::try_from(req.get_ref())?;
        let page = listing::list(&self.state, user, role, filter).await?;
        Ok(Response::new((&page).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ShowFollowUp"))]
    async fn show_follow_up(
        &self,
        req: Request<ShowFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (user, role) = user_with_role(&req, &[Role::Officer, Role::Reviewer])?;
        let id = convert::followup_id("id", &req.get_ref().id)?;
        let (f, record) = listing::show(&self.state, user, role, id).await?;
        Ok(Response::new(wire::followup(
            &f,
            record.as_ref(),
            unix_now(),
        )))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DecideFollowUp"))]
    async fn decide_follow_up(
        &self,
        req: Request<DecideFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (reviewer, _) = user_with_role(&req, &[Role::Reviewer])?;
        let (id, decision, reason) = wire::decision(req.get_ref())?;
        let (f, record) = owner::decide(&self.state, reviewer, id, decision, reason).await?;
        Ok(Response::new(wire::followup(
            &f,
            record.as_ref(),
            unix_now(),
        )))
    }

    #[tracing::instrument(skip_all, fields(rpc = "WithdrawFollowUp"))]
    async fn withdraw_follow_up(
        &self,
        req: Request<WithdrawFollowUpRequest>,
    ) -> Result<Response<FollowUp>, Status> {
        let (officer, _) = user_with_role(&req, &[Role::Officer])?;
        let id = convert::followup_id("id", &req.get_ref().id)?;
        let f = requester::withdraw(&self.state, officer, id).await?;
        Ok(Response::new(wire::followup(&f, None, unix_now())))
    }

    type ExportAuditStream = Stream_<AuditEntry>;

    #[tracing::instrument(skip_all, fields(rpc = "ExportAudit"))]
    async fn export_audit(
        &self,
        req: Request<AuditExportRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        user_with_role(&req, &[Role::Auditor])?;
        let (since, until) = wire::period(req.get_ref());
        let (since, until) = app::audit::period(since, until)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let mut complete = true;
            app::audit::export(&state, since, until, &mut |entry| {
                complete &= entry.is_ok();
                let message = entry.map(AuditEntry::from).map_err(Status::from);
                tx.blocking_send(message).is_ok()
            });
            if complete && let Some(head) = app::audit::head(&state) {
                // The export ends with the node's signed head, for the auditor to keep.
                let _ = tx.blocking_send(Ok(AuditEntry {
                    checkpoint: Some((&head).into()),
                    ..AuditEntry::default()
                }));
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
        let witnesses = wire::witnesses(req.get_ref())?;
        let (outcome, public_key) = app::audit::verify(&self.state, witnesses).await?;
        Ok(Response::new(wire::verified(outcome, public_key)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RotateKeys"))]
    async fn rotate_keys(
        &self,
        req: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        let (operator, _) = user_with_role(&req, &[Role::Operator])?;
        let status = match RotateAction::try_from(req.get_ref().action) {
            Ok(RotateAction::Status) => rotation::status(&self.state),
            Ok(RotateAction::Start) => rotation::start(&self.state, &operator).await?,
            _ => {
                return Err(Invalid("field `action`: STATUS or START".into()).into());
            }
        };
        Ok(Response::new((&status).into()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReloadCertificates"))]
    async fn reload_certificates(
        &self,
        req: Request<ReloadCertificatesRequest>,
    ) -> Result<Response<ReloadCertificatesResponse>, Status> {
        let (operator, _) = user_with_role(&req, &[Role::Operator])?;
        let loaded = certificates::reload(&self.state, Some(&operator)).await?;
        Ok(Response::new((&loaded).into()))
    }
}
