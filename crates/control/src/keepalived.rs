//! keepalived's checks of a virtual server's real servers (HTTP_GET), and its quorum.
//!
//! Each real server has its own checker thread (keepalived check_http.c): a check connects
//! with `connect_timeout`, sends `GET /healthcheck` and expects status 200. A failed check
//! is retried `retry` times, `delay_before_retry` apart; when the last retry fails the real
//! server is marked down (removed from the IPVS service, or set to weight 0 with
//! `inhibit_on_failure`). One success marks it up again. The next regular check comes
//! `delay_loop` after the previous one ended. Checkers of different directors are not
//! synchronised: each starts at a random phase in its first delay loop.
//!
//! The virtual server's quorum holds while the number of real servers up is at least
//! `quorum` (weights are 1 in the lab).
//!
//! Approximation: checks are not put on the wire. The caller's probe says what the real
//! server would answer at the instant of the check ([`Probe`]); a server that answers (200
//! or an error status) does so at once (the lab's round trip is well under a millisecond), one
//! that cannot answer costs the full `connect_timeout`.

use std::collections::BTreeMap;

use tierlab_wire::{Duration, Instant};

/// keepalived's checker options (its defaults and the lab's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckerConfig {
    /// `delay_loop` (the lab: 10 s).
    pub delay_loop: Duration,
    /// `connect_timeout` (the lab: 2 s).
    pub connect_timeout: Duration,
    /// `retry` (keepalived's default for HTTP_GET: 1).
    pub retry: u32,
    /// `delay_before_retry` (default 1 s).
    pub delay_before_retry: Duration,
    /// `inhibit_on_failure`: a failed real server gets weight 0 instead of being removed (the
    /// lab: off).
    pub inhibit_on_failure: bool,
    /// `quorum` (default 1).
    pub quorum: u32,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        Self {
            delay_loop: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
            inhibit_on_failure: false,
            quorum: 1,
        }
    }
}

/// What a real server answers a check, at the instant of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// HTTP 200.
    Ok,
    /// Another status (`monitor-uri` failing answers 503), or a refused connection.
    Failed,
    /// No answer: the check fails after `connect_timeout`.
    NoAnswer,
}

/// A decision of the checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckerEvent {
    /// Real server `0` is down: remove it (or weight 0 with `inhibit_on_failure`).
    Down(u32),
    /// Real server `0` is up again: add it back (or restore its weight).
    Up(u32),
}

#[derive(Clone, Copy, Debug)]
struct Real {
    up: bool,
    /// Next check, or the instant the current one's failure becomes known.
    next: Instant,
    /// A check waiting for its connect timeout.
    waiting: bool,
    retries_used: u32,
}

/// One director's checkers (one per real server) and its quorum.
#[derive(Clone, Debug)]
pub struct Keepalived {
    cfg: CheckerConfig,
    reals: BTreeMap<u32, Real>,
}

impl Keepalived {
    /// A checker with no real servers.
    pub fn new(cfg: CheckerConfig) -> Self {
        Self {
            cfg,
            reals: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CheckerConfig {
        &self.cfg
    }

    /// Starts checking real server `real` (in state `up`), first check at `first`.
    pub fn add_real(&mut self, real: u32, up: bool, first: Instant) {
        self.reals.insert(
            real,
            Real {
                up,
                next: first,
                waiting: false,
                retries_used: 0,
            },
        );
    }

    /// Stops checking `real` (it left the configuration).
    pub fn remove_real(&mut self, real: u32) {
        self.reals.remove(&real);
    }

    /// Whether `real` is up in this checker's view.
    pub fn is_up(&self, real: u32) -> Option<bool> {
        self.reals.get(&real).map(|r| r.up)
    }

    /// Real servers up.
    pub fn up_count(&self) -> u32 {
        self.reals.values().filter(|r| r.up).count() as u32
    }

    /// Whether the quorum holds.
    pub fn quorum_up(&self) -> bool {
        self.up_count() >= self.cfg.quorum
    }

    /// The next instant [`Keepalived::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reals.values().map(|r| r.next).min()
    }

    /// Runs the checks due at `now`; `probe(real)` says what `real` answers now. Returns the
    /// decisions, in real-server order.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        mut probe: impl FnMut(u32) -> Probe,
    ) -> Vec<CheckerEvent> {
        let mut events = Vec::new();
        let cfg = self.cfg;
        for (&id, r) in &mut self.reals {
            while r.next <= now {
                let result = if r.waiting {
                    r.waiting = false;
                    false
                } else {
                    match probe(id) {
                        Probe::Ok => true,
                        Probe::Failed => false,
                        Probe::NoAnswer => {
                            r.waiting = true;
                            r.next += cfg.connect_timeout;
                            continue;
                        }
                    }
                };
                let ended = r.next;
                if result {
                    r.retries_used = 0;
                    if !r.up {
                        r.up = true;
                        events.push(CheckerEvent::Up(id));
                    }
                    r.next = ended + cfg.delay_loop;
                } else if r.retries_used < cfg.retry {
                    r.retries_used += 1;
                    r.next = ended + cfg.delay_before_retry;
                } else {
                    r.retries_used = 0;
                    if r.up {
                        r.up = false;
                        events.push(CheckerEvent::Down(id));
                    }
                    r.next = ended + cfg.delay_loop;
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(
        k: &mut Keepalived,
        until: Instant,
        probe: impl Fn(u32, Instant) -> Probe,
    ) -> Vec<(Instant, CheckerEvent)> {
        let mut out = Vec::new();
        while let Some(t) = k.poll_timeout().filter(|t| *t <= until) {
            for e in k.handle_timeout(t, |r| probe(r, t)) {
                out.push((t, e));
            }
        }
        out
    }

    #[test]
    fn a_dead_server_is_removed_after_two_timeouts_and_a_retry() {
        let mut k = Keepalived::new(CheckerConfig::default());
        k.add_real(1, true, Instant::from_secs(3));
        k.add_real(2, true, Instant::from_secs(7));
        // Server 1 dies at 5 s: the check at 13 s times out at 15 s, the retry at 16 s times
        // out at 18 s: removed then.
        let dead = |r: u32, t: Instant| {
            if r == 1 && t >= Instant::from_secs(5) {
                Probe::NoAnswer
            } else {
                Probe::Ok
            }
        };
        let ev = drive(&mut k, Instant::from_secs(30), dead);
        assert_eq!(ev, vec![(Instant::from_secs(18), CheckerEvent::Down(1))]);
        assert!(k.quorum_up());
        assert_eq!(k.up_count(), 1);
    }

    #[test]
    fn a_503_fails_at_once_and_one_success_brings_it_back() {
        let mut k = Keepalived::new(CheckerConfig::default());
        k.add_real(1, true, Instant::from_secs(0));
        let failing = |_r: u32, t: Instant| {
            if t >= Instant::from_secs(5) && t < Instant::from_secs(25) {
                Probe::Failed
            } else {
                Probe::Ok
            }
        };
        let ev = drive(&mut k, Instant::from_secs(40), failing);
        // Check at 10 fails, retry at 11 fails: down at 11. Checks at 21 fail (retry at 22),
        // down already; 32 succeeds: up.
        assert_eq!(
            ev,
            vec![
                (Instant::from_secs(11), CheckerEvent::Down(1)),
                (Instant::from_secs(32), CheckerEvent::Up(1)),
            ]
        );
        assert!(!Keepalived::new(CheckerConfig::default()).quorum_up());
    }
}
