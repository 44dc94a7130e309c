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
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock, Reference as _},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore},
};

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
/// The least time between two trims of the per-address limiter.
const TRIM_EVERY: Duration = Duration::from_secs(1);
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

/// The caps on refusal events and the counts of those left out, on the system clock
/// (tests give another).
#[derive(Debug)]
pub struct Refusals<C: Clock = DefaultClock> {
    clock: C,
    per_address: RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        C,
        NoOpMiddleware<<C as Clock>::Instant>,
    >,
    per_node: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>,
    suppressed: Mutex<Suppressed<C::Instant>>,
}

/// The refusals left out per address, and when the limiter was last trimmed.
#[derive(Debug)]
struct Suppressed<I> {
    counts: HashMap<IpAddr, u64>,
    trimmed_at: Option<I>,
}

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals::with_clock(DefaultClock::default())
    }
}

impl<C: Clock + Clone> Refusals<C> {
    /// Caps counted on `clock`.
    fn with_clock(clock: C) -> Refusals<C> {
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Refusals {
            per_address: RateLimiter::new(
                per_minute(PER_ADDRESS_PER_MINUTE),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            per_node: RateLimiter::new(
                per_minute(PER_NODE_PER_MINUTE),
                InMemoryState::default(),
                clock.clone(),
            ),
            clock,
            suppressed: Mutex::new(Suppressed {
                counts: HashMap::new(),
                trimmed_at: None,
            }),
        }
    }

    /// Whether to record a refusal from `ip` now; if so, how many were left out before.
    fn admit(&self, ip: IpAddr) -> Option<u64> {
        let mut suppressed = self
            .suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The keyed limiter keeps a state per address it has seen: forget those whose
        // allowance is full again, so many addresses cannot grow it without bound. At
        // most once a second: a scan of every address on each refusal would make a
        // flood of them quadratic.
        let now = self.clock.now();
        if self.per_address.len() >= TRIM_AT
            && suppressed
                .trimmed_at
                .is_none_or(|at| Duration::from(now.duration_since(at)) >= TRIM_EVERY)
        {
            self.per_address.retain_recent();
            self.per_address.shrink_to_fit();
            suppressed.trimmed_at = Some(now);
        }
        if self.per_address.check_key(&ip).is_ok() && self.per_node.check().is_ok() {
            Some(suppressed.counts.remove(&ip).unwrap_or(0))
        } else {
            // Bounded: an address is only kept while it is over its cap.
            if suppressed.counts.len() < 100_000 {
                *suppressed.counts.entry(ip).or_default() += 1;
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
            r.suppressed.lock().unwrap().counts.get(&a),
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
    fn forgets_addresses_back_at_a_full_allowance_at_most_once_a_second() {
        let clock = governor::clock::FakeRelativeClock::default();
        let r = Refusals::with_clock(clock.clone());
        let mut next = 0u32;
        let mut admit = |n: u32| {
            for _ in 0..n {
                r.admit(IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + next)));
                next += 1;
            }
            r.per_address.len()
        };
        // An address's one event (30 a minute) is paid back 2 s later; the limiter
        // forgets it one period after that, 4 s after the event.
        assert_eq!(admit(TRIM_AT as u32), TRIM_AT);
        clock.advance(Duration::from_millis(500));
        assert_eq!(admit(5_000), TRIM_AT + 5_000, "nothing to forget yet");
        clock.advance(Duration::from_millis(3_600));
        assert_eq!(admit(1), 5_001, "the first 10,000 forgotten");
        assert_eq!(admit(5_000), TRIM_AT + 1);
        clock.advance(Duration::from_millis(500));
        // The 5,000 of 0.5 s could be forgotten now, but the last trim was half a
        // second ago.
        assert_eq!(admit(1), TRIM_AT + 2, "not trimmed within the second");
        clock.advance(Duration::from_millis(600));
        assert_eq!(admit(1), 5_003, "trimmed once the second is over");
    }
}
