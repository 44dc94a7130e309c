//! The node's use cases, one file each, and its background jobs. They take and return
//! domain types, work on the store through its trait and talk to peers through
//! [`peers::PeerNetwork`]: no gRPC, no protobuf, no database engine, no sockets. The
//! gRPC edge calls them; so could a second interface.

pub mod answer;
pub mod audit;
pub mod certificates;
pub mod error;
pub mod evaluate;
pub mod events;
pub mod gauges;
pub mod jobs;
pub mod limits;
pub mod listing;
pub mod owner;
pub mod peers;
pub mod records;
pub mod refusals;
pub mod requester;
pub mod rotation;
pub mod search;
pub mod state;
pub mod status;
#[cfg(test)]
mod testkit;

pub use error::AppError;
pub use state::NodeState;
