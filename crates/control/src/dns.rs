//! The DNS tier: gdnsd's `multifo` plugin with an HTTP check per address, and the clients'
//! cache.
//!
//! gdnsd (`multifo`) answers a name with every address of its set that is up; when none is up
//! it answers with all of them. An address's state comes from its monitor (the lab: an HTTP
//! check every 5 s, down after 5 failures) unless the admin state file forces it. The monitor
//! follows gdnsd's counters (src/mon.c): while UP, `down_thresh` failures without `ok_thresh`
//! successes in between bring it DOWN; while DOWN, `up_thresh` successes in a row bring it UP.
//! Admin state changes act at once (gdnsd watches the file).
//!
//! A client resolves a name when it opens a connection and keeps the answer for its TTL
//! ([`Resolver`]).
//!
//! Approximations: the HTTP check is not put on the wire (the caller says whether the address
//! answers); gdnsd lowers the TTL of answers while a resource is failing, which is not
//! modelled (the TTL is the zone's).

use std::collections::BTreeMap;
use std::net::IpAddr;

use tierlab_wire::{Duration, Instant};

/// gdnsd's options for the lab's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Answer TTL (the lab: 60 s).
    pub ttl: Duration,
    /// Check interval (the lab: 5 s).
    pub interval: Duration,
    /// Failures that take an UP address down (the lab: 5).
    pub down_thresh: u32,
    /// Successes that clear the failure count of an UP address (gdnsd default 10).
    pub ok_thresh: u32,
    /// Successes in a row that bring a DOWN address up (gdnsd default 20).
    pub up_thresh: u32,
    /// Names and their address sets (the lab: www and www1 → VIPs .1/.2, www2 → .3/.4).
    pub names: Vec<(String, Vec<IpAddr>)>,
}

/// An address's monitor.
#[derive(Clone, Copy, Debug)]
struct Monitor {
    up: bool,
    fails: u32,
    oks: u32,
    admin: Option<bool>,
}

impl Monitor {
    fn state(&self) -> bool {
        self.admin.unwrap_or(self.up)
    }
}

/// The DNS server.
#[derive(Clone, Debug)]
pub struct Gdnsd {
    cfg: DnsConfig,
    monitors: BTreeMap<IpAddr, Monitor>,
    next: Instant,
}

impl Gdnsd {
    /// A server with every address up; the first checks run at `first`.
    pub fn new(cfg: DnsConfig, first: Instant) -> Self {
        let monitors = cfg
            .names
            .iter()
            .flat_map(|(_, a)| a.iter().copied())
            .map(|a| {
                (
                    a,
                    Monitor {
                        up: true,
                        fails: 0,
                        oks: 0,
                        admin: None,
                    },
                )
            })
            .collect();
        Self {
            cfg,
            monitors,
            next: first,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// Forces `addr` up or down (`Some`), or gives it back to its monitor (`None`), as the
    /// admin state file does. Returns whether `addr` is known.
    pub fn set_admin(&mut self, addr: IpAddr, state: Option<bool>) -> bool {
        match self.monitors.get_mut(&addr) {
            Some(m) => {
                m.admin = state;
                true
            }
            None => false,
        }
    }

    /// Whether `addr` is up now (admin state first).
    pub fn is_up(&self, addr: IpAddr) -> Option<bool> {
        self.monitors.get(&addr).map(Monitor::state)
    }

    /// When the next checks run.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Runs the checks due at `now`; `answers(addr)` says whether the address passes its
    /// HTTP check. Returns the addresses whose monitored state changed.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        mut answers: impl FnMut(IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let mut changed = Vec::new();
        if now < self.next {
            return changed;
        }
        let c = &self.cfg;
        for (&a, m) in &mut self.monitors {
            let ok = answers(a);
            let before = m.up;
            if m.up {
                if ok {
                    m.oks += 1;
                    if m.oks >= c.ok_thresh {
                        m.oks = 0;
                        m.fails = 0;
                    }
                } else {
                    m.fails += 1;
                    if m.fails >= c.down_thresh {
                        m.up = false;
                        m.fails = 0;
                        m.oks = 0;
                    }
                }
            } else if ok {
                m.oks += 1;
                if m.oks >= c.up_thresh {
                    m.up = true;
                    m.oks = 0;
                    m.fails = 0;
                }
            } else {
                m.oks = 0;
            }
            if m.up != before {
                changed.push(a);
            }
        }
        self.next = now + c.interval;
        changed
    }

    /// The answer for `name`: its addresses that are up, or all of them when none is
    /// (`multifo`), with the TTL. `None` for an unknown name.
    pub fn answer(&self, name: &str) -> Option<(Vec<IpAddr>, Duration)> {
        let (_, set) = self.cfg.names.iter().find(|(n, _)| n == name)?;
        let up: Vec<IpAddr> = set
            .iter()
            .copied()
            .filter(|a| self.is_up(*a).unwrap_or(true))
            .collect();
        Some((if up.is_empty() { set.clone() } else { up }, self.cfg.ttl))
    }
}

/// A client's resolver cache.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    cache: BTreeMap<String, (Vec<IpAddr>, Instant)>,
    queries: u64,
}

impl Resolver {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The addresses of `name` at `now`: from the cache while its TTL runs, else asked of
    /// `server` (and cached). `None` for a name the server does not know.
    pub fn resolve(&mut self, now: Instant, name: &str, server: &Gdnsd) -> Option<&[IpAddr]> {
        let fresh = self.cache.get(name).is_some_and(|(_, exp)| *exp > now);
        if !fresh {
            let (addrs, ttl) = server.answer(name)?;
            self.queries += 1;
            self.cache.insert(name.to_owned(), (addrs, now + ttl));
        }
        self.cache.get(name).map(|(a, _)| a.as_slice())
    }

    /// Queries sent to the server so far.
    pub fn queries(&self) -> u64 {
        self.queries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Gdnsd {
        let v = |i: u8| IpAddr::from([198, 51, 100, i]);
        Gdnsd::new(
            DnsConfig {
                ttl: Duration::from_secs(60),
                interval: Duration::from_secs(5),
                down_thresh: 5,
                ok_thresh: 10,
                up_thresh: 20,
                names: vec![
                    ("www1".into(), vec![v(1), v(2)]),
                    ("www2".into(), vec![v(3), v(4)]),
                ],
            },
            Instant::ZERO,
        )
    }

    #[test]
    fn five_failures_take_an_address_down_and_twenty_bring_it_back() {
        let mut g = lab();
        let a = IpAddr::from([198, 51, 100, 1]);
        let mut t = Instant::ZERO;
        let mut down_at = None;
        for k in 0..10 {
            if g.handle_timeout(t, |x| x != a).contains(&a) {
                down_at = Some(k);
            }
            t = g.poll_timeout();
        }
        assert_eq!(down_at, Some(4), "the fifth failed check");
        assert_eq!(
            g.answer("www1").unwrap().0,
            vec![IpAddr::from([198, 51, 100, 2])]
        );
        let mut up_at = None;
        for k in 0..25 {
            if g.handle_timeout(t, |_| true).contains(&a) {
                up_at = Some(k);
            }
            t = g.poll_timeout();
        }
        assert_eq!(up_at, Some(19));
    }

    #[test]
    fn admin_state_acts_at_once_and_all_down_answers_all() {
        let mut g = lab();
        let (a, b) = (
            IpAddr::from([198, 51, 100, 3]),
            IpAddr::from([198, 51, 100, 4]),
        );
        assert!(g.set_admin(a, Some(false)));
        assert_eq!(g.answer("www2").unwrap().0, vec![b]);
        g.set_admin(b, Some(false));
        assert_eq!(g.answer("www2").unwrap().0, vec![a, b]);
        assert!(g.answer("nope").is_none());
    }

    #[test]
    fn the_cache_keeps_an_answer_for_its_ttl() {
        let mut g = lab();
        let mut r = Resolver::new();
        let a = IpAddr::from([198, 51, 100, 1]);
        assert_eq!(
            r.resolve(Instant::from_secs(1), "www1", &g).unwrap().len(),
            2
        );
        g.set_admin(a, Some(false));
        assert_eq!(
            r.resolve(Instant::from_secs(60), "www1", &g).unwrap().len(),
            2
        );
        assert_eq!(
            r.resolve(Instant::from_secs(61), "www1", &g).unwrap().len(),
            1
        );
        assert_eq!(r.queries(), 2);
    }
}
