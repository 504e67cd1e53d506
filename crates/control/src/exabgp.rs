//! ExaBGP's `healthcheck` program, as its source (src/exabgp/application/healthcheck.py)
//! runs it: one loop iteration per interval (the fast interval while RISING or FALLING); a
//! disable file makes the state DISABLED at once; otherwise `rise` successes in a row bring
//! the service UP and `fall` failures DOWN. Every iteration re-announces the state (no
//! `--debounce`): UP with the up MED, DOWN with the down MED, DISABLED with the disabled MED,
//! or a withdrawal for DOWN and DISABLED with `--withdraw-on-down`. INIT, RISING and FALLING
//! announce nothing (the previous announcement stands).
//!
//! Approximation: ExaBGP adds `--increase` (default 1) to the MED of each further VIP; all
//! speakers do the same, so the per-VIP offset changes no comparison and is left out. The
//! check command's own duration is taken as zero (the lab's check reads keepalived's quorum).

use tierlab_wire::{Duration, Instant};

/// The healthcheck's options (ExaBGP defaults, the lab's interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthcheckConfig {
    /// `--interval` (ExaBGP default 5 s; the lab: 10 s).
    pub interval: Duration,
    /// `--fast-interval` while RISING or FALLING (default 1 s).
    pub fast_interval: Duration,
    /// `--rise` (default 3).
    pub rise: u32,
    /// `--fall` (default 3).
    pub fall: u32,
    /// `--up-metric` (default 100).
    pub up_med: u32,
    /// `--down-metric` (default 1000).
    pub down_med: u32,
    /// `--disabled-metric` (default 500).
    pub disabled_med: u32,
    /// `--withdraw-on-down`: withdraw instead of raising the MED (the lab: off).
    pub withdraw_on_down: bool,
}

impl Default for HealthcheckConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            fast_interval: Duration::from_secs(1),
            rise: 3,
            fall: 3,
            up_med: 100,
            down_med: 1000,
            disabled_med: 500,
            withdraw_on_down: false,
        }
    }
}

/// The healthcheck's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcState {
    /// Just started.
    Init,
    /// Succeeding, not yet `rise` times.
    Rising,
    /// Failing, not yet `fall` times.
    Falling,
    /// Up: announced with the up MED.
    Up,
    /// Down: announced with the down MED (or withdrawn).
    Down,
    /// The disable file exists.
    Disabled,
}

/// What one iteration tells ExaBGP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advert {
    /// `announce route … med M`.
    Announce(u32),
    /// `withdraw route …`.
    Withdraw,
}

/// One director's healthcheck loop.
#[derive(Clone, Debug)]
pub struct Healthcheck {
    cfg: HealthcheckConfig,
    state: HcState,
    checks: u32,
    next: Instant,
}

impl Healthcheck {
    /// A loop whose first iteration runs at `first`.
    pub fn new(cfg: HealthcheckConfig, first: Instant) -> Self {
        Self {
            cfg,
            state: HcState::Init,
            checks: 0,
            next: first,
        }
    }

    /// A loop that has been running with the service up (a converged lab), next iteration
    /// at `next`.
    pub fn up(cfg: HealthcheckConfig, next: Instant) -> Self {
        Self {
            cfg,
            state: HcState::Up,
            checks: 0,
            next,
        }
    }

    /// The current state.
    pub fn state(&self) -> HcState {
        self.state
    }

    /// When the next iteration runs.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Runs the iteration due at `now`: `disabled` says whether the disable file exists,
    /// `check_ok` whether the check command succeeds. Returns what is announced (nothing in
    /// INIT, RISING and FALLING) and schedules the next iteration.
    pub fn tick(&mut self, now: Instant, disabled: bool, check_ok: bool) -> Option<Advert> {
        let ok = disabled || check_ok;
        let c = self.cfg;
        self.state = match self.state {
            s if s != HcState::Disabled && disabled => HcState::Disabled,
            HcState::Init if ok && c.rise <= 1 => HcState::Up,
            HcState::Init if ok => {
                self.checks = 1;
                HcState::Rising
            }
            HcState::Init => {
                self.checks = 1;
                self.falling()
            }
            HcState::Disabled if !disabled => HcState::Init,
            HcState::Disabled => HcState::Disabled,
            HcState::Rising if ok => {
                self.checks += 1;
                if self.checks >= c.rise {
                    HcState::Up
                } else {
                    HcState::Rising
                }
            }
            HcState::Rising => {
                self.checks = 1;
                self.falling()
            }
            HcState::Falling if !ok => {
                self.checks += 1;
                if self.checks >= c.fall {
                    HcState::Down
                } else {
                    HcState::Falling
                }
            }
            HcState::Falling => {
                self.checks = 1;
                self.rising()
            }
            HcState::Up if !ok => {
                self.checks = 1;
                self.falling()
            }
            HcState::Up => HcState::Up,
            HcState::Down if ok => {
                self.checks = 1;
                self.rising()
            }
            HcState::Down => HcState::Down,
        };
        let pause = match self.state {
            HcState::Rising | HcState::Falling => c.fast_interval,
            _ => c.interval,
        };
        self.next = now + pause;
        match self.state {
            HcState::Up => Some(Advert::Announce(c.up_med)),
            HcState::Down | HcState::Disabled if c.withdraw_on_down => Some(Advert::Withdraw),
            HcState::Down => Some(Advert::Announce(c.down_med)),
            HcState::Disabled => Some(Advert::Announce(c.disabled_med)),
            _ => None,
        }
    }

    /// `trigger(FALLING)`: straight to DOWN when `fall` ≤ 1.
    fn falling(&self) -> HcState {
        if self.cfg.fall <= 1 {
            HcState::Down
        } else {
            HcState::Falling
        }
    }

    /// `trigger(RISING)`: straight to UP when `rise` ≤ 1.
    fn rising(&self) -> HcState {
        if self.cfg.rise <= 1 {
            HcState::Up
        } else {
            HcState::Rising
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    #[test]
    fn a_new_speaker_announces_after_rise_checks_at_the_fast_interval() {
        let mut h = Healthcheck::new(HealthcheckConfig::default(), at(0));
        assert_eq!(h.tick(at(0), false, true), None);
        assert_eq!(h.next(), at(1));
        assert_eq!(h.tick(at(1), false, true), None);
        assert_eq!(h.tick(at(2), false, true), Some(Advert::Announce(100)));
        assert_eq!(h.state(), HcState::Up);
        assert_eq!(h.next(), at(12));
    }

    #[test]
    fn quorum_lost_raises_the_med_after_fall_checks() {
        let mut h = Healthcheck::up(HealthcheckConfig::default(), at(10));
        assert_eq!(h.tick(at(10), false, false), None);
        assert_eq!(h.state(), HcState::Falling);
        assert_eq!(h.tick(at(11), false, false), None);
        assert_eq!(h.tick(at(12), false, false), Some(Advert::Announce(1000)));
        // One success goes back to RISING, not UP.
        assert_eq!(h.tick(at(22), false, true), None);
        assert_eq!(h.state(), HcState::Rising);
    }

    #[test]
    fn the_disable_file_acts_at_the_next_iteration_and_withdraws_if_asked() {
        let mut h = Healthcheck::up(HealthcheckConfig::default(), at(10));
        assert_eq!(h.tick(at(10), true, true), Some(Advert::Announce(500)));
        assert_eq!(h.state(), HcState::Disabled);
        // Removing the file goes back through INIT and RISING.
        assert_eq!(h.tick(at(20), false, true), None);
        assert_eq!(h.state(), HcState::Init);
        let cfg = HealthcheckConfig {
            withdraw_on_down: true,
            ..HealthcheckConfig::default()
        };
        let mut h = Healthcheck::up(cfg, at(10));
        assert_eq!(h.tick(at(10), true, true), Some(Advert::Withdraw));
    }
}
