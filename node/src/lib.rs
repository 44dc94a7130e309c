//! The adep node: federation and national gRPC listeners over mutual TLS, the store,
//! and (as the product grows) the pseudonymised index, follow-ups and the audit log.
//!
//! Module map and dependency rules: see ARCHITECTURE.md. In short, `service` and `peers`
//! are the only modules that convert between proto and domain types, `store::sled_engine`
//! is the only module that names the database crate, and binaries own process concerns.

pub mod audit;
pub mod auth;
pub mod check;
pub mod client;
pub mod config;
pub mod followup;
pub mod hitref;
pub mod identity;
pub mod index;
pub mod matching;
pub mod matchtest;
pub mod metrics;
pub mod peers;
pub mod pki;
pub mod pseudonymise;
pub mod reason;
pub mod rotation;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;
pub mod synthetic;
pub mod tls;

/// Installs ring as the process-wide rustls provider. Every TLS configuration here names
/// its provider explicitly; this only guards against a dependency asking for the default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
