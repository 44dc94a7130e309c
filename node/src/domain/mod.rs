//! The domain: what a node knows and decides, with no gRPC, no protobuf, no database
//! engine and no sockets. Each module takes and returns domain types.

pub mod audit;
pub mod digests;
pub mod epochs;
pub mod followup;
pub mod hitref;
pub mod identity;
pub mod index;
pub mod matching;
pub mod principals;
pub mod pseudonymise;
pub mod reason;
