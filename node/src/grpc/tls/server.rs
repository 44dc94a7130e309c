//! The server side of a listener: its certificate and CA, reloadable; the handshake
//! asks for a client certificate and the chain is checked against the listener's CA
//! right after it, so that the outcome travels with the connection.

use super::*;
use crate::grpc::auth::{Authn, identity_of_certificate};
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// The server side of one listener: its certificate, and the CA its clients must come
/// from. Clones share one state, which [`ServerTls::reload`] replaces: new connections
/// get the new certificate and CA, open ones keep theirs.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<std::sync::RwLock<Arc<ServerState>>>,
}

struct ServerState {
    acceptor: TlsAcceptor,
    chain: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the server TLS of a listener from PEM files.
    /// `crls` are checked against client certificates: a certificate one of them
    /// revokes is refused; one whose issuer publishes none here is not checked.
    pub fn from_files(
        client_ca: &Path,
        cert: &Path,
        key: &Path,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            current: Arc::new(std::sync::RwLock::new(Arc::new(Self::state(
                client_ca, cert, key, crls,
            )?))),
        })
    }

    /// Serves new connections with what `other` serves (see [`crate::grpc::NodeState::reload_certificates`]).
    pub fn replace_with(&self, other: &ServerTls) {
        let fresh = other.now();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    fn now(&self) -> Arc<ServerState> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn state(
        client_ca: &Path,
        cert: &Path,
        key: &Path,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<ServerState, TlsError> {
        let roots = root_store(client_ca)?;
        let chain = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .with_crls(crls.iter().cloned())
            // Leaves are issued straight by the CA; a CA that publishes no list here
            // (the other listener's) leaves its certificates unchecked.
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| TlsError::File {
                path: client_ca.to_owned(),
                message: format!("cannot be used as a client CA: {e}"),
            })?;
        let verifier = Arc::new(DeferredClientVerifier {
            chain: chain.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls {
                context: "TLS 1.3".into(),
                cause: e,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls {
                context: format!("{} with {}", cert.display(), key.display()),
                cause: e,
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerState {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            chain,
        })
    }

    /// Runs the handshake on an accepted TCP connection and authenticates the client.
    pub async fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> io::Result<AuthedStream> {
        let state = self.now();
        let tls = state.acceptor.accept(tcp).await?;
        let authn = authenticate(&state, tls.get_ref().1.peer_certificates());
        Ok(AuthedStream {
            inner: tls,
            info: ConnInfo {
                remote,
                authn: Arc::new(authn),
            },
            slot: None,
            deadline: None,
        })
    }
}

/// Authenticates a client's certificate chain against the listener's CA.
fn authenticate(state: &ServerState, certs: Option<&[CertificateDer<'static>]>) -> Authn {
    let Some((leaf, intermediates)) = certs.and_then(|c| c.split_first()) else {
        return Authn::Anonymous;
    };
    match state
        .chain
        .verify_client_cert(leaf, intermediates, UnixTime::now())
    {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
            return Authn::Revoked(identity_of_certificate(leaf).ok());
        }
        Err(e) => return Authn::Untrusted(e.to_string()),
    }
    match identity_of_certificate(leaf) {
        Ok(id) => Authn::Verified(id),
        Err(why) => Authn::NoIdentity(why),
    }
}

/// Asks for a client certificate and checks possession of its key during the handshake,
/// leaving chain verification to [`authenticate`] right after it.
#[derive(Debug)]
struct DeferredClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Verified after the handshake against the same roots; see the module docs.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// What a connection's calls know about it: the remote address and who authenticated.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The outcome of certificate authentication.
    pub authn: Arc<Authn>,
}

/// A server-side TLS connection with its authentication outcome, the admission slot it
/// holds for as long as it lives, and possibly the time it is closed at.
pub struct AuthedStream {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
    slot: Option<Box<dyn std::any::Any + Send + Sync>>,
    deadline: Option<Closing>,
}

/// When an unverified connection is closed: at the end of its lifetime, or when the
/// pool gives its slot to a newer connection.
struct Closing {
    lifetime: Pin<Box<tokio::time::Sleep>>,
    /// None once it has resolved: a resolved receiver must not be polled again.
    evicted: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for AuthedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthedStream")
            .field("info", &self.info)
            .field("closes", &self.deadline.is_some())
            .finish_non_exhaustive()
    }
}

impl AuthedStream {
    /// Whether the client proved a certificate of the listener's CA.
    pub fn verified(&self) -> bool {
        matches!(*self.info.authn, Authn::Verified(_))
    }

    /// The client's address.
    pub fn remote(&self) -> SocketAddr {
        self.info.remote
    }

    /// Holds an admission slot (released when the connection closes).
    pub fn holding(mut self, slot: impl Send + Sync + 'static) -> AuthedStream {
        self.slot = Some(Box::new(slot));
        self
    }

    /// Closes the connection `after` from now, or when `evicted` resolves (sent or
    /// dropped): reads and writes fail from then on.
    pub fn closing_after(
        mut self,
        after: std::time::Duration,
        evicted: tokio::sync::oneshot::Receiver<()>,
    ) -> AuthedStream {
        self.deadline = Some(Closing {
            lifetime: Box::pin(tokio::time::sleep(after)),
            evicted: Some(evicted),
        });
        self
    }

    /// Fails once the deadline, if any, has passed or the slot was given away.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let closing = self.deadline.as_mut()?;
        if closing.lifetime.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection's unverified lifetime is over",
            ));
        }
        let evicted = match closing.evicted.as_mut() {
            Some(rx) => Pin::new(rx).poll(cx).is_ready(),
            None => true,
        };
        evicted.then(|| {
            closing.evicted = None;
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection's unverified slot was given to a newer connection",
            )
        })
    }
}

impl tonic::transport::server::Connected for AuthedStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for AuthedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
