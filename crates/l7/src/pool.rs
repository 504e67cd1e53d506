//! The backend pool: servers, their states (agent check and active health check, with
//! HAProxy's meanings) and the balancing algorithms (`roundrobin`, `leastconn`, `source`).
//!
//! HAProxy defaults used (doc/configuration.txt, 2.x/3.x): `inter 2s`, `rise 2`, `fall 3`,
//! `weight 1`; `agent-inter` defaults to `inter`. A server starts UP with its health counter at
//! `rise`, so the first failed check takes it down ("up, but will fall down at first failure",
//! src/check.c `init_srv_check`); afterwards `fall` consecutive failures take it down and
//! `rise` consecutive successes bring it up.

use std::net::{IpAddr, SocketAddr};

use crate::http::AgentWord;

/// A balancing algorithm (`balance` keyword).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// HAProxy's weighted round robin (src/lb_fwrr.c): servers sit on a virtual timeline and
    /// each pick advances the chosen one by `SCALE / weight`; smooth, and weights may change
    /// at run time.
    #[default]
    RoundRobin,
    /// Fewest current connections relative to weight (src/lb_fwlc.c); ties in round-robin
    /// order.
    LeastConn,
    /// `balance source` with the default `hash-type map-based`: the XOR of the source address'
    /// 32-bit words, modulo the total weight, into a smooth map of servers (src/backend.c
    /// `get_server_sh`, src/lb_map.c `recalc_server_map`).
    Source,
}

/// Configuration of one server line.
#[derive(Clone, Debug, Eq, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port (the lab: `[2001:db8:1:0:2::N]:88`).
    pub addr: SocketAddr,
    /// Configured weight (1–256; HAProxy default 1).
    pub weight: u16,
    /// Agent-check port (the lab: 5555), if `agent-check` is set.
    pub agent_port: Option<u16>,
}

/// Active health check parameters (`check inter 2s rise 2 fall 3`).
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Whether the `check` keyword is set (TCP connect check).
    pub enabled: bool,
    /// Interval between checks (and the check's own timeout).
    pub inter: tierlab_wire::Duration,
    /// Consecutive successes to go up.
    pub rise: u8,
    /// Consecutive failures to go down.
    pub fall: u8,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            inter: tierlab_wire::Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// One server's run-time state.
#[derive(Clone, Debug, Eq, PartialEq, serde::Serialize)]
pub struct Server {
    /// Configuration.
    pub cfg: ServerConfig,
    /// Operational state from health checks and agent `up`/`down`.
    pub up: bool,
    /// Administrative drain (agent `drain`).
    pub drain: bool,
    /// Administrative maintenance (agent `maint`).
    pub maint: bool,
    /// Current weight (configured weight × agent percentage).
    pub weight: u32,
    /// Health counter: 0 ..= rise + fall − 1; up when ≥ rise.
    pub health: u8,
    /// Current connections.
    pub conns: u32,
    /// Connections ever sent to it.
    pub total: u64,
    /// Position on the round-robin timeline.
    pos: u64,
    /// Round-robin order among ties (last pick number).
    last: u64,
}

impl Server {
    /// Whether new connections may go to this server.
    pub fn usable(&self) -> bool {
        self.up && !self.drain && !self.maint && self.weight > 0
    }
}

/// Scale of the round-robin timeline (one weight unit advances a server by this much).
const SCALE: u64 = 1 << 24;

/// A backend: servers and an algorithm.
#[derive(Clone, Debug, Eq, PartialEq, serde::Serialize)]
pub struct Pool {
    servers: Vec<Server>,
    balance: Balance,
    check: CheckConfig,
    picks: u64,
    /// Round-robin timeline position (the position of the last pick).
    now_pos: u64,
    gcd: u32,
    /// Source-hash map (server indexes), rebuilt when weights change.
    map: Vec<u16>,
    /// The effective weights `map` was built from.
    #[serde(skip)]
    map_weights: Vec<i64>,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Pool {
    /// A pool; every server starts UP with health `rise` (HAProxy's start-up state).
    pub fn new(servers: Vec<ServerConfig>, balance: Balance, check: CheckConfig) -> Self {
        let g = servers
            .iter()
            .map(|s| u32::from(s.weight))
            .fold(0, gcd)
            .max(1);
        let servers = servers
            .into_iter()
            .map(|cfg| Server {
                weight: u32::from(cfg.weight),
                cfg,
                up: true,
                drain: false,
                maint: false,
                health: check.rise,
                conns: 0,
                total: 0,
                pos: 0,
                last: 0,
            })
            .collect();
        let mut p = Self {
            servers,
            balance,
            check,
            picks: 0,
            now_pos: 0,
            gcd: g,
            map: Vec::new(),
            map_weights: Vec::new(),
        };
        p.rebuild_map();
        p
    }

    /// The servers.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The health-check parameters.
    pub fn check_config(&self) -> CheckConfig {
        self.check
    }

    /// Number of servers that may take new connections (HAProxy `nbsrv`).
    pub fn usable(&self) -> usize {
        self.servers.iter().filter(|s| s.usable()).count()
    }

    /// HAProxy `lb_map.c` `recalc_server_map`: a map of `total weight` slots filled smoothly
    /// (each round every server gains its weight, the highest score takes the slot and loses
    /// the total).
    fn rebuild_map(&mut self) {
        let w: Vec<i64> = self
            .servers
            .iter()
            .map(|s| {
                if s.usable() {
                    i64::from(s.weight / self.gcd)
                } else {
                    0
                }
            })
            .collect();
        // Health and agent checks report every few seconds, almost always with no change:
        // the map is a function of these weights only.
        if !self.map.is_empty() && w == self.map_weights {
            return;
        }
        self.map_weights.clone_from(&w);
        let tot: i64 = w.iter().sum();
        let mut score = vec![0i64; w.len()];
        self.map.clear();
        for _ in 0..tot {
            let mut best: Option<usize> = None;
            for (i, wi) in w.iter().enumerate() {
                if *wi == 0 {
                    continue;
                }
                score[i] += wi;
                if best.is_none_or(|b| score[i] > score[b]) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                score[b] -= tot;
                self.map.push(b as u16);
            }
        }
    }

    /// Picks a server for a new connection from `client`; `None` when none is usable.
    pub fn pick(&mut self, client: IpAddr) -> Option<usize> {
        let i = match self.balance {
            Balance::RoundRobin => self
                .servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.usable())
                .min_by_key(|(i, s)| (s.pos.max(self.now_pos), *i))
                .map(|(i, _)| i)?,
            Balance::LeastConn => self
                .servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.usable())
                .min_by_key(|(_, s)| (u64::from(s.conns + 1) * SCALE / u64::from(s.weight), s.last))
                .map(|(i, _)| i)?,
            Balance::Source => {
                if self.map.is_empty() {
                    return None;
                }
                let h = match client {
                    IpAddr::V4(a) => u32::from(a),
                    IpAddr::V6(a) => a
                        .octets()
                        .chunks(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .fold(0, |h, w| h ^ w),
                };
                usize::from(self.map[h as usize % self.map.len()])
            }
        };
        self.picks += 1;
        let s = &mut self.servers[i];
        let start = s.pos.max(self.now_pos);
        self.now_pos = start;
        s.pos = start + SCALE / u64::from(s.weight.max(1));
        s.last = self.picks;
        s.conns += 1;
        s.total += 1;
        Some(i)
    }

    /// A connection to server `i` ended.
    pub fn release(&mut self, i: usize) {
        if let Some(s) = self.servers.get_mut(i) {
            s.conns = s.conns.saturating_sub(1);
        }
    }

    /// Applies an agent reply to server `i`; returns whether its usability changed.
    pub fn apply_agent(&mut self, i: usize, words: &[AgentWord]) -> bool {
        let Some(s) = self.servers.get_mut(i) else {
            return false;
        };
        let before = s.usable();
        for w in words {
            match *w {
                AgentWord::Up => s.up = true,
                AgentWord::Down => s.up = false,
                AgentWord::Drain => s.drain = true,
                AgentWord::Maint => s.maint = true,
                AgentWord::Ready => {
                    s.drain = false;
                    s.maint = false;
                }
                AgentWord::Weight(p) => {
                    s.weight = (u32::from(s.cfg.weight) * u32::from(p) / 100).min(256 * 256);
                    if p > 0 && s.weight == 0 {
                        s.weight = 1;
                    }
                }
            }
        }
        self.after_change(i, before)
    }

    /// Records a health-check result for server `i` (HAProxy src/check.c
    /// `check_notify_success` / `check_notify_failure`); returns whether its usability changed.
    pub fn check_result(&mut self, i: usize, ok: bool) -> bool {
        let (rise, fall) = (self.check.rise, self.check.fall);
        let Some(s) = self.servers.get_mut(i) else {
            return false;
        };
        let before = s.usable();
        if ok {
            if s.health < rise + fall - 1 {
                s.health += 1;
                if s.health == rise {
                    s.up = true;
                }
            }
            if s.health >= rise {
                s.health = s.health.max(rise);
            }
        } else if s.health > rise {
            s.health -= 1;
        } else {
            s.health = 0;
            s.up = false;
        }
        self.after_change(i, before)
    }

    /// Sets server `i` up or down administratively (tests, scenario events).
    pub fn set_up(&mut self, i: usize, up: bool) -> bool {
        let Some(s) = self.servers.get_mut(i) else {
            return false;
        };
        let before = s.usable();
        s.up = up;
        self.after_change(i, before)
    }

    fn after_change(&mut self, i: usize, before: bool) -> bool {
        let now = self.servers[i].usable();
        if now && !before {
            // A server coming back joins at the current timeline position (fwrr_queue_srv).
            self.servers[i].pos = self.now_pos;
        }
        self.rebuild_map();
        now != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u16], balance: Balance) -> Pool {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| ServerConfig {
                addr: SocketAddr::new(format!("2001:db8:1:0:2::{}", i + 1).parse().unwrap(), 88),
                weight: *w,
                agent_port: Some(5555),
            })
            .collect();
        Pool::new(servers, balance, CheckConfig::default())
    }

    fn c() -> IpAddr {
        "203.0.113.1".parse().unwrap()
    }

    #[test]
    fn roundrobin_is_smooth_and_weighted() {
        let mut p = pool(&[1, 1, 1], Balance::RoundRobin);
        let seq: Vec<_> = (0..6).map(|_| p.pick(c()).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        let mut p = pool(&[3, 1], Balance::RoundRobin);
        let seq: Vec<_> = (0..8).map(|_| p.pick(c()).unwrap()).collect();
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 6);
        // Smooth: the weight-1 server is never starved for more than 3 picks in a row.
        assert!(seq.windows(4).all(|w| w.contains(&1)), "{seq:?}");
    }

    #[test]
    fn drain_takes_no_new_connections_but_keeps_counts() {
        let mut p = pool(&[1, 1], Balance::RoundRobin);
        assert_eq!(p.pick(c()), Some(0));
        assert!(p.apply_agent(0, &[AgentWord::Drain]));
        assert_eq!(p.servers()[0].conns, 1, "existing connection continues");
        assert!((0..5).all(|_| p.pick(c()) == Some(1)));
        assert!(p.apply_agent(0, &[AgentWord::Ready]));
        assert!((0..4).any(|_| p.pick(c()) == Some(0)));
        assert!(p.apply_agent(1, &[AgentWord::Maint]));
        assert!(!p.apply_agent(1, &[AgentWord::Up]), "maint wins over up");
        assert!(p.apply_agent(1, &[AgentWord::Ready]));
        assert!(p.apply_agent(1, &[AgentWord::Weight(0)]));
        assert!(p.apply_agent(1, &[AgentWord::Weight(50)]));
        assert_eq!(p.servers()[1].weight, 1, "50% of weight 1 rounds up to 1");
        assert!(p.apply_agent(1, &[AgentWord::Down]));
        assert_eq!(p.usable(), 1);
    }

    #[test]
    fn health_counter_follows_haproxy() {
        let mut p = pool(&[1], Balance::RoundRobin);
        // Start: up with health = rise; the first failure takes it down.
        assert!(p.check_result(0, false));
        assert!(!p.servers()[0].up);
        assert!(
            !p.check_result(0, true),
            "one success is not enough (rise 2)"
        );
        assert!(p.check_result(0, true));
        // Fully healthy after fall - 1 more successes; then it takes 3 failures.
        p.check_result(0, true);
        p.check_result(0, true);
        assert_eq!(p.servers()[0].health, 4);
        assert!(!p.check_result(0, false));
        assert!(!p.check_result(0, false));
        assert!(p.check_result(0, false), "third failure (fall 3)");
        assert_eq!(p.usable(), 0);
        assert_eq!(p.pick(c()), None);
    }

    #[test]
    fn leastconn_prefers_idle_servers() {
        let mut p = pool(&[1, 1, 1], Balance::LeastConn);
        let a = p.pick(c()).unwrap();
        let b = p.pick(c()).unwrap();
        let d = p.pick(c()).unwrap();
        let mut v = vec![a, b, d];
        v.sort();
        assert_eq!(v, [0, 1, 2]);
        p.release(1);
        assert_eq!(p.pick(c()), Some(1));
    }

    #[test]
    fn source_hash_is_address_modulo_weight_map() {
        let mut p = pool(&[1, 1, 1], Balance::Source);
        for last in 1..=20u8 {
            let a = IpAddr::from([203, 0, 113, last]);
            let h = u32::from_be_bytes([203, 0, 113, last]);
            assert_eq!(p.pick(a), Some(h as usize % 3));
            assert_eq!(p.pick(a), p.pick(a), "same source, same server");
        }
        let mut p = pool(&[2, 1], Balance::Source);
        assert_eq!(p.map, vec![0, 1, 0]);
        p.apply_agent(0, &[AgentWord::Down]);
        assert_eq!(p.map, vec![1]);
    }
}
