//! BGP reduced to what moves traffic.
//!
//! Speakers (the directors, running ExaBGP) hold one session per address family with each
//! route reflector; reflectors reflect every path to every router (add-paths), and routers
//! install as their ECMP group every speaker holding a path with the best MED (BIRD's
//! `merge paths` over paths that compare equal; MEDs are compared because all speakers are in
//! one AS). What is modelled:
//!
//! - **Announce / withdraw** with a MED per speaker and family. Each BGP hop (speaker →
//!   reflector, reflector → routers) takes [`BgpConfig::propagation`]. Routers all receive
//!   the same updates at the same time, so one router view serves them all.
//! - **Keepalive and hold timers**: each session sends keepalives every
//!   [`SessionTimers::keepalive`] from a random phase (drawn from the caller's generator). When
//!   a speaker dies without a word, each reflector keeps its paths until that session's hold
//!   timer expires: `hold` after the last keepalive it received. The router keeps a path
//!   while any reflector still reflects it.
//! - **Graceful stop**: a speaker that stops (ExaBGP exiting, a NOTIFICATION) withdraws at
//!   once, subject to the propagation delay.
//!
//! Not modelled: OPEN/UPDATE encoding, best-path steps other than MED (all paths share the
//! AS path, origin and local preference), MRAI timers, route-refresh.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tierlab_wire::{Duration, Instant};

/// Address family of a session (the lab runs one BGP session per family).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// IPv4 unicast.
    V4,
    /// IPv6 unicast.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];
}

/// Keepalive and hold time of one family's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimers {
    /// Hold time: a session that hears nothing for this long is torn down.
    pub hold: Duration,
    /// Interval between keepalives.
    pub keepalive: Duration,
}

/// The fabric's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BgpConfig {
    /// IPv4 sessions (the lab: hold 6 s, keepalive 2 s = hold / 3).
    pub v4: SessionTimers,
    /// IPv6 sessions (the lab: hold 3 s, keepalive 1 s).
    pub v6: SessionTimers,
    /// Route reflectors (the lab: 2). At least 1.
    pub reflectors: u32,
    /// Delay of one BGP hop (processing and transmission of an UPDATE).
    pub propagation: Duration,
}

impl Default for BgpConfig {
    fn default() -> Self {
        Self {
            v4: SessionTimers {
                hold: Duration::from_secs(6),
                keepalive: Duration::from_secs(2),
            },
            v6: SessionTimers {
                hold: Duration::from_secs(3),
                keepalive: Duration::from_secs(1),
            },
            reflectors: 2,
            propagation: Duration::from_millis(10),
        }
    }
}

impl BgpConfig {
    /// The timers of `family`'s sessions.
    pub fn timers(&self, family: Family) -> SessionTimers {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// One session between a speaker and a reflector, for one family.
#[derive(Clone, Copy, Debug)]
struct Session {
    /// Keepalives leave at `phase + k · keepalive`.
    phase: Duration,
    /// When the reflector's hold timer fires (the speaker died), if it will.
    expires: Option<Instant>,
    /// Whether the session is established.
    up: bool,
}

/// An UPDATE in flight.
#[derive(Clone, Copy, Debug)]
enum Update {
    /// From a speaker to a reflector.
    ToReflector {
        reflector: u32,
        family: Family,
        speaker: u32,
        med: Option<u32>,
    },
    /// From a reflector to every router.
    ToRouters {
        reflector: u32,
        family: Family,
        speaker: u32,
        med: Option<u32>,
    },
}

/// The BGP fabric: speakers, reflectors and what the routers hold.
#[derive(Clone, Debug)]
pub struct Fabric {
    cfg: BgpConfig,
    sessions: BTreeMap<(u32, u32, Family), Session>,
    /// (reflector, family, speaker) → MED the reflector holds.
    reflector_rib: BTreeMap<(u32, Family, u32), u32>,
    /// (family, speaker, reflector) → MED the routers hold.
    router_rib: BTreeMap<(Family, u32, u32), u32>,
    in_flight: BTreeMap<(Instant, u64), Update>,
    seq: u64,
}

impl Fabric {
    /// An empty fabric.
    pub fn new(cfg: BgpConfig) -> Self {
        Self {
            cfg,
            sessions: BTreeMap::new(),
            reflector_rib: BTreeMap::new(),
            router_rib: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BgpConfig {
        &self.cfg
    }

    /// Speaker `speaker` establishes its sessions (one per reflector and family, keepalive
    /// phases drawn from `rng`). It announces nothing yet.
    pub fn add_speaker(&mut self, speaker: u32, rng: &mut impl Rng) {
        for reflector in 0..self.cfg.reflectors.max(1) {
            for family in Family::ALL {
                let ka = self.cfg.timers(family).keepalive.as_nanos().max(1);
                let phase = Duration::from_nanos(rng.random_range(0..ka));
                self.sessions.insert(
                    (speaker, reflector, family),
                    Session {
                        phase,
                        expires: None,
                        up: true,
                    },
                );
            }
        }
    }

    /// Speaker `speaker` announces its VIPs of `family` with `med` (`None`: withdraws them)
    /// now; reflectors hear it after one propagation delay, routers after two.
    pub fn advertise(&mut self, now: Instant, speaker: u32, family: Family, med: Option<u32>) {
        for reflector in 0..self.cfg.reflectors.max(1) {
            if self
                .sessions
                .get(&(speaker, reflector, family))
                .is_some_and(|s| s.up && s.expires.is_none())
            {
                self.send(
                    now + self.cfg.propagation,
                    Update::ToReflector {
                        reflector,
                        family,
                        speaker,
                        med,
                    },
                );
            }
        }
    }

    /// Speaker `speaker` stops gracefully: its paths are withdrawn now (a NOTIFICATION, or
    /// ExaBGP withdrawing on exit) and its sessions close.
    pub fn stop_speaker(&mut self, now: Instant, speaker: u32) {
        for family in Family::ALL {
            self.advertise(now, speaker, family, None);
        }
        for ((s, _, _), session) in &mut self.sessions {
            if *s == speaker {
                session.up = false;
            }
        }
    }

    /// Speaker `speaker` dies without a word: each reflector keeps its paths until the
    /// session's hold timer expires, `hold` after the last keepalive sent before `now`.
    /// Returns when the last of its paths will have left the routers.
    pub fn kill_speaker(&mut self, now: Instant, speaker: u32) -> Option<Instant> {
        let mut last = None;
        let prop = self.cfg.propagation;
        for ((s, _, family), session) in &mut self.sessions {
            if *s != speaker || !session.up || session.expires.is_some() {
                continue;
            }
            let t = self.cfg.timers(*family);
            let ka = t.keepalive.as_nanos().max(1);
            let since_start = now.as_nanos();
            let phase = session.phase.as_nanos();
            // The last keepalive that left at or before `now` (a session whose first one is
            // still to come was opened with the run: count the start as heard).
            let last_ka = if since_start >= phase {
                phase + (since_start - phase) / ka * ka
            } else {
                0
            };
            let heard = Instant::from_nanos(last_ka) + prop;
            let expires = heard + t.hold;
            session.expires = Some(expires);
            let gone = expires + prop;
            last = Some(last.map_or(gone, |l: Instant| l.max(gone)));
        }
        last
    }

    /// The next instant [`Fabric::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let msg = self.in_flight.keys().next().map(|(t, _)| *t);
        let hold = self.sessions.values().filter_map(|s| s.expires).min();
        match (msg, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers the updates and fires the hold timers due at `now`. Returns whether what the
    /// routers hold changed.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let mut changed = false;
        loop {
            let hold = self
                .sessions
                .iter()
                .filter_map(|(k, s)| s.expires.map(|e| (e, *k)))
                .filter(|(e, _)| *e <= now)
                .min();
            let msg = self
                .in_flight
                .first_key_value()
                .map(|(k, _)| *k)
                .filter(|(t, _)| *t <= now);
            match (hold, msg) {
                (Some((e, key)), m) if m.is_none_or(|(t, _)| e <= t) => {
                    self.expire(e, key);
                }
                (_, Some(k)) => {
                    let u = self.in_flight.remove(&k).expect("key just read");
                    changed |= self.deliver(k.0, u);
                }
                _ => break,
            }
        }
        changed
    }

    fn expire(&mut self, at: Instant, (speaker, reflector, family): (u32, u32, Family)) {
        if let Some(s) = self.sessions.get_mut(&(speaker, reflector, family)) {
            s.expires = None;
            s.up = false;
        }
        if self
            .reflector_rib
            .remove(&(reflector, family, speaker))
            .is_some()
        {
            self.send(
                at + self.cfg.propagation,
                Update::ToRouters {
                    reflector,
                    family,
                    speaker,
                    med: None,
                },
            );
        }
    }

    fn deliver(&mut self, at: Instant, u: Update) -> bool {
        match u {
            Update::ToReflector {
                reflector,
                family,
                speaker,
                med,
            } => {
                let before = match med {
                    Some(m) => self.reflector_rib.insert((reflector, family, speaker), m),
                    None => self.reflector_rib.remove(&(reflector, family, speaker)),
                };
                if before != med {
                    self.send(
                        at + self.cfg.propagation,
                        Update::ToRouters {
                            reflector,
                            family,
                            speaker,
                            med,
                        },
                    );
                }
                false
            }
            Update::ToRouters {
                reflector,
                family,
                speaker,
                med,
            } => {
                let before = self.best(family);
                match med {
                    Some(m) => self.router_rib.insert((family, speaker, reflector), m),
                    None => self.router_rib.remove(&(family, speaker, reflector)),
                };
                before != self.best(family)
            }
        }
    }

    fn send(&mut self, at: Instant, u: Update) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), u);
    }

    /// The speakers the routers use for `family` now: those holding a path with the lowest
    /// MED, in ascending order (BIRD orders a multipath route's next hops by gateway address,
    /// and speakers are numbered in address order).
    pub fn best(&self, family: Family) -> Vec<u32> {
        let paths = self
            .router_rib
            .range((family, 0, 0)..=(family, u32::MAX, u32::MAX));
        let Some(best) = paths.clone().map(|(_, m)| *m).min() else {
            return Vec::new();
        };
        let mut out: Vec<u32> = paths
            .filter(|(_, m)| **m == best)
            .map(|((_, s, _), _)| *s)
            .collect();
        out.dedup();
        out
    }

    /// The MED the routers hold for `speaker` on `family` (the best of its paths), if any.
    pub fn med(&self, family: Family, speaker: u32) -> Option<u32> {
        self.router_rib
            .range((family, speaker, 0)..=(family, speaker, u32::MAX))
            .map(|(_, m)| *m)
            .min()
    }

    /// Installs `speaker`'s announcement directly in every reflector and router (the state
    /// of a fabric that has been running: used to start a lab already converged).
    pub fn preload(&mut self, speaker: u32, family: Family, med: u32) {
        for reflector in 0..self.cfg.reflectors.max(1) {
            self.reflector_rib.insert((reflector, family, speaker), med);
            self.router_rib.insert((family, speaker, reflector), med);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_wire::rng;

    fn converged(n: u32) -> Fabric {
        let mut f = Fabric::new(BgpConfig::default());
        let mut r = rng::seeded(3);
        for s in 1..=n {
            f.add_speaker(s, &mut r);
            for fam in Family::ALL {
                f.preload(s, fam, 100);
            }
        }
        f
    }

    fn run(f: &mut Fabric, until: Instant) -> Vec<Instant> {
        let mut changes = Vec::new();
        while let Some(t) = f.poll_timeout().filter(|t| *t <= until) {
            if f.handle_timeout(t) {
                changes.push(t);
            }
        }
        changes
    }

    #[test]
    fn a_withdrawal_takes_two_hops() {
        let mut f = converged(3);
        let t0 = Instant::from_secs(5);
        f.advertise(t0, 2, Family::V4, None);
        run(&mut f, t0 + Duration::from_millis(19));
        assert_eq!(f.best(Family::V4), vec![1, 2, 3]);
        run(&mut f, t0 + Duration::from_millis(20));
        assert_eq!(f.best(Family::V4), vec![1, 3]);
        assert_eq!(f.best(Family::V6), vec![1, 2, 3]);
    }

    #[test]
    fn a_higher_med_leaves_ecmp_only_while_others_are_better() {
        let mut f = converged(3);
        let t0 = Instant::from_secs(1);
        f.advertise(t0, 1, Family::V4, Some(1000));
        run(&mut f, Instant::from_secs(2));
        assert_eq!(f.best(Family::V4), vec![2, 3]);
        assert_eq!(f.med(Family::V4, 1), Some(1000));
        for s in [2, 3] {
            f.advertise(Instant::from_secs(2), s, Family::V4, Some(1000));
        }
        run(&mut f, Instant::from_secs(3));
        assert_eq!(f.best(Family::V4), vec![1, 2, 3], "all equal again");
    }

    #[test]
    fn a_dead_speaker_stays_until_the_hold_timer() {
        let mut f = converged(4);
        let died = Instant::from_secs(30) + Duration::from_millis(300);
        let gone = f.kill_speaker(died, 3).unwrap();
        let cfg = BgpConfig::default();
        // Between hold − keepalive and hold after the death (plus two hops).
        let lo = died + (cfg.v4.hold - cfg.v4.keepalive);
        let hi = died + cfg.v4.hold + cfg.propagation + cfg.propagation;
        assert!(gone > lo && gone <= hi, "{gone:?}");
        let changes = run(&mut f, Instant::from_secs(60));
        assert_eq!(f.best(Family::V4), vec![1, 2, 4]);
        assert_eq!(f.best(Family::V6), vec![1, 2, 4]);
        // IPv6 (hold 3 s) went first, IPv4 (hold 6 s) last; the path left only when both
        // reflectors had dropped it.
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0] <= died + Duration::from_secs(3) + Duration::from_millis(20));
        assert!(changes[1] > died + Duration::from_secs(4));
        assert_eq!(*changes.last().unwrap(), gone);
    }

    #[test]
    fn a_graceful_stop_is_quick() {
        let mut f = converged(2);
        f.stop_speaker(Instant::from_secs(1), 1);
        run(&mut f, Instant::from_secs(2));
        assert_eq!(f.best(Family::V4), vec![2]);
        assert_eq!(f.best(Family::V6), vec![2]);
        // A stopped speaker's announcements go nowhere.
        f.advertise(Instant::from_secs(3), 1, Family::V4, Some(100));
        run(&mut f, Instant::from_secs(4));
        assert_eq!(f.best(Family::V4), vec![2]);
    }
}
