//! Running a node: bind both listeners, serve them until a shutdown signal, then drain.
//!
//! [`run`] takes listeners the caller bound, so tests bind `127.0.0.1:0` themselves and
//! start real nodes in-process; the binary binds the configured addresses.

use std::{future::Future, io, net::SocketAddr, path::Path, sync::Arc};

use adep_proto::v1::{federation_server::FederationServer, national_server::NationalServer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{service::InterceptorLayer, transport::Server};

use crate::{
    app::{
        self, NodeState,
        refusals::{self, Refused},
        state::LoadedCertificates,
    },
    config::Config,
    domain::{
        audit::AuditLog,
        epochs::{self, Indexes, StoredEpochs},
        followup::Book,
        index::{IndexError, NationalIndex},
        pseudonymise::{KeyEpoch, oprf::NodeKey},
    },
    grpc::{
        auth::{Authorizer, Listener},
        authorize_call,
        connections::{EVICTING_LIMIT, UnverifiedPool},
        credentials::NodeCredentials,
        federation::FederationService,
        national::NationalService,
        observe::ObserveLayer,
        peers::PeerClients,
        tls::{AuthedStream, NodeTls, ServerTls, TlsError},
    },
    metrics::{ConnectionRefusedLabels, Metrics},
    secret::{DataKey, KeySeed, SecretError},
    store::{self, StoreError},
};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A certificate or key file is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A key file (data key, key seed) is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be opened.
    #[error("audit log ({path}): {message}")]
    Audit {
        /// The signing key file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// The match index could not be built from the stored records.
    #[error("match index: {0}")]
    Index(#[from] IndexError),
    /// The key seed does not derive the key the index was built with.
    #[error("matching: {0}")]
    Epochs(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({listener} listener): {cause}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        cause: io::Error,
    },
    /// A server failed while running.
    #[error("{listener} listener failed: {message}")]
    Serve {
        /// Which listener.
        listener: &'static str,
        /// What failed.
        message: String,
    },
}

/// The two bound listeners of a node.
#[derive(Debug)]
pub struct Listeners {
    /// For peer nodes.
    pub federation: TcpListener,
    /// For national users.
    pub national: TcpListener,
    /// For the metrics scraper, when `metrics.listen` is set.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, NodeError> {
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind {
                    listener,
                    addr,
                    cause: source,
                })
        };
        Ok(Listeners {
            federation: bind("federation", config.federation.listen).await?,
            national: bind("national", config.national.listen).await?,
            metrics: match config.metrics.listen {
                Some(addr) => Some(bind("metrics", addr).await?),
                None => None,
            },
        })
    }

    /// The bound federation address.
    pub fn federation_addr(&self) -> io::Result<SocketAddr> {
        self.federation.local_addr()
    }

    /// The bound national address.
    pub fn national_addr(&self) -> io::Result<SocketAddr> {
        self.national.local_addr()
    }
}

/// Checks every file the configuration names and opens the store: everything that can
/// refuse a start, done before any listener serves.
pub fn prepare(config: Config) -> Result<Prepared, NodeError> {
    let tls = NodeTls::from_config(&config.tls)?;
    let peers = PeerClients::from_config(&config, &tls.crls)?;
    let opened = store::open(
        &config.data_dir,
        config.country,
        &DataKey::from_file(&config.data_key)?,
    )?;
    let audit_error = |message: String| NodeError::Audit {
        path: config.audit.signing_key.clone(),
        message,
    };
    let key = std::fs::read(&config.audit.signing_key)
        .map_err(|e| audit_error(format!("cannot read the signing key: {e}")))?;
    let audit =
        AuditLog::open(opened.store.as_ref(), &key).map_err(|e| audit_error(e.to_string()))?;
    drop(key);
    let indexed = Book::new(opened.store.as_ref()).index_holds()?;
    if indexed > 0 {
        tracing::info!(
            followups = indexed,
            "indexed the open follow-ups (once, after an upgrade)"
        );
    }
    let stored = StoredEpochs::read(opened.store.as_ref())?;
    let epoch = KeyEpoch(stored.active.unwrap_or(config.matching.key_epoch));
    if epoch.0 != config.matching.key_epoch {
        tracing::info!(
            epoch = epoch.0,
            configured = config.matching.key_epoch,
            "answering under the store's key epoch; matching.key_epoch only sets a new node's first epoch"
        );
    }
    let key = node_key(&config.matching.seed_file, epoch)?;
    if !epochs::check_key(opened.store.as_ref(), &key)? {
        return Err(NodeError::Epochs(format!(
            "{}: this key seed does not derive the key this node's index of epoch {epoch} was built with; restore the seed the node ran with (to replace a seed, rotate: `adep keys rotate` reads matching.seed_file again)",
            config.matching.seed_file.display()
        )));
    }
    let active = NationalIndex::load(opened.store.clone(), key, &mut |p| {
        tracing::info!(
            epoch = epoch.0,
            stage = p.stage.name(),
            done = p.done,
            "building the match index"
        );
    })?;
    if stored.active.is_none() {
        StoredEpochs {
            active: Some(epoch.0),
            retired: stored.retired.clone(),
        }
        .write(opened.store.as_ref())?;
    }
    // A retired epoch's digests may outlive its grace when the node stopped in it.
    for epoch in &stored.retired {
        crate::domain::index::erase_digests(opened.store.as_ref(), KeyEpoch(*epoch))?;
    }
    let index = Indexes::new(Arc::new(active), stored.retired);
    let credentials = NodeCredentials::new(&config, &tls, peers.clone());
    let state = Arc::new(NodeState {
        store: opened.store.clone(),
        store_info: opened.info.clone(),
        peers: Arc::new(peers),
        credentials: Arc::new(credentials.clone()),
        index,
        outbox_wake: tokio::sync::Notify::new(),
        followup_writes: std::sync::Mutex::new(()),
        audit,
        rate_limits: app::limits::RateLimits::new(&config.limits),
        refusals: refusals::Refusals::default(),
        metrics: Metrics::new(),
        certificates: std::sync::RwLock::new(LoadedCertificates {
            certificates: tls.certificates,
            revoked: tls.revoked,
        }),
        config,
    });
    Ok(Prepared {
        state,
        credentials,
        _store: opened,
    })
}

/// This node's key of `epoch`, from its seed file.
pub fn node_key(seed_file: &Path, epoch: KeyEpoch) -> Result<NodeKey, NodeError> {
    let seed = KeySeed::from_file(seed_file)?;
    NodeKey::derive(seed.expose(), epoch)
        .ok_or_else(|| NodeError::Epochs("the key seed cannot derive a key".into()))
}

/// A node ready to serve: files checked, store open and locked.
#[derive(Debug)]
pub struct Prepared {
    state: Arc<NodeState>,
    credentials: NodeCredentials,
    _store: store::OpenStore,
}

impl Prepared {
    /// The state the node will serve with (for a binary that reloads certificates on
    /// a signal, say).
    pub fn state(&self) -> Arc<NodeState> {
        self.state.clone()
    }
}

/// Serves both listeners until `shutdown` completes, then stops accepting, lets in-flight
/// calls finish (at most `limits.shutdown_grace_ms`), and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let prepared = prepare(config)?;
    serve(prepared, listeners, shutdown).await
}

/// The serving half of [`run`].
pub async fn serve(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let state = prepared.state.clone();
    let config = &state.config;
    let (stop_tx, stop_rx) = watch::channel(false);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FederationServer<FederationService>>()
        .await;
    health_reporter
        .set_serving::<NationalServer<NationalService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(adep_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| NodeError::Serve {
                listener: "both",
                message: format!("reflection: {e}"),
            })
    };
    let max = config.limits.max_message_bytes;

    let federation = bounded(&config.limits)
        .layer(ObserveLayer::new(state.clone(), Listener::Federation))
        .layer(InterceptorLayer::new(authorize_call(Arc::new(
            Authorizer::new(Listener::Federation, config),
        ))))
        .add_service(health.clone())
        .add_service(reflection()?)
        .add_service(
            FederationServer::new(FederationService::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    let national = bounded(&config.limits)
        .layer(ObserveLayer::new(state.clone(), Listener::National))
        .layer(InterceptorLayer::new(authorize_call(Arc::new(
            Authorizer::new(Listener::National, config),
        ))))
        .add_service(health)
        .add_service(reflection()?)
        .add_service(
            NationalServer::new(NationalService::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );

    let fed_addr = listeners.federation_addr().ok();
    let nat_addr = listeners.national_addr().ok();
    let (fed_incoming, fed_accept) = incoming(
        listeners.federation,
        prepared.credentials.federation.clone(),
        &state,
        Listener::Federation,
        stop_rx.clone(),
    );
    let (nat_incoming, nat_accept) = incoming(
        listeners.national,
        prepared.credentials.national.clone(),
        &state,
        Listener::National,
        stop_rx.clone(),
    );
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    app::certificates::warn_of_expiring(&state, store::unix_now());
    let metrics_addr = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_task = listeners.metrics.map(|listener| {
        let state = state.clone();
        tokio::spawn(crate::metrics::serve(
            listener,
            move || app::gauges::scrape(state.clone()),
            stopped(stop_rx.clone()),
        ))
    });
    let jobs_task = tokio::spawn(app::jobs::run(state.clone(), stop_rx.clone()));
    let mut fed_task = tokio::spawn(
        federation.serve_with_incoming_shutdown(fed_incoming, stopped(stop_rx.clone())),
    );
    let mut nat_task =
        tokio::spawn(national.serve_with_incoming_shutdown(nat_incoming, stopped(stop_rx.clone())));
    // Plain values: an address, or `none` for a listener not serving.
    let shown = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
    tracing::info!(
        country = %config.country,
        federation = %shown(fed_addr),
        national = %shown(nat_addr),
        metrics = %shown(metrics_addr),
        peers = config.peers.len(),
        "node serving"
    );

    let failed = tokio::select! {
        _ = shutdown => None,
        r = &mut fed_task => Some(("federation", r)),
        r = &mut nat_task => Some(("national", r)),
    };
    if let Some((listener, r)) = failed {
        let _ = stop_tx.send(true);
        let message = match r {
            Ok(Ok(())) => "stopped unexpectedly".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        return Err(NodeError::Serve { listener, message });
    }
    tracing::info!("shutting down: draining in-flight calls");
    let _ = stop_tx.send(true);
    let grace = config.limits.shutdown_grace();
    let drained = tokio::time::timeout(grace, async {
        let _ = (&mut fed_task).await;
        let _ = (&mut nat_task).await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "calls still in flight after the grace period; closing"
        );
        fed_task.abort();
        nat_task.abort();
    }
    if tokio::time::timeout(grace, jobs_task).await.is_err() {
        tracing::warn!("the background jobs did not stop in the grace period");
    }
    // The listening sockets are closed when their tasks end: wait for that, so that
    // a node started again at once on the same addresses can bind them.
    let _ = fed_accept.await;
    let _ = nat_accept.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("node stopped");
    Ok(())
}

/// A server whose HTTP/2 connections are bounded: streams at once, calls handled at
/// once, header list size, flow-control windows (`limits`).
fn bounded(limits: &crate::config::Limits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .concurrency_limit_per_connection(limits.max_calls_per_connection)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
}

/// Accepts TCP connections and runs their TLS handshakes (bounded in time). A
/// connection that proves a certificate of the listener's CA takes one of
/// `limits.max_connections`; every other one holds an unverified slot only, capped in
/// all and per address and closed after `limits.unverified_lifetime`
/// ([`crate::grpc::connections`]). Yields the connections to the gRPC server.
fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    state: &Arc<NodeState>,
    which: Listener,
    mut stop: watch::Receiver<bool>,
) -> (
    ReceiverStream<Result<AuthedStream, io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let limits = &state.config.limits;
    let verified = Arc::new(Semaphore::new(limits.max_connections));
    let unverified = UnverifiedPool::new(
        which.as_str(),
        limits.max_unverified_connections,
        limits.max_unverified_per_address,
        &state.metrics,
    );
    let handshake_timeout = limits.handshake_timeout();
    let lifetime = limits.unverified_lifetime();
    let state = state.clone();
    let refused = move |remote: SocketAddr, reason: &'static str, fields: serde_json::Value| {
        state
            .metrics
            .connections_refused
            .get_or_create(&ConnectionRefusedLabels {
                listener: which.as_str(),
                reason,
            })
            .inc();
        let serde_json::Value::Object(fields) = fields else {
            return;
        };
        refusals::record(
            &state,
            Refused {
                kind: "connection.refused",
                listener: which.as_str(),
                remote,
                fields,
            },
        );
    };
    let accept = tokio::spawn(async move {
        // The five addresses holding the most unverified connections, for the events.
        let holders = |unverified: &UnverifiedPool| -> Vec<serde_json::Value> {
            unverified
                .holders(5)
                .into_iter()
                .map(|(ip, n)| serde_json::json!({ "remote": ip.to_string(), "connections": n }))
                .collect()
        };
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = which.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Until its handshake proves a certificate, a connection is unverified.
            let mut slot = match unverified.admit(remote) {
                Ok(admitted) => {
                    if let Some(evicted) = admitted.evicted {
                        tracing::warn!(listener = which.as_str(), remote = %evicted, limit = EVICTING_LIMIT, "connection closed: too many connections without a verified certificate, its slot given to a newer one");
                        refused(
                            evicted,
                            "evicted",
                            serde_json::json!({
                                "reason": format!("closed without a verified certificate to admit a newer connection (limits.{EVICTING_LIMIT})"),
                                "holders": holders(&unverified),
                            }),
                        );
                    }
                    admitted.slot
                }
                Err(full) => {
                    tracing::warn!(listener = which.as_str(), %remote, limit = full.limit(), "connection refused: too many connections without a verified certificate");
                    refused(
                        remote,
                        full.limit(),
                        serde_json::json!({
                            "reason": format!("too many connections without a verified certificate (limits.{})", full.limit()),
                            "holders": holders(&unverified),
                        }),
                    );
                    continue;
                }
            };
            // Taken here, once: admission just made the slot.
            let Some(mut evicted) = slot.eviction() else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let tx = tx.clone();
            let refused = refused.clone();
            let verified = verified.clone();
            tokio::spawn(async move {
                let handshake = tokio::select! {
                    h = tokio::time::timeout(handshake_timeout, tls.accept(tcp, remote)) => h,
                    _ = &mut evicted => return,
                };
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(listener = which.as_str(), %remote, error = %e, "TLS handshake failed");
                        refused(
                            remote,
                            "handshake_failed",
                            serde_json::json!({ "reason": format!("TLS handshake failed: {e}") }),
                        );
                        return;
                    }
                    Err(_) => {
                        tracing::info!(listener = which.as_str(), %remote, "TLS handshake timed out");
                        refused(
                            remote,
                            "handshake_timeout",
                            serde_json::json!({ "reason": "TLS handshake timed out (limits.handshake_timeout_ms)" }),
                        );
                        return;
                    }
                };
                let stream = if stream.verified() {
                    drop(slot);
                    let Ok(permit) = verified.try_acquire_owned() else {
                        tracing::warn!(listener = which.as_str(), %remote, "connection refused: too many open connections");
                        refused(
                            remote,
                            "max_connections",
                            serde_json::json!({ "reason": "too many open connections (limits.max_connections)" }),
                        );
                        return;
                    };
                    stream.holding(permit)
                } else {
                    // One refused call or a health probe, then closed.
                    stream.holding(slot).closing_after(lifetime, evicted)
                };
                let _ = tx.send(Ok(stream)).await;
            });
        }
    });
    (ReceiverStream::new(rx), accept)
}
