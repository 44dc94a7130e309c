//! Tooling the server never runs: the development PKI, synthetic records, offline
//! match-testing and the CLI's profiles. Compiled only with the `tooling` feature
//! (the `adep` CLI and the tests enable it), so the node cannot depend on it.

pub mod matchtest;
pub mod pki;
pub mod profile;
pub mod requests;
pub mod synthetic;
