//! The peer clients: [`PeerClients`] implements the application's
//! [`PeerNetwork`] with a gRPC client per peer over mutual TLS that checks the peer's
//! identity. Every call runs under `limits.peer_timeout`, and every failure is sorted
//! into the classes an officer or operator sees. This is the only code that sends
//! proto messages to peers.

use std::{
    future::Future,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use adep_proto::v1::{self, federation_client::FederationClient};
use rustls_pki_types::CertificateRevocationListDer;
use tonic::{Code, transport::Channel};

use crate::{
    app::{
        evaluate::Evaluation,
        peers::{
            EvaluateQuery, MatchQuery, PeerCall, PeerFailure, PeerHit, PeerInfo, PeerNetwork,
            Rejection,
        },
    },
    config::{Config, parse_endpoint},
    domain::{
        followup::{DecisionNotice, Filing, FollowUpId, Receipt},
        principals::{CertIdentity, Country},
    },
    grpc::{
        convert::federation as wire,
        tls::{self, Target, TlsError},
    },
};

/// One peer: its country, endpoint and a lazily connected client.
#[derive(Clone, Debug)]
struct Peer {
    info: PeerInfo,
    client: FederationClient<Channel>,
}

/// Clients to every configured peer. Clones share one set of clients, which
/// [`PeerClients::replace_with`] replaces (new certificates) without disturbing calls
/// in flight.
#[derive(Clone, Debug)]
pub struct PeerClients {
    own: Country,
    deadline: Duration,
    peers: Arc<RwLock<Arc<Vec<Peer>>>>,
}

impl PeerClients {
    /// Clients to every peer of `config`, presenting the node certificate and
    /// refusing a server certificate that one of `crls` revokes.
    pub fn from_config(
        config: &Config,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<PeerClients, TlsError> {
        Ok(PeerClients {
            own: config.country,
            deadline: config.limits.peer_timeout(),
            peers: Arc::new(RwLock::new(Arc::new(clients(config, crls)?))),
        })
    }

    /// Uses the clients of `other` from now on.
    pub fn replace_with(&self, other: &PeerClients) {
        let fresh = other.snapshot();
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn snapshot(&self) -> Arc<Vec<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The client of `country`, if it is a configured peer.
    fn client(&self, country: Country) -> Result<FederationClient<Channel>, PeerFailure> {
        self.snapshot()
            .iter()
            .find(|p| p.info.country == country)
            .map(|p| p.client.clone())
            .ok_or_else(|| {
                PeerFailure::Unavailable(format!("{country} is no longer a configured peer"))
            })
    }

    /// Runs one call under the deadline and sorts its failure.
    async fn call<T, F, Fut>(&self, peer: Country, call: F) -> Result<T, PeerFailure>
    where
        F: FnOnce(FederationClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client(peer)?;
        match tokio::time::timeout(self.deadline, call(client)).await {
            Err(_) => Err(PeerFailure::TimedOut),
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
        }
    }
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
    config
        .peers
        .iter()
        .map(|p| {
            // Both were validated with the configuration.
            let ep = parse_endpoint(&p.endpoint).map_err(|message| TlsError::File {
                path: "peers".into(),
                message,
            })?;
            let identity =
                CertIdentity::parse(&p.expected_identity()).map_err(|message| TlsError::File {
                    path: "peers".into(),
                    message,
                })?;
            let channel = tls::channel(
                Target {
                    host: ep.host,
                    port: ep.port,
                    server_name: p.server_name.clone(),
                    identity: Some(identity),
                },
                client_config.clone(),
                // Longer than the call's deadline, which bounds every call: a peer
                // whose handshake hangs is then reported timed out, not as a
                // transport error.
                config.limits.peer_timeout() * 2,
            )
            .map_err(|message| TlsError::File {
                path: "peers".into(),
                message: format!("peer {}: {message}", p.country),
            })?;
            Ok(Peer {
                info: PeerInfo {
                    country: p.country,
                    endpoint: p.endpoint.clone(),
                },
                client: FederationClient::new(channel)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            })
        })
        .collect()
}

impl PeerNetwork for PeerClients {
    fn peers(&self) -> Vec<PeerInfo> {
        self.snapshot().iter().map(|p| p.info.clone()).collect()
    }

    fn hello(&self, peer: Country) -> PeerCall<'_, ()> {
        let hello = v1::HelloRequest {
            country: self.own.to_string(),
            protocol_version: adep_proto::PROTOCOL_VERSION,
        };
        Box::pin(async move {
            self.call(peer, |mut c| async move { c.hello(hello).await })
                .await
                .map(|_| ())
        })
    }

    fn evaluate(&self, peer: Country, query: Arc<EvaluateQuery>) -> PeerCall<'_, Evaluation> {
        let request = wire::evaluate_request(self.own, &query);
        Box::pin(async move {
            let answer = self
                .call(peer, |mut c| async move { c.evaluate(request).await })
                .await?;
            wire::peer_evaluation(answer).map_err(PeerFailure::Unavailable)
        })
    }

    fn match_keys(&self, peer: Country, query: Arc<MatchQuery>) -> PeerCall<'_, Vec<PeerHit>> {
        let request = wire::match_request(self.own, &query);
        Box::pin(async move {
            let answer = self
                .call(peer, |mut c| async move { c.r#match(request).await })
                .await?;
            wire::peer_hits(answer).map_err(PeerFailure::Unavailable)
        })
    }

    fn file(&self, peer: Country, filing: Filing) -> PeerCall<'_, Receipt> {
        let filing = wire::filing(self.own, &filing);
        Box::pin(async move {
            let receipt = self
                .call(peer, |mut c| async move { c.file_follow_up(filing).await })
                .await?;
            wire::filed_receipt(receipt).map_err(PeerFailure::Unavailable)
        })
    }

    fn withdraw(&self, peer: Country, id: FollowUpId) -> PeerCall<'_, Receipt> {
        let withdrawal = v1::FollowUpWithdrawal {
            request_id: id.to_string(),
            country: self.own.to_string(),
        };
        Box::pin(async move {
            let receipt = self
                .call(peer, |mut c| async move {
                    c.withdraw_follow_up(withdrawal).await
                })
                .await?;
            wire::peer_receipt(receipt).map_err(PeerFailure::Unavailable)
        })
    }

    fn poll(&self, peer: Country, ids: Vec<FollowUpId>) -> PeerCall<'_, Vec<Receipt>> {
        let poll = v1::FollowUpPoll {
            country: self.own.to_string(),
            request_ids: ids.iter().map(ToString::to_string).collect(),
        };
        Box::pin(async move {
            let answer = self
                .call(peer, |mut c| async move { c.poll_follow_ups(poll).await })
                .await?;
            // A receipt this node cannot read is left out; the others count.
            Ok(answer
                .receipts
                .into_iter()
                .filter_map(|r| wire::peer_receipt(r).ok())
                .collect())
        })
    }

    fn deliver(&self, peer: Country, decision: DecisionNotice) -> PeerCall<'_, ()> {
        let decision = wire::decision(self.own, &decision);
        Box::pin(async move {
            self.call(
                peer,
                |mut c| async move { c.deliver_decision(decision).await },
            )
            .await
            .map(|_| ())
        })
    }
}

/// Sorts a peer's error status into the classes an officer or operator sees.
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
        Code::InvalidArgument | Code::OutOfRange => {
            PeerFailure::Rejected(Rejection::Invalid, message)
        }
        Code::NotFound => PeerFailure::Rejected(Rejection::NotFound, message),
        Code::AlreadyExists => PeerFailure::Rejected(Rejection::AlreadyExists, message),
        Code::FailedPrecondition => PeerFailure::Rejected(Rejection::FailedPrecondition, message),
        Code::Unknown => PeerFailure::Unavailable(transport_cause(status).unwrap_or(message)),
        code => PeerFailure::Rejected(Rejection::Other, format!("{code:?}: {message}")),
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
