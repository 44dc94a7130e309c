//! Prometheus metrics (DESIGN section 10), served in the text exposition format on
//! their own plain-HTTP address (`metrics.listen`), apart from both gRPC listeners.
//!
//! Labels take their values from closed sets only: listener, RPC name (of this
//! node's own services; anything else is `other`), status code, role, peer country,
//! quality, follow-up state, certificate name. No label or value is ever a user id,
//! a name, a date, a record id, a hit reference or a digest, and a caller cannot grow
//! the number of series beyond those sets.

use std::{net::SocketAddr, sync::atomic::AtomicI64, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of a call a listener served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `federation` or `national`.
    pub listener: &'static str,
    /// The RPC's name, such as `Match`.
    pub rpc: &'static str,
    /// The calling peer's country, the calling user's role, or `none`.
    pub caller: String,
    /// The gRPC status code's name.
    pub code: &'static str,
}

/// Labels of a call's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `federation` or `national`.
    pub listener: &'static str,
    /// The RPC's name.
    pub rpc: &'static str,
}

/// Labels of a call to a peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerCallLabels {
    /// The peer's country.
    pub peer: String,
    /// The RPC's name.
    pub rpc: &'static str,
    /// `ok`, `unavailable`, `timed_out`, `refused` or `failed`.
    pub outcome: &'static str,
}

/// Labels of hits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HitLabels {
    /// `issued` (to peers, by Match) or `received` (by this node's searches).
    pub direction: &'static str,
    /// `exact`, `strong` or `weak`.
    pub quality: &'static str,
}

/// Labels of follow-ups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowUpLabels {
    /// `incoming` or `outgoing`.
    pub direction: &'static str,
    /// The follow-up's state.
    pub state: &'static str,
}

/// Labels of a certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `node` (federation) or `national`.
    pub certificate: &'static str,
}

/// Labels of a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `federation` or `national`.
    pub listener: &'static str,
}

/// Labels of a remote address holding connections without a verified certificate.
/// Bounded: only addresses holding such connections now (at most
/// `limits.max_unverified_connections`) have a series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteLabels {
    /// `federation` or `national`.
    pub listener: &'static str,
    /// The remote IP address.
    pub remote: String,
}

/// Labels of a refused connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionRefusedLabels {
    /// `federation` or `national`.
    pub listener: &'static str,
    /// `max_connections`, `max_unverified_connections`, `max_unverified_per_address`,
    /// `handshake_failed` or `handshake_timeout`.
    pub reason: &'static str,
}

type Gauge64 = Gauge<i64, AtomicI64>;

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Calls served, by listener, RPC, caller and code.
    pub calls: Family<CallLabels, Counter>,
    /// Time to answer a call (to its first response for a stream).
    pub call_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// Calls made to peers, by outcome.
    pub peer_calls: Family<PeerCallLabels, Counter>,
    /// Time a peer took to answer.
    pub peer_call_seconds: Family<PeerCallLabels, Histogram, fn() -> Histogram>,
    /// Hits issued and received, by quality.
    pub hits: Family<HitLabels, Counter>,
    /// Calls refused by a rate limit, by RPC.
    pub rate_limited: Family<RpcLabels, Counter>,
    /// Follow-ups by direction and state (set at each scrape).
    pub followups: Family<FollowUpLabels, Gauge64>,
    /// Incoming follow-ups undecided past `followup.decision_deadline`.
    pub followups_overdue: Gauge64,
    /// Decisions waiting for the requesting node to acknowledge them.
    pub outbox_backlog: Gauge64,
    /// Records in the match index.
    pub index_records: Gauge64,
    /// Keys in the match index.
    pub index_keys: Gauge64,
    /// The key epoch the index answers under.
    pub key_epoch: Gauge64,
    /// The epoch of a rotation under way (0 when none).
    pub key_epoch_next: Gauge64,
    /// 1 while the next epoch's index is being built.
    pub key_rotation_building: Gauge64,
    /// Seconds until each of the node's own certificates expires.
    pub certificate_expiry_seconds: Family<CertLabels, Gauge64>,
    /// Audit entries written since start.
    pub audit_entries: Counter,
    /// Open connections without a verified certificate, by listener.
    pub unverified_connections: Family<ListenerLabels, Gauge64>,
    /// The same, by remote address holding them.
    pub unverified_by_remote: Family<RemoteLabels, Gauge64>,
    /// Connections refused or closed, by reason.
    pub connections_refused: Family<ConnectionRefusedLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("adep");
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let peer_calls = Family::<PeerCallLabels, Counter>::default();
        let peer_call_seconds =
            Family::<PeerCallLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let hits = Family::<HitLabels, Counter>::default();
        let rate_limited = Family::<RpcLabels, Counter>::default();
        let followups = Family::<FollowUpLabels, Gauge64>::default();
        let followups_overdue = Gauge64::default();
        let outbox_backlog = Gauge64::default();
        let index_records = Gauge64::default();
        let index_keys = Gauge64::default();
        let key_epoch = Gauge64::default();
        let key_epoch_next = Gauge64::default();
        let key_rotation_building = Gauge64::default();
        let certificate_expiry_seconds = Family::<CertLabels, Gauge64>::default();
        let audit_entries = Counter::default();
        registry.register(
            "calls",
            "Calls served, by listener, RPC, caller (peer country or user role) and gRPC code",
            calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Time to answer a call, by listener and RPC",
            call_seconds.clone(),
        );
        registry.register(
            "peer_calls",
            "Calls made to peer nodes, by peer, RPC and outcome",
            peer_calls.clone(),
        );
        registry.register(
            "peer_call_duration_seconds",
            "Time a peer node took to answer, by peer, RPC and outcome",
            peer_call_seconds.clone(),
        );
        registry.register(
            "hits",
            "Hits issued to peers and received by this node's searches, by quality",
            hits.clone(),
        );
        registry.register(
            "rate_limited",
            "Calls refused by a rate limit, by RPC",
            rate_limited.clone(),
        );
        registry.register(
            "followups",
            "Follow-up requests by direction and state",
            followups.clone(),
        );
        registry.register(
            "followups_overdue",
            "Incoming follow-ups undecided past followup.decision_deadline",
            followups_overdue.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Decisions waiting for the requesting node to acknowledge them",
            outbox_backlog.clone(),
        );
        registry.register(
            "index_records",
            "National records in the match index",
            index_records.clone(),
        );
        registry.register("index_keys", "Match keys in the index", index_keys.clone());
        registry.register(
            "key_epoch",
            "The key epoch the index answers under",
            key_epoch.clone(),
        );
        registry.register(
            "key_epoch_next",
            "The epoch of a key rotation under way, 0 when none",
            key_epoch_next.clone(),
        );
        registry.register(
            "key_rotation_building",
            "1 while the next epoch's index is being built",
            key_rotation_building.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the node's own certificate expires (negative once expired)",
            certificate_expiry_seconds.clone(),
        );
        registry.register(
            "audit_entries",
            "Audit entries written since the node started",
            audit_entries.clone(),
        );
        let unverified_connections = Family::<ListenerLabels, Gauge64>::default();
        let unverified_by_remote = Family::<RemoteLabels, Gauge64>::default();
        let connections_refused = Family::<ConnectionRefusedLabels, Counter>::default();
        registry.register(
            "unverified_connections",
            "Open connections that have not proven a certificate of the listener's CA",
            unverified_connections.clone(),
        );
        registry.register(
            "unverified_connections_by_remote",
            "Open connections without a verified certificate, by the remote address holding them",
            unverified_by_remote.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused, by reason",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            unverified_connections,
            unverified_by_remote,
            connections_refused,
            calls,
            call_seconds,
            peer_calls,
            peer_call_seconds,
            hits,
            rate_limited,
            followups,
            followups_overdue,
            outbox_backlog,
            index_records,
            index_keys,
            key_epoch,
            key_epoch_next,
            key_rotation_building,
            certificate_expiry_seconds,
            audit_entries,
        }
    }

    /// Counts one call to a peer.
    pub fn peer_call(&self, peer: &str, rpc: &'static str, outcome: &'static str, took: Duration) {
        let labels = PeerCallLabels {
            peer: peer.to_owned(),
            rpc,
            outcome,
        };
        self.peer_calls.get_or_create(&labels).inc();
        self.peer_call_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts hits.
    pub fn hits(&self, direction: &'static str, quality: &'static str, n: u64) {
        self.hits
            .get_or_create(&HitLabels { direction, quality })
            .inc_by(n);
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The name of an RPC from its path, if it belongs to this node's services; paths
/// come from the network, so anything else is `other` and no label grows with them.
pub fn rpc_name(path: &str) -> &'static str {
    const KNOWN: &[(&str, &[&str])] = &[
        (
            "/adep.v1.Federation/",
            &[
                "Hello",
                "Evaluate",
                "Match",
                "FileFollowUp",
                "WithdrawFollowUp",
                "PollFollowUps",
                "DeliverDecision",
            ],
        ),
        (
            "/adep.v1.National/",
            &[
                "Status",
                "Search",
                "ImportRecords",
                "DeleteRecords",
                "CountRecords",
                "RequestFollowUp",
                "ListFollowUps",
                "ShowFollowUp",
                "DecideFollowUp",
                "WithdrawFollowUp",
                "ExportAudit",
                "VerifyAudit",
                "ReloadCertificates",
                "RotateKeys",
            ],
        ),
        ("/grpc.health.v1.Health/", &["Check", "Watch"]),
        (
            "/grpc.reflection.v1.ServerReflection/",
            &["ServerReflectionInfo"],
        ),
    ];
    for (service, methods) in KNOWN {
        if let Some(method) = path.strip_prefix(service)
            && let Some(m) = methods.iter().find(|m| **m == method)
        {
            return m;
        }
    }
    "other"
}

/// Serves `GET /metrics` (and nothing else) on `listener` until `stop` resolves;
/// `scrape` gives the text of each scrape.
pub async fn serve<S, F>(
    listener: tokio::net::TcpListener,
    scrape: S,
    stop: impl Future<Output = ()> + Send + 'static,
) where
    S: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = String> + Send + 'static,
{
    use http_body_util::Full;
    use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};

    tokio::pin!(stop);
    loop {
        let (tcp, _remote): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let scrape = scrape.clone();
                async move {
                    if req.method() != Method::GET {
                        Response::builder()
                            .status(StatusCode::METHOD_NOT_ALLOWED)
                            .body(Full::new(Bytes::from_static(b"GET only\n")))
                    } else if req.uri().path() != "/metrics" {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                    } else {
                        let text = scrape().await;
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(text)))
                    }
                }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                tracing::debug!(error = %e, "metrics: a scrape connection timed out");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_come_from_a_closed_set() {
        assert_eq!(rpc_name("/adep.v1.Federation/Match"), "Match");
        assert_eq!(rpc_name("/adep.v1.National/Search"), "Search");
        assert_eq!(rpc_name("/adep.v1.National/Müller"), "other");
        assert_eq!(rpc_name("/x/Match"), "other");
    }

    #[test]
    fn every_rpc_of_the_adep_services_has_a_name() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(adep_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert_eq!(
                        rpc_name(&path),
                        method.name(),
                        "{path} is missing from KNOWN"
                    );
                    methods += 1;
                }
            }
        }
        assert!(methods >= 20, "{methods}");
    }

    #[test]
    fn encodes_the_text_format() {
        let m = Metrics::new();
        m.hits("issued", "strong", 2);
        m.peer_call("DE", "Match", "ok", Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains("adep_hits_total{direction=\"issued\",quality=\"strong\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("adep_peer_call_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
