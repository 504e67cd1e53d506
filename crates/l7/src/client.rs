//! The client host: the lab's workload. Many source addresses; `parallel` connections at all
//! times, each from a random source address and port to a random VIP, sending `GET /SIZE`
//! and reading the answer slowly (a read of `read_size` bytes, then a think time drawn in
//! `[0, think_max]`, with a `stop_probability` chance to stop after each read); a read that
//! gets nothing for `read_timeout` fails the connection; a new connection starts as soon as
//! one ends. Every connection's outcome is recorded exactly once ([`ConnRecord`]).
//!
//! Randomness comes from the caller (`&mut impl Rng`, a [`tierlab_wire::SimRng`] in a run);
//! the TCP state machines themselves draw nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};

use foldhash::fast::FixedState;
use rand::Rng;
use tierlab_wire::view::IpView;
use tierlab_wire::{Duration, Instant, IpProto, Packet, Verify};

use crate::http;
use crate::stack::{CloseCause, ConnId, StackError, TcpEvent, TcpStack, icmp_hard_error};

/// The workload parameters (defaults: the lab's Python client).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Source addresses (the lab: 203.0.113.1–200).
    pub sources: Vec<IpAddr>,
    /// Destinations (VIP, port).
    pub vips: Vec<SocketAddr>,
    /// Connections open at all times (the lab: 200).
    pub parallel: usize,
    /// Object size requested, bytes.
    pub object_size: u64,
    /// Bytes asked for by each read.
    pub read_size: usize,
    /// Longest think time between reads (the lab: 500 ms; the other version 5 s).
    pub think_max: Duration,
    /// Chance to stop after each read (the lab: 5 %).
    pub stop_probability: f64,
    /// Application timeout of a connect or a read (the lab: 2 s).
    pub read_timeout: Duration,
    /// Stop opening connections after this many (None: forever).
    pub max_connections: Option<u64>,
    /// Share of connections to IPv6 VIPs (each connection draws its family, then a VIP of
    /// that family uniformly); `None`: a VIP uniformly among all of them.
    #[serde(default)]
    pub ipv6_share: Option<f64>,
}

impl ClientConfig {
    /// The lab's client: 200 sources 203.0.113.1–200, VIPs 198.51.100.1–4 port 80, 200
    /// parallel connections, 10 MB objects, 16 KiB reads every 0–500 ms, 5 % stop chance,
    /// 2 s timeout.
    pub fn lab() -> Self {
        Self {
            sources: (1..=200u8)
                .map(|k| IpAddr::from([203, 0, 113, k]))
                .collect(),
            vips: (1..=4u8)
                .map(|k| SocketAddr::new(IpAddr::from([198, 51, 100, k]), 80))
                .collect(),
            parallel: 200,
            object_size: 10_000_000,
            read_size: 16_384,
            think_max: Duration::from_millis(500),
            stop_probability: 0.05,
            read_timeout: Duration::from_secs(2),
            max_connections: None,
            ipv6_share: None,
        }
    }
}

/// How a client connection ended.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, serde::Serialize)]
pub enum Outcome {
    /// The whole object arrived intact.
    Completed,
    /// The client chose to stop reading (the 5 % draw).
    Stopped,
    /// A RST ended it; `by` is the origin tag of the packet that carried it (the node that
    /// sent it, as the caller labels nodes), `None` if it was refused before any tag.
    Reset {
        /// Origin tag.
        by: Option<u32>,
    },
    /// An ICMP error ended the connection attempt (a director with no destination for the
    /// flow answers port unreachable: the application's connect fails with ECONNREFUSED);
    /// `by` is the origin tag of the packet that carried it.
    Refused {
        /// Origin tag.
        by: Option<u32>,
    },
    /// A connect or read got nothing for the read timeout, or TCP gave up retransmitting.
    TimedOut,
    /// The server closed before the whole object arrived.
    Truncated,
    /// A status other than 200.
    HttpError(u16),
    /// Body bytes differed from the expected pattern.
    Corrupt,
}

/// The record of one client connection.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Serialize)]
pub struct ConnRecord {
    /// Source address and port.
    pub src: SocketAddr,
    /// VIP and port.
    pub vip: SocketAddr,
    /// When it was opened.
    pub started: Instant,
    /// When its outcome was decided.
    pub ended: Instant,
    /// Body bytes read.
    pub bytes: u64,
    /// Outcome.
    pub outcome: Outcome,
}

#[derive(Debug)]
struct Conn {
    src: SocketAddr,
    vip: SocketAddr,
    started: Instant,
    head: Vec<u8>,
    body_len: Option<u64>,
    got: u64,
    connected: bool,
    /// A read is blocked waiting for data (deadline = `deadline`).
    waiting: bool,
    deadline: Instant,
    epoch: u32,
}

/// A destination among `vips`: with `ipv6_share`, the family first (IPv6 with that
/// probability, when both families are there), then an address of that family uniformly;
/// without, uniformly among all.
pub fn pick_vip<T: Copy + Into<SocketAddr>>(
    vips: &[T],
    ipv6_share: Option<f64>,
    rng: &mut (impl Rng + ?Sized),
) -> T {
    if let Some(share) = ipv6_share {
        let is_v6 = |v: &&T| (**v).into().is_ipv6();
        let n6 = vips.iter().filter(is_v6).count();
        let n4 = vips.len() - n6;
        if n6 > 0 && n4 > 0 {
            let want_v6 = rng.random::<f64>() < share;
            let k = rng.random_range(0..if want_v6 { n6 } else { n4 });
            // The k-th address of the family, in the order of `vips`.
            if let Some(v) = vips.iter().filter(|v| is_v6(v) == want_v6).nth(k) {
                return *v;
            }
        }
    }
    vips[rng.random_range(0..vips.len())]
}

/// Picks the destination of each new connection in place of a uniformly random VIP (e.g. a
/// name resolved through a DNS cache).
pub trait Destinations: core::fmt::Debug {
    /// The destination of a connection opened at `now`, or `None` to open nothing now.
    fn pick(&mut self, now: Instant, rng: &mut dyn rand::RngCore) -> Option<SocketAddr>;
}

impl Conn {
    /// Parses head and body bytes; returns an outcome if they end the connection.
    fn consume(&mut self, mut data: &[u8]) -> Option<Outcome> {
        if self.body_len.is_none() {
            let before = self.head.len();
            self.head.extend_from_slice(data);
            let end = http::head_end(&self.head)?;
            let Ok((status, len)) = http::parse_response_head(&self.head[..end]) else {
                return Some(Outcome::HttpError(0));
            };
            if status != 200 {
                return Some(Outcome::HttpError(status));
            }
            self.body_len = Some(len.unwrap_or(u64::MAX));
            data = &data[end - before..];
            self.head = Vec::new();
        }
        if !http::check_body(data, self.got) {
            return Some(Outcome::Corrupt);
        }
        self.got += data.len() as u64;
        None
    }
}

/// The client host over a TCP stack `S`.
#[derive(Debug)]
pub struct ClientHost<S: TcpStack> {
    cfg: ClientConfig,
    destinations: Option<Box<dyn Destinations>>,
    stack: S,
    conns: HashMap<ConnId, Conn, FixedState>,
    timers: BinaryHeap<Reverse<(Instant, ConnId, u32)>>,
    records: Vec<ConnRecord>,
    opened: u64,
    origin: Option<u32>,
}

const PORT_LO: u16 = 32_768;
const PORT_HI: u16 = 60_999;

impl<S: TcpStack> ClientHost<S> {
    /// A client host with its source addresses added to `stack`.
    pub fn new(cfg: ClientConfig, mut stack: S) -> Self {
        for a in &cfg.sources {
            stack.add_address(*a);
        }
        Self {
            cfg,
            destinations: None,
            stack,
            conns: HashMap::default(),
            timers: BinaryHeap::new(),
            records: Vec::new(),
            opened: 0,
            origin: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// New connections go where `d` says instead of to a random VIP of the configuration.
    pub fn set_destinations(&mut self, d: Box<dyn Destinations>) {
        self.destinations = Some(d);
    }

    /// The TCP stack.
    pub fn stack(&self) -> &S {
        &self.stack
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// The connections open now: (source, destination, when opened), in no particular order.
    pub fn open_connections(&self) -> impl Iterator<Item = (SocketAddr, SocketAddr, Instant)> + '_ {
        self.conns.values().map(|c| (c.src, c.vip, c.started))
    }

    /// Outcomes recorded so far (drained).
    pub fn take_records(&mut self) -> Vec<ConnRecord> {
        std::mem::take(&mut self.records)
    }

    /// Outcomes recorded so far.
    pub fn records(&self) -> &[ConnRecord] {
        &self.records
    }

    /// Opens connections until `parallel` are open (or `max_connections` is reached).
    pub fn fill(&mut self, now: Instant, rng: &mut impl Rng) {
        while self.conns.len() < self.cfg.parallel
            && self.cfg.max_connections.is_none_or(|m| self.opened < m)
            && !self.cfg.sources.is_empty()
            && !self.cfg.vips.is_empty()
        {
            if self.open_one(now, rng).is_err() {
                break;
            }
        }
    }

    /// Opens one connection from a random source address and port to a random VIP.
    ///
    /// # Errors
    /// No free port was found in 64 draws, or the stack refused.
    pub fn open_one(&mut self, now: Instant, rng: &mut impl Rng) -> Result<ConnId, StackError> {
        let vip = match &mut self.destinations {
            Some(d) => d.pick(now, rng).ok_or(StackError::NoDestination)?,
            None => pick_vip(&self.cfg.vips, self.cfg.ipv6_share, rng),
        };
        let same_family = |a: &&IpAddr| a.is_ipv4() == vip.is_ipv4();
        let n = self.cfg.sources.iter().filter(same_family).count();
        let k = rng.random_range(0..n.max(1));
        let Some(&src_ip) = self.cfg.sources.iter().filter(same_family).nth(k) else {
            return Err(StackError::MixedFamilies {
                local: SocketAddr::new(self.cfg.sources[0], 0),
                remote: vip,
            });
        };
        let mut last = None;
        for _ in 0..64 {
            let src = SocketAddr::new(src_ip, rng.random_range(PORT_LO..=PORT_HI));
            match self.stack.connect(now, src, vip) {
                Ok(id) => {
                    self.opened += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            src,
                            vip,
                            started: now,
                            head: Vec::new(),
                            body_len: None,
                            got: 0,
                            connected: false,
                            waiting: true,
                            deadline: now + self.cfg.read_timeout,
                            epoch: 0,
                        },
                    );
                    self.timers
                        .push(Reverse((now + self.cfg.read_timeout, id, 0)));
                    return Ok(id);
                }
                Err(e @ StackError::AddrInUse { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StackError::Smoltcp("no port")))
    }

    /// Takes a packet addressed to the client; `from` tags the node that sent it (used to
    /// say who reset a connection).
    ///
    /// # Errors
    /// The stack refuses the packet.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: u32,
        packet: &[u8],
        rng: &mut impl Rng,
    ) -> Result<(), StackError> {
        self.origin = Some(from);
        // An ICMP error for one of our connections goes to its TCP (a connection still
        // connecting fails at once, as on Linux); anything else, an error for no connection
        // included, to the stack's packet path.
        let icmp = IpView::new_checked(packet, false)
            .is_ok_and(|v| matches!(v.proto(), IpProto::Icmp | IpProto::Icmpv6));
        let taken = icmp
            && Packet::parse_with(packet, Verify::All)
                .ok()
                .and_then(|p| icmp_hard_error(&p))
                .is_some_and(|(local, remote, seq)| {
                    self.stack.icmp_unreachable(now, local, remote, seq)
                });
        let r = if taken {
            Ok(())
        } else {
            self.stack.handle_packet(now, packet)
        };
        self.process(now, rng);
        self.origin = None;
        r
    }

    /// Runs timers due at `now` (reads, timeouts, the stack's timers).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl Rng) {
        self.stack.handle_timeout(now);
        self.process(now, rng);
        while let Some(&Reverse((at, id, epoch))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.epoch != epoch {
                continue;
            }
            if c.waiting {
                if c.deadline <= now {
                    self.finish(now, id, Outcome::TimedOut);
                }
            } else {
                // Think time over: read.
                c.waiting = true;
                c.deadline = now + self.cfg.read_timeout;
                c.epoch += 1;
                let e = c.epoch;
                self.timers.push(Reverse((c.deadline, id, e)));
                self.try_read(now, id, rng);
            }
            self.process(now, rng);
        }
        self.fill(now, rng);
    }

    /// The next instant [`ClientHost::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.stack.poll_timeout();
        let b = self.timers.peek().map(|Reverse((t, _, _))| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stack.poll_transmit()
    }

    fn process(&mut self, now: Instant, rng: &mut impl Rng) {
        while let Some(ev) = self.stack.poll_event() {
            match ev {
                TcpEvent::Connected { id } => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.connected = true;
                        let req = http::get_request(self.cfg.object_size, c.vip.ip());
                        let _ = self.stack.send(now, id, req.as_bytes());
                        // The first read starts now and blocks until data or timeout.
                        c.waiting = true;
                        c.deadline = now + self.cfg.read_timeout;
                        c.epoch += 1;
                        self.timers.push(Reverse((c.deadline, id, c.epoch)));
                    }
                }
                TcpEvent::Readable { id } | TcpEvent::PeerClosed { id } => {
                    if self
                        .conns
                        .get(&id)
                        .is_some_and(|c| c.waiting && c.connected)
                    {
                        self.try_read(now, id, rng);
                    }
                }
                TcpEvent::Closed { id, cause } => {
                    if self.conns.contains_key(&id) {
                        let o = match cause {
                            CloseCause::Reset => Outcome::Reset { by: self.origin },
                            CloseCause::TimedOut => Outcome::TimedOut,
                            CloseCause::Normal | CloseCause::Aborted => Outcome::Truncated,
                            CloseCause::Unreachable => Outcome::Refused { by: self.origin },
                        };
                        self.record(now, id, o);
                    }
                }
                TcpEvent::Writable { .. }
                | TcpEvent::Accepted { .. }
                | TcpEvent::ResetSent { .. } => {}
            }
        }
        self.fill(now, rng);
    }

    /// A blocked read with data (or EOF) available completes.
    fn try_read(&mut self, now: Instant, id: ConnId, rng: &mut impl Rng) {
        let avail = self.stack.recv_queue(id);
        let eof = self.stack.peer_closed(id);
        if avail == 0 && !eof {
            return; // still blocked
        }
        // The bytes are checked where the stack holds them (no copy); a connection the
        // client no longer tracks has its bytes read and dropped.
        let mut outcome = None;
        let mut conn = self.conns.get_mut(&id);
        let mut check = |piece: &[u8]| {
            if let Some(c) = conn.as_deref_mut()
                && outcome.is_none()
            {
                outcome = c.consume(piece);
            }
        };
        let _ = self
            .stack
            .recv_with(now, id, self.cfg.read_size, &mut check);
        if let Some(o) = outcome {
            return self.finish(now, id, o);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if avail == 0 && eof {
            let o = if c.body_len.is_some_and(|l| c.got >= l) {
                Outcome::Completed
            } else {
                Outcome::Truncated
            };
            return self.finish(now, id, o);
        }
        if c.body_len.is_some_and(|l| c.got >= l) {
            return self.finish(now, id, Outcome::Completed);
        }
        if rng.random_bool(self.cfg.stop_probability.clamp(0.0, 1.0)) {
            return self.finish(now, id, Outcome::Stopped);
        }
        let think = rng.random_range(0..=self.cfg.think_max.as_nanos());
        c.waiting = false;
        c.epoch += 1;
        self.timers
            .push(Reverse((now + Duration::from_nanos(think), id, c.epoch)));
    }

    /// Ends a connection by the client's decision: records the outcome and closes the
    /// socket as Linux `close()` would (a RST if unread data remains, a FIN otherwise).
    fn finish(&mut self, now: Instant, id: ConnId, outcome: Outcome) {
        if self.stack.recv_queue(id) > 0 {
            let _ = self.stack.abort(now, id);
        } else {
            let _ = self.stack.close(now, id);
        }
        self.record(now, id, outcome);
    }

    fn record(&mut self, now: Instant, id: ConnId, outcome: Outcome) {
        if let Some(c) = self.conns.remove(&id) {
            self.records.push(ConnRecord {
                src: c.src,
                vip: c.vip,
                started: c.started,
                ended: now,
                bytes: c.got,
                outcome,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_vip_honours_the_ipv6_share() {
        let vips: Vec<SocketAddr> = vec![
            "198.51.100.1:80".parse().unwrap(),
            "198.51.100.2:80".parse().unwrap(),
            "198.51.100.3:80".parse().unwrap(),
            "[2001:db8::c633:6401]:80".parse().unwrap(),
        ];
        let mut rng = tierlab_wire::rng::seeded(5);
        for share in [0.0, 0.25, 0.9, 1.0] {
            let n = 20_000;
            let v6 = (0..n)
                .filter(|_| pick_vip(&vips, Some(share), &mut rng).is_ipv6())
                .count() as f64
                / f64::from(n);
            assert!((v6 - share).abs() < 0.015, "share {share}: {v6}");
        }
        // Without a share: uniform over the four, so a quarter IPv6.
        let v6 = (0..20_000)
            .filter(|_| pick_vip(&vips, None, &mut rng).is_ipv6())
            .count() as f64
            / 20_000.0;
        assert!((v6 - 0.25).abs() < 0.015, "{v6}");
    }
}
