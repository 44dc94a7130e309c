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

/// For the binaries' short commands: a closed standard output (`adep audit export |
/// head -1`) calls `end` (the binary's quiet exit with status 0, as `cat` ends)
/// instead of a panic naming the source and status 101. Print macros panic on a
/// broken pipe because the Rust runtime ignores SIGPIPE; this hook recognises that
/// panic only. How the process ends stays with the binary.
pub fn on_closed_output(end: fn() -> !) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        let broken_pipe = message.is_some_and(|m| {
            m.starts_with("failed printing to stdout") && m.contains("Broken pipe")
        });
        if broken_pipe {
            end();
        }
        default(info);
    }));
}
