//! A small, self-contained network for tests, benches and examples: one client host, an
//! IPVS-like director (a flow table, IPIP encapsulation), proxies and backends, joined by
//! direct links of a fixed one-way delay. Replies from proxies go straight to the client
//! (direct return). It is deliberately tiny — the simulator's real engine is `tierlab-net` —
//! but it carries every packet as bytes and can tap them into a pcap.
//!
//! Nodes are tagged for [`crate::client::Outcome::Reset`]: the director is
//! [`DIRECTOR_TAG`], proxy `i` is [`Testbed::proxy_tag`]`(i)`, backend `j`
//! [`Testbed::backend_tag`]`(j)`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;

use rand::Rng;
use tierlab_ipip::{EncapParams, encapsulate};
use tierlab_wire::pcap::PcapWriter;
use tierlab_wire::{Duration, FlowKey, Instant, Packet, SimRng, Verify};

use crate::backend::{BackendConfig, BackendServer};
use crate::client::{ClientConfig, ClientHost};
use crate::http;
use crate::proxy::{Proxy, ProxyConfig};
use crate::scripted::{ScriptedConfig, ScriptedStack};
use crate::stack::{ConnId, StackError, TcpEvent, TcpStack};

/// Origin tag of the client host.
pub const CLIENT_TAG: u32 = 0;
/// Origin tag of the director.
pub const DIRECTOR_TAG: u32 = 1;

#[derive(Clone, Copy, Debug, Eq, Ord, PartialEq, PartialOrd)]
enum Node {
    Client,
    Director,
    Checker,
    Proxy(usize),
    Backend(usize),
}

/// Counters of a testbed run.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct LinkStats {
    /// Packets delivered to a node.
    pub delivered: u64,
    /// Packets with no node to go to.
    pub unroutable: u64,
    /// Packets a node refused (parse errors, not TCP...).
    pub refused: u64,
}

/// The testbed (see the module documentation).
#[derive(Debug)]
pub struct Testbed<S: TcpStack> {
    /// The client host.
    pub client: ClientHost<S>,
    /// The proxies.
    pub proxies: Vec<Proxy<S>>,
    /// The backends.
    pub backends: Vec<BackendServer<S>>,
    /// The director's connection table: client flow → proxy index.
    pub flows: BTreeMap<FlowKey, usize>,
    /// Proxies new flows may be scheduled on (the director's destinations).
    pub active: Vec<usize>,
    director_addr: IpAddr,
    latency: Duration,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: BTreeMap<u64, (Node, u32, Vec<u8>)>,
    rng: SimRng,
    pcap: Option<PcapWriter<Vec<u8>>>,
    stats: LinkStats,
    ident: u16,
    checker: ScriptedStack,
    probes: BTreeMap<ConnId, (usize, Vec<u8>)>,
    monitor: Vec<(usize, Instant, u16)>,
}

impl<S: TcpStack> Testbed<S> {
    /// A testbed with `proxies` lab proxies (1-based numbering as [`ProxyConfig::lab`]),
    /// `backends` lab backends, the given client, a one-way delay per hop, a seed for the
    /// workload, and `make` building each host's stack.
    ///
    /// # Errors
    /// A stack refuses a listen.
    pub fn new(
        proxies: u8,
        backends: u8,
        client: ClientConfig,
        latency: Duration,
        seed: u64,
        mut make: impl FnMut() -> S,
        mut tweak_proxy: impl FnMut(&mut ProxyConfig),
    ) -> Result<Self, StackError> {
        let client = ClientHost::new(client, make());
        let proxies = (1..=proxies)
            .map(|n| {
                let mut cfg = ProxyConfig::lab(n, backends);
                tweak_proxy(&mut cfg);
                Proxy::new(cfg, make())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let backends = (1..=backends)
            .map(|n| BackendServer::new(BackendConfig::lab(n), make()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            client,
            active: (0..proxies.len()).collect(),
            proxies,
            backends,
            flows: BTreeMap::new(),
            director_addr: IpAddr::from([192, 0, 2, 4]),
            latency,
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            rng: tierlab_wire::rng::seeded(seed),
            pcap: None,
            stats: LinkStats::default(),
            ident: 0,
            checker: {
                let mut c = ScriptedStack::new(ScriptedConfig::default());
                c.add_address(IpAddr::from([192, 0, 2, 4]));
                c
            },
            probes: BTreeMap::new(),
            monitor: Vec::new(),
        })
    }

    /// Origin tag of proxy `i` (0-based).
    pub const fn proxy_tag(i: usize) -> u32 {
        100 + i as u32
    }

    /// Origin tag of backend `j` (0-based).
    pub const fn backend_tag(j: usize) -> u32 {
        1000 + j as u32
    }

    /// Starts capturing every packet sent (outer packets as they leave each node).
    ///
    /// # Errors
    /// Never in practice (writing to memory).
    pub fn capture(&mut self) -> Result<(), tierlab_wire::WireError> {
        self.pcap = Some(PcapWriter::new(Vec::new())?);
        Ok(())
    }

    /// The capture so far, as a pcap file.
    ///
    /// # Errors
    /// Never in practice.
    pub fn take_pcap(&mut self) -> Result<Option<Vec<u8>>, tierlab_wire::WireError> {
        self.pcap.take().map(PcapWriter::finish).transpose()
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Link counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The workload generator.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Opens the client's connections (up to its `parallel`).
    pub fn start(&mut self) {
        let now = self.now;
        self.client.fill(now, &mut self.rng);
        self.collect();
    }

    /// Starts a director-style health check of proxy `i`: `GET /healthcheck` to its tunnel
    /// address, port 80, from the director's address (as keepalived does). The status code
    /// lands in [`Testbed::monitor_results`].
    ///
    /// # Errors
    /// The checker's stack refuses the connection (port in use).
    pub fn probe_monitor(&mut self, i: usize) -> Result<(), StackError> {
        let to = std::net::SocketAddr::new(self.proxies[i].config().tunnel_addr, 80);
        let from = std::net::SocketAddr::new(
            self.director_addr,
            40_000 + self.probes.len() as u16 + self.monitor.len() as u16,
        );
        let id = self.checker.connect(self.now, from, to)?;
        self.probes.insert(id, (i, Vec::new()));
        self.collect();
        Ok(())
    }

    /// Health-check answers so far: (proxy index, when, HTTP status; 0 if the connection
    /// failed).
    pub fn monitor_results(&self) -> &[(usize, Instant, u16)] {
        &self.monitor
    }

    fn checker_events(&mut self) {
        let now = self.now;
        while let Some(ev) = self.checker.poll_event() {
            match ev {
                TcpEvent::Connected { id } => {
                    let req = b"GET /healthcheck HTTP/1.0\r\nHost: lb7\r\n\r\n";
                    let _ = self.checker.send(now, id, req);
                }
                TcpEvent::Readable { id } | TcpEvent::PeerClosed { id } => {
                    let n = self.checker.recv_queue(id);
                    if let Some((_, buf)) = self.probes.get_mut(&id) {
                        let _ = self.checker.recv(now, id, buf, n);
                    }
                    if self.checker.peer_closed(id) {
                        let _ = self.checker.close(now, id);
                    }
                }
                TcpEvent::Closed { id, .. } => {
                    if let Some((i, buf)) = self.probes.remove(&id) {
                        let status = http::head_end(&buf)
                            .and_then(|e| http::parse_response_head(&buf[..e]).ok())
                            .map_or(0, |(s, _)| s);
                        self.monitor.push((i, now, status));
                    }
                }
                _ => {}
            }
        }
    }

    fn route(&self, packet: &[u8]) -> Option<Node> {
        let dst = Packet::parse_with(packet, Verify::Nothing).ok()?.dst();
        if dst == self.director_addr {
            return Some(Node::Checker);
        }
        if self.client.config().sources.contains(&dst) {
            return Some(Node::Client);
        }
        if let Some(i) = self
            .proxies
            .iter()
            .position(|p| p.config().tunnel_addr == dst || p.config().backend_addr == dst)
        {
            return Some(Node::Proxy(i));
        }
        if self
            .proxies
            .first()
            .is_some_and(|p| p.config().vips.contains(&dst))
        {
            return Some(Node::Director);
        }
        self.backends
            .iter()
            .position(|b| b.config().addr == dst)
            .map(Node::Backend)
    }

    fn send(&mut self, from: u32, packet: Vec<u8>) {
        if let Some(w) = self.pcap.as_mut() {
            let _ = w.write_packet(self.now, &packet);
        }
        let Some(to) = self.route(&packet) else {
            self.stats.unroutable += 1;
            return;
        };
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + self.latency, self.seq)));
        self.in_flight.insert(self.seq, (to, from, packet));
    }

    /// Collects every packet every node has to send.
    fn collect(&mut self) {
        self.checker_events();
        while let Some(p) = self.checker.poll_transmit() {
            self.send(DIRECTOR_TAG, p);
        }
        while let Some(p) = self.client.poll_transmit() {
            self.send(CLIENT_TAG, p);
        }
        for i in 0..self.proxies.len() {
            while let Some(p) = self.proxies[i].poll_transmit() {
                self.send(Self::proxy_tag(i), p);
            }
        }
        for j in 0..self.backends.len() {
            while let Some(p) = self.backends[j].poll_transmit() {
                self.send(Self::backend_tag(j), p);
            }
        }
    }

    /// The proxy the director sends this client flow to (scheduling it if new: a hash of
    /// the flow over the active proxies).
    fn schedule(&mut self, flow: FlowKey) -> Option<usize> {
        if let Some(&p) = self.flows.get(&flow) {
            return Some(p);
        }
        if self.active.is_empty() {
            return None;
        }
        let h = u64::from(flow.sport()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ match flow.src() {
                IpAddr::V4(a) => u64::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a) as u64,
            };
        let p = self.active[(h % self.active.len() as u64) as usize];
        self.flows.insert(flow, p);
        Some(p)
    }

    fn deliver(&mut self, to: Node, from: u32, packet: &[u8]) {
        let now = self.now;
        self.stats.delivered += 1;
        match to {
            Node::Client => {
                if self
                    .client
                    .handle_packet(now, from, packet, &mut self.rng)
                    .is_err()
                {
                    self.stats.refused += 1;
                }
            }
            Node::Director => {
                let Ok(p) = Packet::parse_with(packet, Verify::Nothing) else {
                    self.stats.refused += 1;
                    return;
                };
                let Some(i) = self.schedule(p.flow_key()) else {
                    self.stats.refused += 1;
                    return;
                };
                self.ident = self.ident.wrapping_add(1);
                let params = EncapParams::ipvs(
                    self.director_addr,
                    self.proxies[i].config().tunnel_addr,
                    false,
                    self.ident,
                );
                match encapsulate(packet, &params) {
                    Ok(outer) => self.send(DIRECTOR_TAG, outer),
                    Err(_) => self.stats.refused += 1,
                }
            }
            Node::Proxy(i) => self.proxies[i].handle_packet(now, packet),
            Node::Checker => {
                if self.checker.handle_packet(now, packet).is_err() {
                    self.stats.refused += 1;
                }
                self.checker_events();
            }
            Node::Backend(j) => {
                if self.backends[j].handle_packet(now, packet).is_err() {
                    self.stats.refused += 1;
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut t = self.client.poll_timeout();
        if let Some(c) = self.checker.poll_timeout() {
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for p in &self.proxies {
            min(p.poll_timeout());
        }
        for b in &self.backends {
            min(b.poll_timeout());
        }
        t
    }

    /// Runs the network until virtual time `until` (inclusive), delivering packets and firing
    /// timers in time order. Returns the number of steps taken.
    pub fn run_until(&mut self, until: Instant) -> u64 {
        let mut steps = 0;
        loop {
            self.collect();
            let pkt_at = self.queue.peek().map(|Reverse((t, _))| *t);
            let timer_at = self.next_timer();
            let next = match (pkt_at, timer_at) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            steps += 1;
            if pkt_at == Some(next) {
                let Some(Reverse((_, seq))) = self.queue.pop() else {
                    break;
                };
                if let Some((to, from, p)) = self.in_flight.remove(&seq) {
                    self.deliver(to, from, &p);
                }
                continue;
            }
            let now = self.now;
            if self.checker.poll_timeout().is_some_and(|t| t <= now) {
                self.checker.handle_timeout(now);
                self.checker_events();
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now, &mut self.rng);
            }
            for p in &mut self.proxies {
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now);
                }
            }
            for b in &mut self.backends {
                if b.poll_timeout().is_some_and(|t| t <= now) {
                    b.handle_timeout(now);
                }
            }
        }
        self.now = self.now.max(until);
        steps
    }

    /// Injects a packet as if `from` had sent it now (tests: a stray segment).
    pub fn inject(&mut self, from: u32, packet: Vec<u8>) {
        self.send(from, packet);
    }

    /// Draws from the workload generator (examples).
    pub fn draw(&mut self, upto: u64) -> u64 {
        self.rng.random_range(0..upto.max(1))
    }
}
