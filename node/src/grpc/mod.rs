//! The gRPC edge: thin handlers that check who calls, convert proto to domain types and
//! back, and map domain errors to `Status` in one place ([`status`]).

pub mod auth;
pub mod convert;
pub mod federation;
pub mod followups;
pub mod national;
pub mod observe;
pub mod peers;
pub mod server;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::{
    config::Config,
    domain::principals::Principal,
    domain::principals::Role,
    grpc::auth::{Authorizer, Refusal},
    grpc::peers::Peers,
    grpc::tls::ConnInfo,
    store::{Store, StoreInfo},
};

/// Everything the handlers share.
#[derive(Debug)]
pub struct NodeState {
    /// The configuration the node started with.
    pub config: Config,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Store facts as of start-up.
    pub store_info: StoreInfo,
    /// Clients to every peer.
    pub peers: Peers,
    /// The national records and their match index per served key epoch.
    pub index: crate::domain::epochs::Indexes,
    /// Wakes the follow-up outbox when a decision is ready to deliver.
    pub outbox_wake: tokio::sync::Notify,
    /// Serialises the read-change-write steps of follow-ups.
    pub followup_writes: std::sync::Mutex<()>,
    /// The audit log.
    pub audit: crate::domain::audit::AuditLog,
    /// Match calls per peer and searches per officer (`limits`).
    pub rate_limits: RateLimits,
    /// Caps on audit events of refused connections and calls.
    pub refusals: observe::Refusals,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// The node's own certificates by metrics name, with their expiry (seconds since
    /// the epoch), as last loaded.
    pub certificates: std::sync::RwLock<Vec<(&'static str, i64)>>,
    /// The federation listener's TLS (reloadable).
    pub federation_tls: tls::ServerTls,
    /// The national listener's TLS (reloadable).
    pub national_tls: tls::ServerTls,
}

/// Per-peer and per-officer call rates (DESIGN section 8).
#[derive(Debug)]
pub struct RateLimits {
    matches: governor::DefaultKeyedRateLimiter<crate::domain::principals::Country>,
    searches: governor::DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// Limits from the configuration.
    pub fn new(limits: &crate::config::Limits) -> RateLimits {
        let per_minute = |n: u32| {
            governor::Quota::per_minute(
                std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN),
            )
        };
        RateLimits {
            matches: governor::RateLimiter::keyed(per_minute(limits.matches_per_minute_per_peer)),
            searches: governor::RateLimiter::keyed(per_minute(
                limits.searches_per_minute_per_officer,
            )),
        }
    }
}

impl NodeState {
    /// Admits one Match call of `peer`, or refuses it with RESOURCE_EXHAUSTED and an
    /// audit event.
    pub async fn admit_match(
        self: &Arc<Self>,
        peer: crate::domain::principals::Country,
    ) -> Result<(), Status> {
        if self.rate_limits.matches.check_key(&peer).is_ok() {
            return Ok(());
        }
        tracing::warn!(peer = %peer, "Match refused: rate limit");
        self.count_rate_limited("Match");
        self.audit(
            "rate_limited",
            serde_json::json!({ "rpc": "Match", "peer": peer.as_str() }),
        )
        .await;
        Err(Status::resource_exhausted(format!(
            "{peer} made more than {} Match calls in a minute (limits.matches_per_minute_per_peer); try again later",
            self.config.limits.matches_per_minute_per_peer
        )))
    }

    /// Admits one search by `officer`, or refuses it with RESOURCE_EXHAUSTED and an
    /// audit event.
    pub async fn admit_search(self: &Arc<Self>, officer: &str) -> Result<(), Status> {
        if self
            .rate_limits
            .searches
            .check_key(&officer.to_owned())
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(officer, "Search refused: rate limit");
        self.count_rate_limited("Search");
        self.audit(
            "rate_limited",
            serde_json::json!({ "rpc": "Search", "officer": officer }),
        )
        .await;
        Err(Status::resource_exhausted(format!(
            "more than {} searches in a minute (limits.searches_per_minute_per_officer); try again later",
            self.config.limits.searches_per_minute_per_officer
        )))
    }
}

impl NodeState {
    /// Applies `batch` and the audit event of the step it makes in one atomic write
    /// (durable when `batch` is): a follow-up and its audit entry are stored together
    /// or not at all. Runs on a blocking thread.
    pub fn commit(
        &self,
        batch: crate::store::Batch,
        kind: &'static str,
        fields: &serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        self.audit.apply_with(
            self.store.as_ref(),
            crate::store::unix_now(),
            batch,
            kind,
            fields,
        )?;
        self.metrics.audit_entries.inc();
        Ok(())
    }

    /// Records an audit event of a frequent step (a search, a Match, a refusal)
    /// without waiting for the disk: flushed within half a second. The call it
    /// records has happened; a failure to record is logged as an error (and shows as
    /// a gap to nobody: the chain stays intact).
    pub async fn audit(self: &Arc<Self>, kind: &'static str, fields: serde_json::Value) {
        self.record(crate::store::Batch::relaxed(), kind, fields)
            .await;
    }

    /// Records an audit event of a rare step (an import, a reload, a rotation),
    /// durable when this returns.
    pub async fn audit_durably(self: &Arc<Self>, kind: &'static str, fields: serde_json::Value) {
        self.record(crate::store::Batch::new(), kind, fields).await;
    }

    async fn record(
        self: &Arc<Self>,
        batch: crate::store::Batch,
        kind: &'static str,
        fields: serde_json::Value,
    ) {
        let state = self.clone();
        let recorded =
            tokio::task::spawn_blocking(move || state.commit(batch, kind, &fields)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(kind, error = %e, "cannot record an audit event"),
            Err(_) => tracing::error!(kind, "the audit task failed"),
        }
    }
}

/// How long before its own certificate expires a node starts warning.
pub const CERTIFICATE_WARNING_SECONDS: i64 = 30 * 24 * 3600;

impl NodeState {
    /// Logs a warning for each of the node's own certificates that expires within
    /// [`CERTIFICATE_WARNING_SECONDS`] (at start-up and hourly); the metric
    /// `adep_certificate_expiry_seconds` says the same to monitoring.
    pub fn warn_of_expiring_certificates(&self, now: i64) {
        for (certificate, not_after) in self.certificates() {
            let left = not_after - now;
            if left <= 0 {
                tracing::error!(
                    certificate,
                    "the node's certificate has expired; peers and users will refuse it"
                );
            } else if left < CERTIFICATE_WARNING_SECONDS {
                tracing::warn!(
                    certificate,
                    days_left = left / 86_400,
                    "the node's certificate expires soon; renew it and reload"
                );
            }
        }
    }

    /// The node's own certificates and their expiry, as last loaded.
    pub fn certificates(&self) -> Vec<(&'static str, i64)> {
        self.certificates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the certificate, key and CA files of both listeners and of the peer
    /// clients again and uses them for new connections. Everything is read and
    /// checked before anything changes, so on an error nothing does. An audit event.
    pub async fn reload_certificates(
        self: &Arc<Self>,
        by: &str,
    ) -> Result<(Vec<(&'static str, i64)>, usize), tls::TlsError> {
        let fresh = tls::NodeTls::from_config(&self.config.tls)?;
        let peers = Peers::from_config(&self.config, &fresh.crls)?;
        let certificates = fresh.certificates;
        let revoked = fresh.revoked;
        self.federation_tls.replace_with(&fresh.federation);
        self.national_tls.replace_with(&fresh.national);
        self.peers.replace_with(&peers);
        *self
            .certificates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = certificates.clone();
        tracing::info!(by, "certificates reloaded");
        self.audit_durably(
            "tls.reloaded",
            serde_json::json!({
                "by": by,
                "certificates": certificates
                    .iter()
                    .map(|(name, until)| serde_json::json!({ "name": name, "not_after": until }))
                    .collect::<Vec<_>>(),
                "revoked": revoked,
            }),
        )
        .await;
        self.warn_of_expiring_certificates(crate::store::unix_now());
        Ok((certificates, revoked))
    }

    /// Refuses imports and erasures while a key rotation is under way: they would
    /// change one epoch's index and not the other's.
    pub fn refuse_during_rotation(&self) -> Result<(), Status> {
        let status = self.index.status();
        match status.next {
            Some(next) => Err(Status::failed_precondition(format!(
                "a key rotation to epoch {next} is under way ({}); imports and erasures wait until `adep keys rotate --finish`",
                status.phase()
            ))),
            None => Ok(()),
        }
    }

    /// Starts a rotation to `matching.next_*`: the next epoch's index is built in
    /// the background, then both epochs answer. Audit events at the start and when
    /// the index is ready.
    pub async fn start_rotation(
        self: &Arc<Self>,
        operator: &str,
    ) -> Result<crate::domain::epochs::EpochStatus, crate::domain::epochs::RotationError> {
        use crate::{
            domain::epochs::RotationError,
            domain::pseudonymise::{KeyEpoch, Pseudonymiser},
            secret::MatchingSecret,
        };
        let Some((path, epoch)) = self.config.matching.next() else {
            return Err(RotationError::NoNextSecret);
        };
        let secret = MatchingSecret::from_file(path)?;
        let pseudonymiser = Pseudonymiser::new(&secret, KeyEpoch(epoch));
        drop(secret);
        self.index.begin(KeyEpoch(epoch))?;
        let from = self.index.active().epoch().0;
        tracing::info!(
            from,
            to = epoch,
            "key rotation started: building the next index"
        );
        self.audit_durably(
            "keys.rotation_started",
            serde_json::json!({ "by": operator, "from": from, "to": epoch }),
        )
        .await;
        tokio::spawn(self.clone().build_next_epoch(pseudonymiser, from, epoch));
        Ok(self.index.status())
    }

    /// Builds the next epoch's index from the store, then lets both epochs answer;
    /// on a failure the rotation is abandoned and the active epoch goes on alone.
    async fn build_next_epoch(
        self: Arc<Self>,
        pseudonymiser: crate::domain::pseudonymise::Pseudonymiser,
        from: u32,
        epoch: u32,
    ) {
        let store = self.store.clone();
        let built = tokio::task::spawn_blocking(move || {
            crate::domain::index::NationalIndex::load(store, pseudonymiser, &mut |p| {
                tracing::info!(
                    epoch,
                    stage = p.stage.name(),
                    done = p.done,
                    "building the next match index"
                );
            })
        })
        .await;
        let state = self.clone();
        let ready = match built {
            Ok(Ok(index)) => tokio::task::spawn_blocking(move || {
                state.index.ready(Arc::new(index), state.store.as_ref())
            })
            .await
            .is_ok_and(|r| r.is_ok()),
            _ => false,
        };
        let fields = serde_json::json!({ "from": from, "to": epoch });
        if ready {
            tracing::info!(epoch, "key rotation: both epochs answer");
            self.audit_durably("keys.rotation_ready", fields).await;
        } else {
            self.index.abandon();
            tracing::error!(
                epoch,
                "key rotation abandoned: the next index could not be built or recorded"
            );
            self.audit_durably("keys.rotation_failed", fields).await;
        }
    }

    /// Finishes a rotation: the next epoch becomes active and the old one is
    /// refused from now on.
    pub async fn finish_rotation(
        self: &Arc<Self>,
        operator: &str,
    ) -> Result<crate::domain::epochs::EpochStatus, crate::domain::epochs::RotationError> {
        let state = self.clone();
        let (from, to) =
            tokio::task::spawn_blocking(move || state.index.finish(state.store.as_ref()))
                .await
                .map_err(|_| crate::domain::epochs::RotationError::Task)??;
        tracing::info!(
            from = from.0,
            to = to.0,
            "key rotation finished: old epoch retired"
        );
        self.audit_durably(
            "keys.epoch_changed",
            serde_json::json!({ "by": operator, "from": from.0, "to": to.0, "rotation": true }),
        )
        .await;
        Ok(self.index.status())
    }

    /// Counts and times the calls of a fan-out to the peers.
    pub fn count_peer_calls<T>(&self, rpc: &'static str, outcomes: &[peers::PeerOutcome<T>]) {
        for o in outcomes {
            self.metrics
                .peer_call(o.country.as_str(), rpc, o.outcome_name(), o.elapsed);
        }
    }

    fn count_rate_limited(&self, rpc: &'static str) {
        self.metrics
            .rate_limited
            .get_or_create(&crate::metrics::RpcLabels {
                listener: if rpc == "Match" {
                    "federation"
                } else {
                    "national"
                },
                rpc,
            })
            .inc();
    }

    /// The metrics in the text format, with the gauges read from the store and the
    /// index set first.
    pub async fn scrape(self: &Arc<Self>) -> String {
        let state = self.clone();
        match tokio::task::spawn_blocking(move || state.refresh_gauges()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the follow-ups"),
            Err(_) => tracing::warn!("metrics: the gauge task failed"),
        }
        self.metrics.encode()
    }

    fn refresh_gauges(&self) -> Result<(), crate::store::StoreError> {
        use crate::domain::followup::{Book, Direction, State};
        let m = &self.metrics;
        let counts = self.index.active().counts();
        m.index_records.set(counts.records as i64);
        m.index_keys.set(counts.keys as i64);
        m.key_epoch.set(i64::from(counts.epoch.0));
        let rotation = self.index.status();
        m.key_epoch_next
            .set(rotation.next.map_or(0, |e| i64::from(e.0)));
        m.key_rotation_building.set(i64::from(rotation.building));
        let now = crate::store::unix_now();
        for (certificate, not_after) in self.certificates() {
            m.certificate_expiry_seconds
                .get_or_create(&crate::metrics::CertLabels { certificate })
                .set(not_after - now);
        }
        let book = Book::new(self.store.as_ref());
        for (direction, name) in [
            (Direction::Incoming, "incoming"),
            (Direction::Outgoing, "outgoing"),
        ] {
            let list = book.list(direction)?;
            for state in State::ALL {
                let n = list.iter().filter(|f| f.state == state).count();
                m.followups
                    .get_or_create(&crate::metrics::FollowUpLabels {
                        direction: name,
                        state: state.name(),
                    })
                    .set(n as i64);
            }
            if direction == Direction::Incoming {
                let overdue = list.iter().filter(|f| f.overdue(now)).count();
                m.followups_overdue.set(overdue as i64);
            }
        }
        m.outbox_backlog.set(book.outbox()?.len() as i64);
        Ok(())
    }
}

/// A fresh random id of a search or a follow-up: 32 lower-case hexadecimal digits.
pub fn random_id() -> Result<String, Status> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::internal("the system random generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The one mapping of refusals to gRPC status codes.
pub fn status(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Unauthenticated(m) => Status::unauthenticated(m),
        Refusal::PermissionDenied(m) => Status::permission_denied(m),
    }
}

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
                Err(status(refusal))
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
pub fn user_with_role<'a, T>(
    req: &'a Request<T>,
    roles: &[Role],
) -> Result<(&'a str, Role), Status> {
    match principal(req)? {
        Principal::User { id, role } if roles.contains(role) => Ok((id.as_str(), *role)),
        Principal::User { role, .. } => Err(Status::permission_denied(format!(
            "the {role} role cannot make this call"
        ))),
        Principal::Peer(_) => Err(Status::permission_denied(
            "a peer node cannot call the national API",
        )),
    }
}
