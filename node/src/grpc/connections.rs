//! Admission of connections to a listener. A connection that has proven a certificate
//! of the listener's CA holds one of `limits.max_connections` slots. Every other one
//! (in its TLS handshake, anonymous like a health probe, or with a certificate the
//! listener refuses) holds an *unverified* slot instead: capped in all
//! (`limits.max_unverified_connections`) and per remote address
//! (`limits.max_unverified_per_address`), and closed `limits.unverified_lifetime`
//! after its handshake. So a stranger holds nothing users and peers need.
//!
//! When the pool is full, a newcomer is not refused: the oldest connection of the
//! address holding the most is closed to make room. A stranger who fills the pool
//! from many addresses then only shortens the lives of its own connections: a user's
//! handshake takes milliseconds, and the stranger would have to open the whole pool's
//! worth of connections within them to cut it.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::oneshot;

use prometheus_client::metrics::family::Family;

use crate::metrics::{ListenerLabels, Metrics, RemoteLabels};

/// Why an unverified connection was refused: its address holds
/// `limits.max_unverified_per_address` already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl Full {
    /// The limit that refused, as metrics and audit events name it.
    pub fn limit(self) -> &'static str {
        "max_unverified_per_address"
    }
}

/// The limit whose reach closes the oldest connection of the biggest holder.
pub const EVICTING_LIMIT: &str = "max_unverified_connections";

#[derive(Debug)]
struct Holder {
    id: u64,
    remote: SocketAddr,
    /// Dropped to close the connection.
    _evict: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    next_id: u64,
    /// Per source, its connections oldest first.
    by_address: HashMap<IpAddr, VecDeque<Holder>>,
}

impl Held {
    /// Closes the oldest connection of the source holding the most (of those, the
    /// one whose oldest is oldest), returning its address and source.
    fn evict(&mut self) -> Option<(SocketAddr, IpAddr)> {
        let (source, _) = self
            .by_address
            .iter()
            .filter_map(|(s, q)| q.front().map(|h| (*s, (std::cmp::Reverse(q.len()), h.id))))
            .min_by_key(|(_, rank)| *rank)?;
        let queue = self.by_address.get_mut(&source)?;
        let victim = queue.pop_front()?;
        if queue.is_empty() {
            self.by_address.remove(&source);
        }
        self.total -= 1;
        Some((victim.remote, source))
    }
}

/// The source a per-address limit counts: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64, and would otherwise count as millions of addresses).
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
}

/// The unverified connections of one listener.
#[derive(Clone, Debug)]
pub struct UnverifiedPool {
    held: Arc<Mutex<Held>>,
    max_total: usize,
    max_per_address: usize,
    gauges: Gauges,
}

#[derive(Clone, Debug)]
struct Gauges {
    listener: &'static str,
    total: Family<ListenerLabels, prometheus_client::metrics::gauge::Gauge>,
    by_remote: Family<RemoteLabels, prometheus_client::metrics::gauge::Gauge>,
}

impl Gauges {
    fn set(&self, held: &Held, ip: IpAddr) {
        self.total
            .get_or_create(&ListenerLabels {
                listener: self.listener,
            })
            .set(held.total as i64);
        let labels = RemoteLabels {
            listener: self.listener,
            remote: ip.to_string(),
        };
        match held.by_address.get(&ip) {
            Some(q) => {
                self.by_remote.get_or_create(&labels).set(q.len() as i64);
            }
            None => {
                self.by_remote.remove(&labels);
            }
        }
    }
}

/// An unverified connection's slot, released when dropped.
#[derive(Debug)]
pub struct UnverifiedSlot {
    pool: UnverifiedPool,
    ip: IpAddr,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl UnverifiedSlot {
    /// Resolves when the pool closes this connection to admit a newer one. Taken
    /// once, when the connection is accepted; the connection's task waits on it beside
    /// its handshake and lifetime. None when taken already.
    pub fn eviction(&mut self) -> Option<oneshot::Receiver<()>> {
        self.evicted.take()
    }
}

impl Drop for UnverifiedSlot {
    fn drop(&mut self) {
        let mut held = self.pool.lock();
        if let Some(queue) = held.by_address.get_mut(&self.ip)
            && let Some(at) = queue.iter().position(|h| h.id == self.id)
        {
            queue.remove(at);
            if queue.is_empty() {
                held.by_address.remove(&self.ip);
            }
            held.total -= 1;
        }
        self.pool.gauges.set(&held, self.ip);
    }
}

/// A slot given, and the connection closed to make room for it, if one was.
#[derive(Debug)]
pub struct Admitted {
    /// The newcomer's slot.
    pub slot: UnverifiedSlot,
    /// The address whose oldest connection was closed because the pool was full.
    pub evicted: Option<SocketAddr>,
}

impl UnverifiedPool {
    /// The pool of `listener` with its limits, reporting to `metrics`.
    pub fn new(
        listener: &'static str,
        max_total: usize,
        max_per_address: usize,
        metrics: &Metrics,
    ) -> UnverifiedPool {
        UnverifiedPool {
            held: Arc::default(),
            max_total,
            max_per_address,
            gauges: Gauges {
                listener,
                total: metrics.unverified_connections.clone(),
                by_remote: metrics.unverified_by_remote.clone(),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `remote`, closing the oldest connection of the
    /// biggest holder if the pool is full; refused if `remote`'s source holds its
    /// share already.
    pub fn admit(&self, remote: SocketAddr) -> Result<Admitted, Full> {
        let ip = source(remote.ip());
        let mut held = self.lock();
        if held.by_address.get(&ip).map_or(0, VecDeque::len) >= self.max_per_address {
            return Err(Full);
        }
        let mut evicted = None;
        if held.total >= self.max_total {
            evicted = held.evict();
            if let Some((_, from)) = evicted {
                self.gauges.set(&held, from);
            }
        }
        let id = held.next_id;
        held.next_id += 1;
        let (evict, evicted_rx) = oneshot::channel();
        held.by_address.entry(ip).or_default().push_back(Holder {
            id,
            remote,
            _evict: evict,
        });
        held.total += 1;
        self.gauges.set(&held, ip);
        Ok(Admitted {
            slot: UnverifiedSlot {
                pool: self.clone(),
                ip,
                id,
                evicted: Some(evicted_rx),
            },
            evicted: evicted.map(|(remote, _)| remote),
        })
    }

    /// The `n` addresses holding the most unverified connections, most first.
    pub fn holders(&self, n: usize) -> Vec<(IpAddr, usize)> {
        let held = self.lock();
        let mut all: Vec<(IpAddr, usize)> =
            held.by_address.iter().map(|(a, q)| (*a, q.len())).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), port)
    }

    #[test]
    fn caps_per_address_evicts_when_full_and_frees_on_drop() {
        let metrics = Metrics::new();
        let pool = UnverifiedPool::new("national", 3, 2, &metrics);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut a1 = pool.admit(at("192.0.2.1", 1)).expect("first").slot;
        let _a2 = pool.admit(at("192.0.2.1", 2)).expect("second");
        assert_eq!(pool.admit(at("192.0.2.1", 3)).err(), Some(Full));
        let b1 = pool.admit(at("192.0.2.2", 1)).expect("another address");
        assert!(b1.evicted.is_none());
        assert_eq!(pool.holders(1), [(a, 2)]);
        let text = metrics.encode();
        assert!(
            text.contains("adep_unverified_connections{listener=\"national\"} 3"),
            "{text}"
        );
        assert!(text.contains("remote=\"192.0.2.1\"} 2"), "{text}");
        // Full: a newcomer closes the oldest connection of the biggest holder.
        let mut evicted = a1.eviction().expect("not taken yet");
        assert_eq!(evicted.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        let c1 = pool
            .admit(at("192.0.2.3", 1))
            .expect("admitted by eviction");
        assert_eq!(c1.evicted, Some(at("192.0.2.1", 1)));
        assert_eq!(
            evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "a1 is told to close"
        );
        assert_eq!(pool.holders(3).len(), 3);
        // Dropping an evicted slot frees nothing twice.
        drop(a1);
        assert_eq!(pool.lock().total, 3);
        drop(b1);
        assert!(
            !metrics.encode().contains("192.0.2.2"),
            "a series goes with its last connection"
        );
        assert_eq!(pool.lock().total, 2);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let metrics = Metrics::new();
        let pool = UnverifiedPool::new("national", 10, 2, &metrics);
        let _a = pool.admit(at("2001:db8:1:2::1", 1)).expect("first");
        let _b = pool.admit(at("2001:db8:1:2:ffff::9", 1)).expect("second");
        assert_eq!(pool.admit(at("2001:db8:1:2::77", 1)).err(), Some(Full));
        assert!(pool.admit(at("2001:db8:1:3::1", 1)).is_ok(), "another /64");
    }
}
