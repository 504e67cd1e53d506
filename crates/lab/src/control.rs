//! The control plane wired into the lab: BGP between the directors and the routers, ExaBGP's
//! healthcheck and keepalived on every director, gdnsd for the clients (the state machines
//! are `tierlab-control`'s; this module drives them in virtual time and applies what they
//! decide to the tiers).
//!
//! - **Routers** install, for each family, the directors holding the best MED in the BGP
//!   fabric, in address order, and change their groups only when that set changes.
//! - **Directors**: each runs keepalived (one checker per proxy in its service, random phase)
//!   and ExaBGP's healthcheck (random phase), whose check is keepalived's quorum. A failing
//!   proxy is deleted from *that* director's services (or set to weight 0 with
//!   `inhibit_on_failure`) and added back, at the head of the list, when it recovers.
//! - **Proxies** answer the checks from their state: a dead proxy does not answer (the check
//!   costs its connect timeout); a proxy whose `monitor-uri` fails (agent file not up, or no
//!   backend usable) answers 503. The proxies' own checks of the backends run in
//!   `tierlab-l7` over real packets.
//! - **gdnsd** checks each VIP (it passes while the routers hold a path for it) and answers
//!   the clients' names when the workload uses names.
//!
//! Every decision is logged ([`ControlRecord`]) with its virtual time.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use rand::Rng;
use serde::Serialize;
use tierlab_control::{
    Advert, BgpConfig, CheckerConfig, CheckerEvent, DnsConfig, Fabric, Family, Gdnsd, Healthcheck,
    HealthcheckConfig, Keepalived, Probe, Resolver, SessionTimers,
};
use tierlab_l7::client::Destinations;
use tierlab_wire::{Duration, Instant, SimRng, rng};

use crate::build::{Lab, LabError};
use crate::nodes::DirectorNode;
use crate::scenario::{Action, AgentState, DnsAdminState, Scenario};

/// One decision of the control plane.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlRecord {
    /// When, in seconds of virtual time.
    pub at_s: f64,
    /// Who decided (`director3`, `routers`, `dns`).
    pub node: String,
    /// What (e.g. `deleted proxy13`, `ipv4 ECMP group: director1..director6`).
    pub what: String,
}

fn dur(s: f64) -> Duration {
    Duration::from_nanos((s * 1e9).round() as u64)
}

/// The control plane's state, owned by the [`Lab`].
#[derive(Debug)]
pub(crate) struct ControlPlane {
    fabric: Fabric,
    hc_cfg: HealthcheckConfig,
    ka_cfg: CheckerConfig,
    hc: BTreeMap<u32, Healthcheck>,
    advertised: BTreeMap<u32, Advert>,
    disabled: BTreeSet<u32>,
    keepalived: BTreeMap<u32, Keepalived>,
    /// (director, proxy) → until when that director's checks of that proxy fail.
    blocked: BTreeMap<(u32, u32), Instant>,
    pub(crate) dns: Rc<RefCell<Gdnsd>>,
    rng: SimRng,
    installed: BTreeMap<Family, Vec<u32>>,
    pub(crate) log: Vec<ControlRecord>,
}

impl ControlPlane {
    /// The converged control plane of a lab whose `directors` announce the VIPs and whose
    /// `proxies` are in every director's services.
    pub(crate) fn new(s: &Scenario, directors: &[u32], proxies: &[u32]) -> Self {
        let c = &s.control;
        let bgp = BgpConfig {
            v4: SessionTimers {
                hold: dur(c.bgp.hold_v4_s),
                keepalive: dur(c.bgp.keepalive_v4_s),
            },
            v6: SessionTimers {
                hold: dur(c.bgp.hold_v6_s),
                keepalive: dur(c.bgp.keepalive_v6_s),
            },
            reflectors: s.topology.route_reflectors.max(1),
            propagation: dur(c.bgp.propagation_ms / 1000.0),
        };
        let hc_cfg = HealthcheckConfig {
            interval: dur(c.healthcheck.interval_s),
            fast_interval: dur(c.healthcheck.fast_interval_s),
            rise: c.healthcheck.rise,
            fall: c.healthcheck.fall,
            up_med: c.healthcheck.up_med,
            down_med: c.healthcheck.down_med,
            disabled_med: c.healthcheck.disabled_med,
            withdraw_on_down: c.healthcheck.withdraw_on_down,
        };
        let ka_cfg = CheckerConfig {
            delay_loop: dur(c.keepalived.delay_loop_s),
            connect_timeout: dur(c.keepalived.connect_timeout_s),
            retry: c.keepalived.retry,
            delay_before_retry: dur(c.keepalived.delay_before_retry_s),
            inhibit_on_failure: c.keepalived.inhibit_on_failure,
            quorum: c.keepalived.quorum,
        };
        let mut rng = rng::stream(s.seed, 3);
        let mut fabric = Fabric::new(bgp);
        let mut hc = BTreeMap::new();
        let mut advertised = BTreeMap::new();
        let mut keepalived = BTreeMap::new();
        for &d in directors {
            fabric.add_speaker(d, &mut rng);
            for fam in Family::ALL {
                fabric.preload(d, fam, hc_cfg.up_med);
            }
            let first_tick = Instant::ZERO + phase(&mut rng, hc_cfg.interval);
            hc.insert(d, Healthcheck::up(hc_cfg, first_tick));
            advertised.insert(d, Advert::Announce(hc_cfg.up_med));
            let mut k = Keepalived::new(ka_cfg);
            for &p in proxies {
                k.add_real(p, true, Instant::ZERO + phase(&mut rng, ka_cfg.delay_loop));
            }
            keepalived.insert(d, k);
        }
        let dns_cfg = DnsConfig {
            ttl: dur(c.dns.ttl_s),
            interval: dur(c.dns.interval_s),
            down_thresh: c.dns.down_thresh,
            ok_thresh: c.dns.ok_thresh,
            up_thresh: c.dns.up_thresh,
            names: c
                .dns
                .names
                .iter()
                .map(|n| (n.name.clone(), n.addrs.clone()))
                .collect(),
        };
        let first_dns = Instant::ZERO + phase(&mut rng, dns_cfg.interval);
        let installed = Family::ALL.iter().map(|&f| (f, fabric.best(f))).collect();
        Self {
            fabric,
            hc_cfg,
            ka_cfg,
            hc,
            advertised,
            disabled: BTreeSet::new(),
            keepalived,
            blocked: BTreeMap::new(),
            dns: Rc::new(RefCell::new(Gdnsd::new(dns_cfg, first_dns))),
            rng,
            installed,
            log: Vec::new(),
        }
    }

    /// The next instant something of the control plane is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.fabric.poll_timeout();
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        take(self.hc.values().map(Healthcheck::next).min());
        take(
            self.keepalived
                .values()
                .filter_map(Keepalived::poll_timeout)
                .min(),
        );
        take(Some(self.dns.borrow().poll_timeout()));
        next
    }

    fn record(&mut self, at: Instant, node: impl Into<String>, what: impl Into<String>) {
        self.log.push(ControlRecord {
            at_s: at.as_secs_f64(),
            node: node.into(),
            what: what.into(),
        });
    }
}

/// A random phase in `[0, period)`.
fn phase(rng: &mut SimRng, period: Duration) -> Duration {
    Duration::from_nanos(rng.random_range(0..period.as_nanos().max(1)))
}

/// New connections go to a name resolved through the client host's cache.
#[derive(Debug)]
pub(crate) struct DnsDestinations {
    pub(crate) dns: Rc<RefCell<Gdnsd>>,
    pub(crate) names: Vec<String>,
    pub(crate) resolver: Resolver,
    /// VIP → port.
    pub(crate) ports: BTreeMap<IpAddr, u16>,
    /// Share of connections to IPv6 addresses (`workload.ipv6_share`).
    pub(crate) ipv6_share: f64,
}

impl Destinations for DnsDestinations {
    fn pick(&mut self, now: Instant, rng: &mut dyn rand::RngCore) -> Option<SocketAddr> {
        if self.names.is_empty() {
            return None;
        }
        let name = &self.names[rng.random_range(0..self.names.len())];
        let dns = self.dns.borrow();
        let addrs: Vec<SocketAddr> = self
            .resolver
            .resolve(now, name, &dns)?
            .iter()
            .filter(|a| a.is_ipv4() || self.ipv6_share > 0.0)
            .map(|&a| SocketAddr::new(a, self.ports.get(&a).copied().unwrap_or(80)))
            .collect();
        if addrs.is_empty() {
            return None;
        }
        Some(tierlab_l7::client::pick_vip(
            &addrs,
            Some(self.ipv6_share),
            rng,
        ))
    }
}

fn family(v4: bool) -> Family {
    if v4 { Family::V4 } else { Family::V6 }
}

impl Lab {
    /// Runs the lab (packets and, when enabled, the control plane) up to `until`.
    ///
    /// # Errors
    /// A control-plane decision a tier refuses.
    pub fn advance(&mut self, until: Instant) -> Result<(), LabError> {
        loop {
            let due = self
                .control
                .as_ref()
                .and_then(ControlPlane::poll_timeout)
                .into_iter()
                .chain(self.pending_withdrawals.iter().map(|(t, _)| *t))
                .min()
                .filter(|t| *t <= until);
            let Some(t) = due else {
                self.net.run_until(until);
                return Ok(());
            };
            self.net.run_until(t);
            self.control_step(t)?;
        }
    }

    /// What the control plane decided so far.
    pub fn control_log(&self) -> &[ControlRecord] {
        self.control.as_ref().map_or(&[], |c| c.log.as_slice())
    }

    fn control_step(&mut self, now: Instant) -> Result<(), LabError> {
        // Without the control plane: a failed director leaves the routers at its hold time.
        self.pending_withdrawals.sort_unstable();
        while let Some(&(_, d)) = self
            .pending_withdrawals
            .first()
            .filter(|(at, _)| *at <= now)
        {
            self.pending_withdrawals.remove(0);
            self.withdraw_director(d)?;
        }
        let Some(mut cp) = self.control.take() else {
            return Ok(());
        };
        let r = self.control_step_with(&mut cp, now);
        self.control = Some(cp);
        r
    }

    fn control_step_with(&mut self, cp: &mut ControlPlane, now: Instant) -> Result<(), LabError> {
        // keepalived on each director.
        let mut edited = false;
        let directors: Vec<u32> = cp.keepalived.keys().copied().collect();
        for d in directors {
            let Some(k) = cp.keepalived.get_mut(&d) else {
                continue;
            };
            if k.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let blocked = &cp.blocked;
            let events = k.handle_timeout(now, |p| {
                if blocked.get(&(d, p)).is_some_and(|until| *until > now) {
                    return Probe::NoAnswer;
                }
                self.probe_proxy(p)
            });
            for e in events {
                let inhibit = cp.ka_cfg.inhibit_on_failure;
                let (p, op, what) = match (e, inhibit) {
                    (CheckerEvent::Down(p), false) => (p, DestEdit::Delete, "deleted"),
                    (CheckerEvent::Down(p), true) => (p, DestEdit::Weight(0), "set weight 0 on"),
                    (CheckerEvent::Up(p), false) => (p, DestEdit::Add, "added back"),
                    (CheckerEvent::Up(p), true) => (p, DestEdit::Weight(1), "restored weight of"),
                };
                self.director_dest(d, p, op)?;
                edited = true;
                cp.record(
                    now,
                    format!("director{d}"),
                    format!("keepalived {what} proxy{p}"),
                );
            }
        }
        if edited {
            let views = self.distinct_director_views();
            cp.record(
                now,
                "directors",
                if views == 1 {
                    "all hold the same tables".to_owned()
                } else {
                    format!("hold {views} different sets of tables")
                },
            );
        }
        // ExaBGP's healthcheck on each director.
        let due: Vec<u32> = cp
            .hc
            .iter()
            .filter(|(_, h)| h.next() <= now)
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            let quorum = cp.keepalived.get(&d).is_some_and(Keepalived::quorum_up);
            let disabled = cp.disabled.contains(&d);
            let Some(h) = cp.hc.get_mut(&d) else {
                continue;
            };
            let before = h.state();
            let advert = h.tick(now, disabled, quorum);
            let after = h.state();
            if before != after {
                cp.record(
                    now,
                    format!("director{d}"),
                    format!("healthcheck {before:?} -> {after:?}"),
                );
            }
            if let Some(a) = advert
                && cp.advertised.get(&d) != Some(&a)
            {
                cp.advertised.insert(d, a);
                let med = match a {
                    Advert::Announce(m) => Some(m),
                    Advert::Withdraw => None,
                };
                for fam in Family::ALL {
                    cp.fabric.advertise(now, d, fam, med);
                }
                let what = med.map_or_else(
                    || "withdraws the VIPs".to_owned(),
                    |m| format!("announces the VIPs with MED {m}"),
                );
                cp.record(now, format!("director{d}"), what);
            }
        }
        // BGP.
        if cp.fabric.handle_timeout(now) {
            for fam in Family::ALL {
                let best = cp.fabric.best(fam);
                if cp.installed.get(&fam) != Some(&best) {
                    self.set_vip_directors(fam == Family::V4, &best)?;
                    let names: Vec<String> = best.iter().map(|d| format!("director{d}")).collect();
                    cp.record(
                        now,
                        "routers",
                        format!(
                            "{} ECMP group: {}",
                            if fam == Family::V4 { "ipv4" } else { "ipv6" },
                            if names.is_empty() {
                                "empty".to_owned()
                            } else {
                                names.join(" ")
                            }
                        ),
                    );
                    cp.installed.insert(fam, best);
                }
            }
        }
        // gdnsd.
        let due = cp.dns.borrow().poll_timeout() <= now;
        if due {
            let installed = cp.installed.clone();
            let changed = cp.dns.borrow_mut().handle_timeout(now, |vip| {
                installed
                    .get(&family(vip.is_ipv4()))
                    .is_some_and(|b| !b.is_empty())
            });
            for a in changed {
                let up = cp.dns.borrow().is_up(a).unwrap_or(true);
                cp.record(
                    now,
                    "dns",
                    format!("{a} is {} by its check", if up { "up" } else { "down" }),
                );
            }
        }
        Ok(())
    }

    /// What proxy `p` answers a director's health check now.
    fn probe_proxy(&self, p: u32) -> Probe {
        let Some(id) = self.node_id(crate::names::NodeName {
            kind: crate::names::NodeKind::Proxy,
            index: p,
        }) else {
            return Probe::NoAnswer;
        };
        if !self.net.node_is_up(id) {
            Probe::NoAnswer
        } else if self.ops.proxy_monitor_ok(&self.net, id) {
            Probe::Ok
        } else {
            Probe::Failed
        }
    }

    /// Applies `action` through the control plane. `Ok(false)`: not a control-plane matter
    /// (the caller applies it directly).
    pub(crate) fn apply_controlled(&mut self, action: &Action) -> Result<bool, LabError> {
        let Some(mut cp) = self.control.take() else {
            return Ok(false);
        };
        let r = self.apply_with(&mut cp, action);
        self.control = Some(cp);
        r
    }

    fn apply_with(&mut self, cp: &mut ControlPlane, action: &Action) -> Result<bool, LabError> {
        let now = self.net.now();
        match action {
            Action::DirectorAdded { target } => {
                let d = target.0.index;
                self.add_director_node(d)?;
                cp.fabric.add_speaker(d, &mut cp.rng);
                cp.hc.insert(d, Healthcheck::new(cp.hc_cfg, now));
                let mut k = Keepalived::new(cp.ka_cfg);
                for &p in &self.in_service {
                    k.add_real(p, true, now + phase(&mut cp.rng, cp.ka_cfg.delay_loop));
                }
                cp.keepalived.insert(d, k);
                cp.record(
                    now,
                    target.0.to_string(),
                    "starts: keepalived and the healthcheck run",
                );
            }
            Action::DirectorRemoved { target } => {
                let d = target.0.index;
                self.id(target.0)?;
                cp.hc.remove(&d);
                cp.advertised.remove(&d);
                cp.fabric.stop_speaker(now, d);
                cp.record(
                    now,
                    target.0.to_string(),
                    "ExaBGP stops: the VIPs are withdrawn",
                );
            }
            Action::DirectorFailed { target } => {
                let d = target.0.index;
                let id = self.id(target.0)?;
                self.set_up(id, false)?;
                cp.hc.remove(&d);
                cp.advertised.remove(&d);
                cp.keepalived.remove(&d);
                if let Some(gone) = cp.fabric.kill_speaker(now, d) {
                    cp.record(
                        now,
                        target.0.to_string(),
                        format!(
                            "dies: its BGP sessions hold until their timers expire (routers drop it by {:.3} s)",
                            gone.as_secs_f64()
                        ),
                    );
                }
            }
            Action::DirectorDisabled { target } => {
                self.id(target.0)?;
                cp.disabled.insert(target.0.index);
                cp.record(now, target.0.to_string(), "maintenance file created");
            }
            Action::DirectorEnabled { target } => {
                self.id(target.0)?;
                cp.disabled.remove(&target.0.index);
                cp.record(now, target.0.to_string(), "maintenance file removed");
            }
            Action::ProxyAdded { target } => {
                let p = target.0.index;
                self.add_proxy_node(p)?;
                self.in_service.push(p);
                for (&d, k) in &mut cp.keepalived {
                    self.director_dest(d, p, DestEdit::Add)?;
                    k.add_real(p, true, now + phase(&mut cp.rng, cp.ka_cfg.delay_loop));
                }
                cp.record(
                    now,
                    target.0.to_string(),
                    "added to every director's keepalived configuration",
                );
            }
            Action::ProxyRemoved { target } => {
                let p = target.0.index;
                self.id(target.0)?;
                self.in_service.retain(|&x| x != p);
                let ds: Vec<u32> = self.director_indices();
                for d in ds {
                    self.director_dest(d, p, DestEdit::Delete)?;
                    if let Some(k) = cp.keepalived.get_mut(&d) {
                        k.remove_real(p);
                    }
                }
                cp.record(
                    now,
                    target.0.to_string(),
                    "removed from every director's keepalived configuration",
                );
            }
            Action::ProxyMaintenance { target, state } => {
                let id = self.id(target.0)?;
                self.ops
                    .proxy_set_agent(&mut self.net, id, *state == AgentState::Up);
                cp.record(
                    now,
                    target.0.to_string(),
                    format!("agent file says {state:?}"),
                );
            }
            Action::ProxyCheckFailed {
                target,
                director,
                duration_s,
            } => {
                self.id(target.0)?;
                self.id(director.0)?;
                let until = now + dur(*duration_s);
                cp.blocked.insert((director.0.index, target.0.index), until);
                cp.record(
                    now,
                    director.0.to_string(),
                    format!(
                        "cannot reach {} until {:.3} s",
                        target.0,
                        until.as_secs_f64()
                    ),
                );
            }
            Action::DnsAdmin { vip, state } => {
                let forced = match state {
                    DnsAdminState::Up => Some(true),
                    DnsAdminState::Down => Some(false),
                    DnsAdminState::Auto => None,
                };
                if !cp.dns.borrow_mut().set_admin(*vip, forced) {
                    return Err(LabError::Config {
                        what: "dns_admin".into(),
                        why: format!("{vip} is not served by any name"),
                    });
                }
                cp.record(now, "dns", format!("admin state: {vip} {state:?}"));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Indices of the directors that exist.
    fn director_indices(&self) -> Vec<u32> {
        (1..=u32::MAX)
            .map_while(|i| {
                self.node_id(crate::names::NodeName {
                    kind: crate::names::NodeKind::Director,
                    index: i,
                })
                .map(|_| i)
            })
            .collect()
    }

    /// How many different sets of lookup tables the live, announcing directors hold (1: they
    /// all agree, as consistent hashing needs).
    pub fn distinct_director_views(&self) -> usize {
        let mut views = BTreeSet::new();
        for &id in &self.nodes.directors {
            if !self.net.node_is_up(id) {
                continue;
            }
            let Some(n) = self.net.node::<DirectorNode>(id) else {
                continue;
            };
            let view: Vec<Vec<Option<IpAddr>>> = n
                .director
                .services()
                .map(|(_, svc)| {
                    svc.table()
                        .into_iter()
                        .map(|slot| slot.and_then(|d| svc.dest(d)).map(|d| d.addr))
                        .collect()
                })
                .collect();
            views.insert(view);
        }
        views.len()
    }
}

/// An edit of one director's destination for one proxy, on every service.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DestEdit {
    /// `ipvsadm -a` (to the head of the list); nothing if it is there.
    Add,
    /// `ipvsadm -d`; nothing if it is not there.
    Delete,
    /// `ipvsadm -e -w`.
    Weight(u32),
}
