//! Refused connections and calls as audit events (DESIGN section 8), capped.
//!
//! Refusals come from the network, so they must not flood the log: each remote
//! address gets at most [`PER_ADDRESS_PER_MINUTE`] events a minute and the whole node
//! [`PER_NODE_PER_MINUTE`]. Refusals over those are counted, and the count goes into
//! the next event recorded for that address (`suppressed`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{
    app::{NodeState, events},
    domain::audit::Event,
};

/// Refusal events recorded per remote address and minute.
pub const PER_ADDRESS_PER_MINUTE: u32 = 30;
/// Refusal events recorded per node and minute.
pub const PER_NODE_PER_MINUTE: u32 = 600;
/// Addresses the per-address limiter holds before it forgets those back at a full
/// allowance.
const TRIM_AT: usize = 10_000;
/// What a refusal event says.
#[derive(Clone, Debug)]
pub struct Refused {
    /// `call.refused` or `connection.refused`.
    pub kind: &'static str,
    /// The listener: `federation` or `national`.
    pub listener: &'static str,
    /// The client's address.
    pub remote: SocketAddr,
    /// The event's other fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The caps on refusal events and the counts of those left out.
#[derive(Debug)]
pub struct Refusals {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    per_node: DefaultDirectRateLimiter,
    suppressed: Mutex<HashMap<IpAddr, u64>>,
}

impl Default for Refusals {
    fn default() -> Refusals {
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Refusals {
            per_address: RateLimiter::keyed(per_minute(PER_ADDRESS_PER_MINUTE)),
            per_node: RateLimiter::direct(per_minute(PER_NODE_PER_MINUTE)),
            suppressed: Mutex::new(HashMap::new()),
        }
    }
}

impl Refusals {
    /// Whether to record a refusal from `ip` now; if so, how many were left out before.
    fn admit(&self, ip: IpAddr) -> Option<u64> {
        let mut suppressed = self
            .suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The keyed limiter keeps a state per address it has seen: forget those whose
        // allowance is full again, so many addresses cannot grow it without bound.
        if self.per_address.len() >= TRIM_AT {
            self.per_address.retain_recent();
            self.per_address.shrink_to_fit();
        }
        if self.per_address.check_key(&ip).is_ok() && self.per_node.check().is_ok() {
            Some(suppressed.remove(&ip).unwrap_or(0))
        } else {
            // Bounded: an address is only kept while it is over its cap.
            if suppressed.len() < 100_000 {
                *suppressed.entry(ip).or_default() += 1;
            }
            None
        }
    }
}

/// Records a refusal as an audit event, unless its address or the node is over the
/// cap. Returns at once; the event is written in the background.
pub fn record(state: &Arc<NodeState>, refused: Refused) {
    {
        let Some(suppressed) = state.refusals.admit(refused.remote.ip()) else {
            return;
        };
        let mut fields = refused.fields;
        fields.insert("listener".into(), refused.listener.into());
        fields.insert("remote".into(), refused.remote.to_string().into());
        if suppressed > 0 {
            fields.insert("suppressed".into(), suppressed.into());
        }
        let state = state.clone();
        tokio::spawn(async move {
            events::record(
                &state,
                Event::new(refused.kind, serde_json::Value::Object(fields)),
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_events_per_address_and_counts_the_rest() {
        let r = Refusals::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..PER_ADDRESS_PER_MINUTE {
            assert_eq!(r.admit(a), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(r.admit(a), None);
        }
        // Another address keeps its allowance.
        assert_eq!(r.admit(b), Some(0));
        assert_eq!(
            r.suppressed.lock().unwrap().get(&a),
            Some(&5),
            "the refusals left out are counted"
        );
    }

    #[test]
    fn caps_events_per_node_across_addresses() {
        let r = Refusals::default();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + i));
        for i in 0..PER_NODE_PER_MINUTE {
            assert_eq!(r.admit(ip(i)), Some(0), "address {i}");
        }
        // A fresh address, under its own cap, but the node has recorded enough.
        assert_eq!(r.admit(ip(PER_NODE_PER_MINUTE)), None);
    }

    #[test]
    fn forgets_addresses_back_at_a_full_allowance() {
        let r = Refusals::default();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        for i in 0..TRIM_AT as u32 {
            r.admit(ip(i));
        }
        assert_eq!(r.per_address.len(), TRIM_AT);
        // One event's worth of allowance comes back every 2 s (30 a minute); the
        // limiter forgets a state one period after it is full again.
        std::thread::sleep(std::time::Duration::from_millis(4_100));
        r.admit(ip(TRIM_AT as u32));
        assert_eq!(r.per_address.len(), 1, "only the newest address is kept");
    }
}
