//! What the use cases share: the configuration, the store, the indexes, the audit log,
//! the peers, the limits and the metrics. A holder with no behaviour of its own.

use std::sync::{Arc, Mutex, RwLock};

use crate::{
    app::{limits::RateLimits, peers::PeerNetwork, refusals::Refusals},
    config::Config,
    domain::{audit::AuditLog, epochs::Indexes},
    metrics::Metrics,
    store::{Store, StoreInfo},
};

/// The node's certificates as the edge loaded them: each by its metrics name with its
/// expiry (seconds since the epoch), and how many certificates the revocation lists
/// name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedCertificates {
    /// The node's own certificates and their expiry.
    pub certificates: Vec<(&'static str, i64)>,
    /// Certificates revoked by the configured lists.
    pub revoked: usize,
}

/// What a reload does with the certificates it read, before it uses them: record the
/// step (durably). An error stops the reload.
pub type BeforeUse<'a> = &'a mut dyn FnMut(&LoadedCertificates) -> Result<(), String>;

/// The TLS material of both listeners and the peer clients, which the edge can read
/// again from its files and use for new connections.
pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// Reads and checks every certificate, key, CA and revocation list again, calls
    /// `before_use` with what it read, and then uses them from now on; on an error
    /// (from the files or from `before_use`) nothing changes.
    fn reload(&self, before_use: BeforeUse<'_>) -> Result<LoadedCertificates, String>;
}

/// Everything the use cases and jobs share.
#[derive(Debug)]
pub struct NodeState {
    /// The configuration the node started with.
    pub config: Config,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Store facts as of start-up.
    pub store_info: StoreInfo,
    /// The peer nodes.
    pub peers: Arc<dyn PeerNetwork>,
    /// The TLS material, reloadable.
    pub credentials: Arc<dyn Credentials>,
    /// The national records and their match index per served key epoch.
    pub index: Indexes,
    /// Wakes the follow-up outbox when a decision is ready to deliver.
    pub outbox_wake: tokio::sync::Notify,
    /// Serialises the read-change-write steps of follow-ups.
    pub followup_writes: Mutex<()>,
    /// The audit log.
    pub audit: AuditLog,
    /// Match calls per peer and searches per officer (`limits`).
    pub rate_limits: RateLimits,
    /// Caps on audit events of refused connections and calls.
    pub refusals: Refusals,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The node's own certificates, as last loaded.
    pub certificates: RwLock<LoadedCertificates>,
}
