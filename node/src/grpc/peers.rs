//! Outbound clients to every peer node, and concurrent fan-out with a per-peer deadline:
//! one slow or dead peer never delays the answers of the others beyond that deadline.

use std::{
    future::Future,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use adep_proto::v1::federation_client::FederationClient;
use rustls_pki_types::CertificateRevocationListDer;
use tokio::{task::JoinSet, time::Instant};
use tonic::{Code, transport::Channel};

use crate::{
    config::{Config, parse_endpoint},
    domain::principals::CertIdentity,
    domain::principals::Country,
    grpc::tls::{self, Target, TlsError},
};

/// One peer: its country, endpoint and a lazily connected client.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's country.
    pub country: Country,
    /// Its federation endpoint, as configured.
    pub endpoint: String,
    /// A client over mutual TLS that checks the peer's identity.
    pub client: FederationClient<Channel>,
}

/// Every configured peer. Clones share one set of clients, which [`Peers::reload`]
/// replaces (new certificates) without disturbing calls in flight.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    peers: Arc<RwLock<Arc<Vec<Peer>>>>,
}

/// How a call to one peer ended, when it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFailure {
    /// No answer before the deadline.
    TimedOut,
    /// Not reachable, or the connection failed.
    Unavailable(String),
    /// The peer refused us (authentication, permission, rate limit).
    Refused(String),
    /// The peer answered with another error.
    Failed(String),
}

/// One peer's outcome in a fan-out.
#[derive(Debug)]
pub struct PeerOutcome<T> {
    /// The peer's country.
    pub country: Country,
    /// Its endpoint.
    pub endpoint: String,
    /// The answer or why there is none.
    pub result: Result<T, PeerFailure>,
    /// Time until the answer or the failure.
    pub elapsed: Duration,
}

impl Peers {
    /// Clients to every peer of `config`, presenting the node certificate and
    /// refusing a server certificate that one of `crls` revokes.
    pub fn from_config(
        config: &Config,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Peers, TlsError> {
        Ok(Peers {
            peers: Arc::new(RwLock::new(Arc::new(Self::clients(config, crls)?))),
        })
    }

    /// Uses the clients of `other` from now on.
    pub fn replace_with(&self, other: &Peers) {
        let fresh = other.snapshot();
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn snapshot(&self) -> Arc<Vec<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn clients(
        config: &Config,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Vec<Peer>, TlsError> {
        let roots = tls::root_store(&config.tls.network_ca)?;
        let identity = (
            tls::load_certs(&config.tls.node_cert)?,
            tls::load_key(&config.tls.node_key)?,
        );
        let client_config = tls::checked_client_config(roots, Some(identity), crls)?;
        let max = config.limits.max_message_bytes;
        let peers = config
            .peers
            .iter()
            .map(|p| {
                // Both were validated with the configuration.
                let ep = parse_endpoint(&p.endpoint).map_err(|message| TlsError::File {
                    path: "peers".into(),
                    message,
                })?;
                let identity = CertIdentity::parse(&p.expected_identity()).map_err(|message| {
                    TlsError::File {
                        path: "peers".into(),
                        message,
                    }
                })?;
                let channel = tls::channel(
                    Target {
                        host: ep.host,
                        port: ep.port,
                        server_name: p.server_name.clone(),
                        identity: Some(identity),
                    },
                    client_config.clone(),
                    config.limits.peer_timeout(),
                )
                .map_err(|message| TlsError::File {
                    path: "peers".into(),
                    message: format!("peer {}: {message}", p.country),
                })?;
                Ok(Peer {
                    country: p.country,
                    endpoint: p.endpoint.clone(),
                    client: FederationClient::new(channel)
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(peers)
    }

    /// The peer of `country`, if configured.
    pub fn get(&self, country: Country) -> Option<Peer> {
        self.snapshot()
            .iter()
            .find(|p| p.country == country)
            .cloned()
    }

    /// Every peer, in configuration order.
    pub fn all(&self) -> Vec<Peer> {
        self.snapshot().to_vec()
    }

    /// Calls every peer concurrently, each under `deadline`, and returns every outcome in
    /// configuration order once all have answered, failed or timed out.
    pub async fn fan_out<T, F, Fut>(&self, deadline: Duration, call: F) -> Vec<PeerOutcome<T>>
    where
        T: Send + 'static,
        F: Fn(Peer) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        let peers = self.snapshot();
        let mut set = JoinSet::new();
        for (i, peer) in peers.iter().enumerate() {
            let fut = call(peer.clone());
            set.spawn(async move {
                let start = Instant::now();
                let result = match tokio::time::timeout(deadline, fut).await {
                    Err(_) => Err(PeerFailure::TimedOut),
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(status)) => Err(classify(&status)),
                };
                (i, result, start.elapsed())
            });
        }
        let mut results: Vec<Option<(Result<T, PeerFailure>, Duration)>> =
            (0..peers.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, result, elapsed)) = joined {
                results[i] = Some((result, elapsed));
            }
        }
        peers
            .iter()
            .zip(results)
            .map(|(peer, r)| {
                let (result, elapsed) = r.unwrap_or((
                    Err(PeerFailure::Failed("the call task failed".into())),
                    Duration::ZERO,
                ));
                PeerOutcome {
                    country: peer.country,
                    endpoint: peer.endpoint.clone(),
                    result,
                    elapsed,
                }
            })
            .collect()
    }
}

impl<T> PeerOutcome<T> {
    /// The outcome's name in metrics: `ok`, `timed_out`, `unavailable`, `refused` or
    /// `failed`.
    pub fn outcome_name(&self) -> &'static str {
        match &self.result {
            Ok(_) => "ok",
            Err(PeerFailure::TimedOut) => "timed_out",
            Err(PeerFailure::Unavailable(_)) => "unavailable",
            Err(PeerFailure::Refused(_)) => "refused",
            Err(PeerFailure::Failed(_)) => "failed",
        }
    }
}

/// Sorts a peer's error status into the states an officer or operator sees.
fn classify(status: &tonic::Status) -> PeerFailure {
    let message = status.message().to_owned();
    match status.code() {
        Code::DeadlineExceeded => PeerFailure::TimedOut,
        Code::Unavailable | Code::Cancelled => {
            PeerFailure::Unavailable(transport_cause(status).unwrap_or(message))
        }
        Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted => {
            PeerFailure::Refused(message)
        }
        _ => PeerFailure::Failed(format!("{:?}: {message}", status.code())),
    }
}

/// The innermost cause of a transport failure, which says more than "transport error".
fn transport_cause(status: &tonic::Status) -> Option<String> {
    let mut err: &(dyn std::error::Error + 'static) = std::error::Error::source(status)?;
    while let Some(next) = err.source() {
        err = next;
    }
    Some(err.to_string())
}
