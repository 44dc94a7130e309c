//! The client side: a TLS configuration that trusts a CA and presents a certificate,
//! and a lazily connecting gRPC channel that checks the server's identity.

use super::*;
use crate::{domain::principals::CertIdentity, grpc::auth::identity_of_certificate};
use rustls::{RootCertStore, client::WebPkiServerVerifier};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use std::{io, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
            cause: rustls::Error::General(e.to_string()),
        })?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls {
            context: "TLS 1.3".into(),
            cause: e,
        })?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        Some((certs, key)) => {
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rustls {
                    context: "client certificate and key".into(),
                    cause: e,
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
