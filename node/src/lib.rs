//! The adep node: federation and national gRPC listeners over mutual TLS, the store,
//! and (as the product grows) the pseudonymised index, follow-ups and the audit log.
//!
//! Module map and dependency rules: see ARCHITECTURE.md. In short, `service` and `peers`
//! are the only modules that convert between proto and domain types, `store::sled_engine`
//! is the only module that names the database crate, and binaries own process concerns.

pub mod check;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod metrics;
pub mod secret;
pub mod store;
#[cfg(any(test, feature = "tooling"))]
pub mod tooling;

/// Installs ring as the process-wide rustls provider. Every TLS configuration here names
/// its provider explicitly; this only guards against a dependency asking for the default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
