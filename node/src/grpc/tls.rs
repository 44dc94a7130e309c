//! Mutual TLS for both listeners and for outbound calls, on rustls with the ring provider.
//!
//! Server side: the handshake requests a client certificate and checks that the client
//! holds its private key, but the chain is verified against the listener's CA right after
//! the handshake, by rustls' own WebPKI verifier. The result travels with the connection
//! ([`ConnInfo`]) and every call on a connection whose certificate did not verify is refused
//! with a gRPC `UNAUTHENTICATED` that says why, rather than a bare TLS alert the client
//! cannot explain. No call is served before that check.
//!
//! Client side: standard WebPKI verification of the server against the expected CA and
//! name, plus, for peers, a check that the server's certificate carries the peer's identity.
//! TLS 1.3 only; ALPN `h2`.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
    pem::PemObject,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};

use crate::{
    domain::principals::CertIdentity,
    grpc::auth::{Authn, identity_of_certificate},
};

/// A TLS file or set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds no usable item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the combination (for instance a key that does not match its certificate).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// The ring crypto provider, the only one this project uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(pem_message(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(pem_message(e)))?;
    if certs.is_empty() {
        return Err(file_err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A certificate revocation list as read from a file.
#[derive(Clone, Debug)]
pub struct Crl {
    /// The list, DER-encoded.
    pub der: CertificateRevocationListDer<'static>,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    /// How many certificates it revokes.
    pub revoked: usize,
}

/// Reads every certificate revocation list of a PEM file (at least one), each checked
/// to be a well-formed X.509 CRL.
pub fn load_crls(path: &Path) -> Result<Vec<Crl>, TlsError> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer as _};
    let file_err = |message: String| TlsError::File {
        path: path.to_owned(),
        message,
    };
    let ders = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| file_err(pem_message(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(pem_message(e)))?;
    if ders.is_empty() {
        return Err(file_err(
            "holds no PEM certificate revocation list (X509 CRL)".into(),
        ));
    }
    ders.into_iter()
        .map(|der| {
            let (issuer, revoked) = {
                let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| {
                    file_err(format!("is not a valid certificate revocation list: {e}"))
                })?;
                (
                    crl.issuer().to_string(),
                    crl.iter_revoked_certificates().count(),
                )
            };
            Ok(Crl {
                der,
                issuer,
                revoked,
            })
        })
        .collect()
}

/// The lists of every file of `paths` (`tls.crls`), and how many certificates they
/// revoke in all.
pub fn load_crl_files(
    paths: &[PathBuf],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, usize), TlsError> {
    let mut ders = Vec::new();
    let mut revoked = 0;
    for path in paths {
        for crl in load_crls(path)? {
            revoked += crl.revoked;
            ders.push(crl.der);
        }
    }
    Ok((ders, revoked))
}

/// Reads a private key (PKCS#8, SEC1 or PKCS#1 PEM).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        message: pem_message(e),
    })
}

fn pem_message(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no PEM item of the expected kind".into()
        }
        other => format!("is not valid PEM: {other:?}"),
    }
}

/// When the first certificate of a PEM file expires, in seconds since the epoch.
pub fn not_after(path: &Path) -> Result<i64, TlsError> {
    let certs = load_certs(path)?;
    use x509_parser::prelude::FromDer as _;
    let (_, cert) =
        x509_parser::prelude::X509Certificate::from_der(&certs[0]).map_err(|e| TlsError::File {
            path: path.to_owned(),
            message: format!("is not a valid X.509 certificate: {e}"),
        })?;
    Ok(cert.validity().not_after.timestamp())
}

/// Everything a node's TLS is made of, read from the files the configuration names:
/// both listeners' server side and the expiry of the node's own certificates.
/// [`crate::grpc::server::prepare`] reads it at start-up and a certificate reload reads it
/// again; nothing is used until all of it has been read and checked.
#[derive(Debug)]
pub struct NodeTls {
    /// The federation listener: the node certificate, peers from the network CA.
    pub federation: ServerTls,
    /// The national listener: the national server certificate, users from the
    /// national CA.
    pub national: ServerTls,
    /// The node's own certificates by metrics name, with their expiry.
    pub certificates: Vec<(&'static str, i64)>,
    /// The revocation lists of `tls.crls`, for the calls to peers too.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// How many certificates they revoke.
    pub revoked: usize,
}

impl NodeTls {
    /// Reads and checks the TLS files of `tls`.
    pub fn from_config(tls: &crate::config::TlsConfig) -> Result<NodeTls, TlsError> {
        let (crls, revoked) = load_crl_files(&tls.crls)?;
        Ok(NodeTls {
            federation: ServerTls::from_files(
                &tls.network_ca,
                &tls.node_cert,
                &tls.node_key,
                &crls,
            )?,
            national: ServerTls::from_files(
                &tls.national_ca,
                &tls.national_cert,
                &tls.national_key,
                &crls,
            )?,
            crls,
            certificates: vec![
                ("node", not_after(&tls.node_cert)?),
                ("national", not_after(&tls.national_cert)?),
            ],
            revoked,
        })
    }
}

/// A root store holding the certificates of a CA file.
pub fn root_store(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Rustls {
            context: format!("{}: CA certificate", path.display()),
            source: e,
        })?;
    }
    Ok(Arc::new(roots))
}

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
                source: e,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls {
                context: format!("{} with {}", cert.display(), key.display()),
                source: e,
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
            permit: None,
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

/// A server-side TLS connection with its authentication outcome.
#[derive(Debug)]
pub struct AuthedStream {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AuthedStream {
    /// Holds a connection-limit permit for as long as the connection lives.
    pub fn with_permit(mut self, permit: tokio::sync::OwnedSemaphorePermit) -> AuthedStream {
        self.permit = Some(permit);
        self
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A client TLS configuration: trust `roots`, present `identity` if given.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    checked_client_config(roots, identity, &[])
}

/// As [`client_config`], refusing a server certificate that one of `crls` revokes
/// (a node calling its peers, with the lists of `tls.crls`).
pub fn checked_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    crls: &[CertificateRevocationListDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .with_crls(crls.iter().cloned())
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Rustls {
            context: "server verifier".into(),
            source: rustls::Error::General(e.to_string()),
        })?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls {
            context: "TLS 1.3".into(),
            source: e,
        })?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        Some((certs, key)) => {
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rustls {
                    context: "client certificate and key".into(),
                    source: e,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Where and how to reach a TLS server.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The name the server certificate must be valid for (default: `host`).
    pub server_name: Option<String>,
    /// The identity the server certificate must carry, if any.
    pub identity: Option<CertIdentity>,
}

/// A gRPC channel to `target` over mutual TLS. It connects lazily: a peer that is down
/// makes calls fail with `UNAVAILABLE`, it does not block creating the channel.
pub fn channel(
    target: Target,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    let server_name = ServerName::try_from(
        target
            .server_name
            .clone()
            .unwrap_or_else(|| target.host.clone()),
    )
    .map_err(|e| format!("invalid server name: {e}"))?;
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("invalid endpoint: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let connector = TlsConnector::from(config);
    let target = Arc::new(target);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                if let Some(expected) = &target.identity {
                    let leaf = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .ok_or_else(|| io::Error::other("server presented no certificate"))?;
                    let found = identity_of_certificate(leaf).map_err(io::Error::other)?;
                    if &found != expected {
                        return Err(io::Error::other(format!(
                            "server certificate identity is {}, expected {}",
                            found.uri(),
                            expected.uri()
                        )));
                    }
                }
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
