//! Linux's rate limits on the ICMP errors a host sends, for the director's port unreachable
//! (`ip_vs_leave` → `icmp_send`, `icmpv6_send`).
//!
//! Two limits, both token buckets (net/ipv4/icmp.c, net/ipv6/icmp.c, net/ipv4/inetpeer.c,
//! Linux 6.x):
//! - **Global** (`icmp_global_allow`): a credit of `icmp_msgs_burst` (50) refilled at
//!   `icmp_msgs_per_sec` (1000/s), at most once per 20 ms (`HZ / 50`) and for at most one
//!   second's worth; while the credit is above zero an error may go. Shared by IPv4 and IPv6.
//! - **Per peer** (`inet_peer_xrlim_allow`, checked after the global one): each destination
//!   address has a bucket of up to 6 × *timeout* (`XRLIM_BURST_FACTOR`) that fills with elapsed
//!   time; an error costs one *timeout*. A new peer starts full, so a burst of 6 goes, then one
//!   per timeout. IPv4's timeout is `net.ipv4.icmp_ratelimit` (1000 ms); IPv6's is
//!   `net.ipv6.icmp.ratelimit` (100 ms on Linux 6.18) divided by 2^((128 − plen) / 32) for a
//!   route of prefix length `plen` towards the peer ("give more bandwidth to wider
//!   prefixes"): a director reaches its clients by its default route (plen 0), so 100 ms / 16.
//!
//! An error sent consumes global credit: Linux takes a random 0, 1 or 2
//! (`icmp_global_consume`, mean 1); here always 1, so that a run stays a function of its seed.
//! Linux counts in jiffies; here in nanoseconds (the same at `HZ=1000` up to rounding).
//! `tests/linux_icmp_ratelimit.rs` measures the per-peer burst on the running kernel (6 of
//! 100 per family), and this module's tests replay that burst.
//!
//! "Fragmentation needed" and "packet too big" are exempt on Linux (`icmpv4_mask_allow`, the
//! ICMPv6 `ratemask`); the director does not send them through this limiter.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tierlab_wire::Instant;

/// The sysctls of the two limits, with Linux's defaults.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IcmpRateLimit {
    /// `net.ipv4.icmp_ratelimit` in milliseconds (1000); 0 turns the per-peer limit off.
    pub ratelimit_ms_v4: u32,
    /// `net.ipv6.icmp.ratelimit` in milliseconds (100 on Linux 6.18; 1000 on older kernels);
    /// 0 turns the per-peer limit off.
    pub ratelimit_ms_v6: u32,
    /// Prefix length of the IPv6 route towards the peers (0: the default route).
    pub v6_route_prefix_len: u8,
    /// `net.ipv4.icmp_msgs_per_sec` (1000).
    pub msgs_per_sec: u32,
    /// `net.ipv4.icmp_msgs_burst` (50).
    pub msgs_burst: u32,
}

impl Default for IcmpRateLimit {
    fn default() -> Self {
        Self {
            ratelimit_ms_v4: 1000,
            ratelimit_ms_v6: 100,
            v6_route_prefix_len: 0,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        }
    }
}

/// `XRLIM_BURST_FACTOR`.
const BURST_FACTOR: u64 = 6;
const SECOND: u64 = 1_000_000_000;

/// The limits' state: the global credit and one bucket per peer.
#[derive(Clone, Debug)]
pub struct IcmpLimiter {
    cfg: IcmpRateLimit,
    credit: i64,
    stamp: u64,
    /// Peer → (tokens, last update), in nanoseconds.
    peers: HashMap<IpAddr, (u64, u64)>,
}

impl IcmpLimiter {
    /// Fresh state: full global credit (as at boot), no peer yet.
    pub fn new(cfg: IcmpRateLimit) -> Self {
        Self {
            cfg,
            credit: i64::from(cfg.msgs_burst),
            stamp: 0,
            peers: HashMap::new(),
        }
    }

    /// Whether an error to `peer` may be sent at `now`; if so, it is counted as sent.
    pub fn allow(&mut self, now: Instant, peer: IpAddr) -> bool {
        let now = now.as_nanos();
        if !self.global_allow(now) {
            return false;
        }
        let timeout = self.timeout(peer);
        if timeout > 0 {
            let (tokens, last) = self
                .peers
                .entry(peer)
                // Linux dates a new peer's last update 60 s back: its bucket starts with
                // 60 s of tokens (capped below).
                .or_insert((60 * SECOND, now));
            let mut t = tokens.saturating_add(now.saturating_sub(*last));
            *last = now;
            t = t.min(BURST_FACTOR * timeout);
            let ok = t >= timeout;
            if ok {
                t -= timeout;
            }
            *tokens = t;
            if !ok {
                return false;
            }
        }
        self.credit -= 1;
        true
    }

    /// `icmp_global_allow`.
    fn global_allow(&mut self, now: u64) -> bool {
        if self.credit > 0 {
            return true;
        }
        let delta = now.saturating_sub(self.stamp).min(SECOND);
        if delta < SECOND / 50 {
            return false;
        }
        let incr = u64::from(self.cfg.msgs_per_sec) * delta / SECOND;
        if incr == 0 {
            return false;
        }
        self.stamp = now;
        self.credit = (self.credit + incr as i64).min(i64::from(self.cfg.msgs_burst));
        true
    }

    /// The per-peer timeout in nanoseconds (0: no per-peer limit).
    fn timeout(&self, peer: IpAddr) -> u64 {
        let ms = match peer {
            IpAddr::V4(_) => u64::from(self.cfg.ratelimit_ms_v4),
            IpAddr::V6(_) => {
                let plen = u32::from(self.cfg.v6_route_prefix_len.min(128));
                let ms = u64::from(self.cfg.ratelimit_ms_v6);
                if plen < 128 {
                    ms >> ((128 - plen) >> 5)
                } else {
                    ms
                }
            }
        };
        ms * 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(l: &mut IcmpLimiter, peer: &str, at_ms: &[u64]) -> usize {
        let peer: IpAddr = peer.parse().unwrap();
        at_ms
            .iter()
            .filter(|&&t| l.allow(Instant::from_millis(t), peer))
            .count()
    }

    #[test]
    fn a_burst_of_six_per_peer_then_one_per_timeout() {
        let mut l = IcmpLimiter::new(IcmpRateLimit::default());
        // What the kernel test measures: 100 errors due within a few milliseconds → 6.
        let burst: Vec<u64> = (0..100).map(|i| 1_000 + i / 20).collect();
        assert_eq!(sent(&mut l, "203.0.113.7", &burst), 6);
        // One more token a second later, and only one.
        assert_eq!(sent(&mut l, "203.0.113.7", &[2_005, 2_006, 2_500]), 1);
        assert_eq!(sent(&mut l, "203.0.113.7", &[3_006]), 1);
        // Another peer has its own bucket.
        assert_eq!(sent(&mut l, "203.0.113.8", &burst[..10]), 6);
        // A peer idle for 6 timeouts is full again.
        assert_eq!(sent(&mut l, "203.0.113.7", &[9_100; 8]), 6);
    }

    #[test]
    fn ipv6_timeout_shrinks_with_the_route_prefix() {
        // /64 (the kernel test's connected route): 100 ms >> 2 = 25 ms.
        let mut l = IcmpLimiter::new(IcmpRateLimit {
            v6_route_prefix_len: 64,
            ..IcmpRateLimit::default()
        });
        assert_eq!(sent(&mut l, "2001:db8::7", &[1_000; 100]), 6);
        assert_eq!(sent(&mut l, "2001:db8::7", &[1_024]), 0);
        assert_eq!(sent(&mut l, "2001:db8::7", &[1_025]), 1);
        // The default route (plen 0): 100 ms >> 4 = 6 ms.
        let mut l = IcmpLimiter::new(IcmpRateLimit::default());
        assert_eq!(sent(&mut l, "2001:db8::7", &[1_000; 100]), 6);
        assert_eq!(sent(&mut l, "2001:db8::7", &[1_006, 1_012, 1_013]), 2);
    }

    #[test]
    fn the_global_credit_caps_many_peers_and_refills_with_time() {
        let mut l = IcmpLimiter::new(IcmpRateLimit::default());
        // 150 peers, one error each, at the same instant: the credit of 50 goes; the next
        // error finds it empty, and the last refill long ago: a second's worth, capped at
        // the burst, so 50 more; then nothing (less than 20 ms since that refill).
        let peers: Vec<IpAddr> = (0..150u32)
            .map(|i| IpAddr::from([10, 0, (i / 200) as u8, (i % 200 + 1) as u8]))
            .collect();
        let mut at = |ms: u64| {
            peers
                .iter()
                .filter(|&&p| l.allow(Instant::from_millis(ms), p))
                .count()
        };
        assert_eq!(at(5_000), 100);
        // 30 ms later, 30 credits (1000/s).
        assert_eq!(at(5_030), 30);
        assert_eq!(at(5_035), 0);
        // Per-peer limit off, global off by a zero rate after the burst: nothing refills.
        let mut l = IcmpLimiter::new(IcmpRateLimit {
            ratelimit_ms_v4: 0,
            msgs_per_sec: 0,
            ..IcmpRateLimit::default()
        });
        assert_eq!(sent(&mut l, "203.0.113.7", &[1_000; 60]), 50);
        assert_eq!(sent(&mut l, "203.0.113.7", &[9_000]), 0);
    }
}
