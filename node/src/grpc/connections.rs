//! Admission of connections to a listener. A connection that has proven a certificate
//! of the listener's CA holds one of `limits.max_connections` slots. Every other one
//! (in its TLS handshake, anonymous like a health probe, or with a certificate the
//! listener refuses) holds an *unverified* slot instead: capped in all
//! (`limits.max_unverified_connections`) and per remote address
//! (`limits.max_unverified_per_address`), and closed `limits.unverified_lifetime`
//! after its handshake. So a stranger holds nothing users and peers need.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus_client::metrics::family::Family;

use crate::metrics::{ListenerLabels, Metrics, RemoteLabels};

/// Why an unverified connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The listener holds `limits.max_unverified_connections` already.
    Total,
    /// The remote address holds `limits.max_unverified_per_address` already.
    Address,
}

impl Full {
    /// The limit that refused, as metrics and audit events name it.
    pub fn limit(self) -> &'static str {
        match self {
            Full::Total => "max_unverified_connections",
            Full::Address => "max_unverified_per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
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
            Some(n) => {
                self.by_remote.get_or_create(&labels).set(*n as i64);
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
}

impl Drop for UnverifiedSlot {
    fn drop(&mut self) {
        let mut held = self.pool.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.by_address.remove(&self.ip);
            }
        }
        self.pool.gauges.set(&held, self.ip);
    }
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

    /// A slot for a connection from `ip`, or which limit refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<UnverifiedSlot, Full> {
        let ip = source(ip);
        let mut held = self.lock();
        if held.total >= self.max_total {
            return Err(Full::Total);
        }
        let n = held.by_address.entry(ip).or_default();
        if *n >= self.max_per_address {
            return Err(Full::Address);
        }
        *n += 1;
        held.total += 1;
        self.gauges.set(&held, ip);
        Ok(UnverifiedSlot {
            pool: self.clone(),
            ip,
        })
    }

    /// The `n` addresses holding the most unverified connections, most first.
    pub fn holders(&self, n: usize) -> Vec<(IpAddr, usize)> {
        let held = self.lock();
        let mut all: Vec<(IpAddr, usize)> = held.by_address.iter().map(|(a, c)| (*a, *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_and_frees_on_drop() {
        let metrics = Metrics::new();
        let pool = UnverifiedPool::new("national", 3, 2, &metrics);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = pool.admit(a).expect("first");
        let _a2 = pool.admit(a).expect("second");
        assert_eq!(pool.admit(a).err(), Some(Full::Address));
        let _b1 = pool.admit(b).expect("another address");
        assert_eq!(pool.admit(b).err(), Some(Full::Total));
        assert_eq!(pool.holders(1), [(a, 2)]);
        let text = metrics.encode();
        assert!(
            text.contains("adep_unverified_connections{listener=\"national\"} 3"),
            "{text}"
        );
        assert!(text.contains("remote=\"192.0.2.1\"} 2"), "{text}");
        drop(a1);
        let _a3 = pool.admit(a).expect("a slot was freed");
        drop(_b1);
        assert!(
            !metrics.encode().contains("192.0.2.2"),
            "a series goes with its last connection"
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let metrics = Metrics::new();
        let pool = UnverifiedPool::new("national", 10, 2, &metrics);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let _a = pool.admit(one).expect("first");
        let _b = pool.admit(same_64).expect("second");
        let third: IpAddr = "2001:db8:1:2::77".parse().expect("ip");
        assert_eq!(pool.admit(third).err(), Some(Full::Address));
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(pool.admit(other).is_ok(), "another /64");
    }
}
