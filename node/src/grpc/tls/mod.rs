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
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{RootCertStore, crypto::CryptoProvider};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
};

mod client;
pub use client::{Target, channel, checked_client_config, client_config};

mod server;
pub use server::{AuthedStream, ConnInfo, ServerTls};

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
    #[error("{context}: {cause}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls' reason.
        cause: rustls::Error,
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
            cause: e,
        })?;
    }
    Ok(Arc::new(roots))
}
