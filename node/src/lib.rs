//! The adep node, in layers (ARCHITECTURE.md has the map and the rules):
//!
//! * [`domain`]: identities, the match key scheme, matching, hit references, key
//!   epochs, the follow-up state machine, the audit log, the principals. No gRPC, no
//!   protobuf, no database engine, no sockets.
//! * [`app`]: the use cases and background jobs, on the store trait and a peer trait
//!   in domain types.
//! * [`grpc`]: the edge. Handlers, the one conversion module, the one error mapping,
//!   the peer clients, TLS and the server.
//! * [`store`]: the storage trait; only `store::sled_engine` names the database
//!   crate, and `store::memory` serves unit tests.
//! * [`tooling`] (feature `tooling`): what the server never runs.
//!
//! Binaries own process concerns: arguments, signals, exit codes, the global
//! subscriber.

pub mod app;
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
