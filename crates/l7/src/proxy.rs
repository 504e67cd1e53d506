//! The proxy node: an HAProxy-like stateful L7 proxy behind IPIP tunnels.
//!
//! Packets in ([`Proxy::handle_packet`]): IPIP from the directors (outer destination = the
//! proxy's tunnel address, inner destination = a VIP bound on the tunnel; outer fragments are
//! reassembled first), plain packets from the backends (to the proxy's backend-side address),
//! and plain packets to the tunnel address itself (the directors' health checks). Packets out
//! ([`Proxy::poll_transmit`]): straight to the client with source = VIP (direct server
//! return: never back through a director), and to the backends.
//!
//! For each client connection the proxy reads the request head (HTTP mode, as `monitor-uri`
//! requires), answers `monitor-uri` itself, otherwise picks a server ([`Pool`]), connects,
//! writes the PROXY v1 header (`send-proxy`) and the request, then relays bytes both ways,
//! forwarding each half-close. A client reset aborts the server side; a server connection
//! that dies closes the client connection (HAProxy's behaviour). A segment of a connection
//! the proxy does not know gets a RST from the TCP layer itself (the stack), and the proxy
//! reports it ([`ProxyEvent::ResetSent`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use tierlab_ipip::{DecapError, TunnelEndpoint};
use tierlab_wire::frag::{Reassembler, Reassembly};
use tierlab_wire::icmp::quoted_flow;
use tierlab_wire::{
    Duration, Icmpv4Repr, Icmpv6Repr, Instant, IpProto, IpView, Packet, Transport, Verify,
};

use crate::http::{self, AgentWord};
use crate::pool::{Balance, CheckConfig, Pool, ServerConfig};
use crate::stack::{CloseCause, ConnId, TcpEvent, TcpStack, icmp_hard_error};

/// Configuration of a proxy (HAProxy's defaults where HAProxy has one).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The tunnel's local (outer) address, where the directors send IPIP and health checks.
    pub tunnel_addr: IpAddr,
    /// A second tunnel address of the other family (an `ip6tnl` next to the `ipip` device),
    /// for directors that tunnel IPv6 VIPs over IPv6.
    #[serde(default)]
    pub tunnel_addr_v6: Option<IpAddr>,
    /// VIPs bound on the tunnel.
    pub vips: Vec<IpAddr>,
    /// Frontend port (the lab: 80).
    pub port: u16,
    /// The proxy's own address toward the backends (the lab's backends are IPv6-only).
    pub backend_addr: IpAddr,
    /// MTU of the proxy's links.
    pub mtu: u16,
    /// The servers (`server ... send-proxy check agent-check agent-port 5555`).
    pub servers: Vec<ServerConfig>,
    /// `balance`.
    pub balance: Balance,
    /// `check inter rise fall`.
    pub check: CheckConfig,
    /// `agent-inter` (HAProxy default: `inter`).
    pub agent_inter: Duration,
    /// Delay before the first checks (HAProxy spreads checks over the interval; the caller
    /// chooses the phase).
    pub check_phase: Duration,
    /// `monitor-uri` (the lab: `/healthcheck`).
    pub monitor_uri: String,
    /// `send-proxy`: write a PROXY v1 header first on every server connection.
    pub send_proxy: bool,
    /// `timeout connect` (a server connection not established by then gives a 503).
    pub timeout_connect: Duration,
    /// Largest request head accepted (HAProxy `tune.bufsize`, 16,384); beyond, a 400.
    pub max_head: usize,
}

impl ProxyConfig {
    /// The lab's proxy `n` (1-based): tunnel address 192.0.2.(100+n), backend side
    /// 2001:db8:1:0:1::n, VIPs 198.51.100.1–4 and 2001:db8::198.51.100.1–4, servers
    /// `[2001:db8:1:0:2::1..=backends]:88` with agent port 5555, `balance roundrobin`.
    pub fn lab(n: u8, backends: u8) -> Self {
        let mut vips: Vec<IpAddr> = (1..=4u8).map(|k| IpAddr::from([198, 51, 100, k])).collect();
        vips.extend(
            (1..=4u16).map(|k| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0xc633, 0x6400 + k])),
        );
        Self {
            tunnel_addr: IpAddr::from([192, 0, 2, 100u8.saturating_add(n)]),
            tunnel_addr_v6: None,
            vips,
            port: 80,
            backend_addr: IpAddr::from([0x2001, 0xdb8, 1, 0, 1, 0, 0, u16::from(n)]),
            mtu: 1500,
            servers: (1..=backends)
                .map(|b| ServerConfig {
                    addr: SocketAddr::new(
                        IpAddr::from([0x2001, 0xdb8, 1, 0, 2, 0, 0, u16::from(b)]),
                        88,
                    ),
                    weight: 1,
                    agent_port: Some(5555),
                })
                .collect(),
            balance: Balance::RoundRobin,
            check: CheckConfig::default(),
            agent_inter: Duration::from_secs(2),
            check_phase: Duration::ZERO,
            monitor_uri: "/healthcheck".to_owned(),
            send_proxy: true,
            timeout_connect: Duration::from_secs(5),
            max_head: 16_384,
        }
    }
}

/// Why the proxy dropped a packet.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, serde::Serialize)]
pub enum DropReason {
    /// The packet (or, inside a tunnel, the inner packet) does not parse.
    Malformed,
    /// Not addressed to any address of the proxy.
    NotLocal,
    /// To the tunnel address but neither IP-in-IP nor TCP.
    NotTunnel,
    /// Tunnelled to an address that is not a VIP bound on the tunnel.
    NotAcceptedVip,
    /// Outer/inner IP versions disagree.
    FamilyMismatch,
    /// ECN CE outside, not ECN-capable inside (RFC 6040).
    EcnCe,
    /// A fragment that could not be reassembled (overlap, too long).
    Fragment,
    /// An ICMP error quoting a flow the proxy does not know.
    IcmpUnknownFlow,
    /// An ICMP message that is not an error, or whose quote does not parse.
    IcmpIgnored,
    /// Not TCP or ICMP.
    OtherProtocol,
}

impl From<&DecapError> for DropReason {
    fn from(e: &DecapError) -> Self {
        match e {
            DecapError::NotLocal { .. } => Self::NotLocal,
            DecapError::NotTunnel(_) => Self::NotTunnel,
            DecapError::NotAcceptedVip(_) => Self::NotAcceptedVip,
            DecapError::FamilyMismatch { .. } => Self::FamilyMismatch,
            DecapError::EcnCeOnNotEct => Self::EcnCe,
            DecapError::OuterFragment => Self::Fragment,
            _ => Self::Malformed,
        }
    }
}

/// How a proxied session ended.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, serde::Serialize)]
pub enum SessionEnd {
    /// Both sides closed normally.
    Completed,
    /// The client reset (or the proxy aborted it).
    ClientReset,
    /// The client connection timed out (retransmissions exhausted).
    ClientTimedOut,
    /// The server connection was reset; the client connection was closed.
    ServerReset,
    /// The server connection timed out; the client connection was closed.
    ServerTimedOut,
    /// No usable server: 503.
    NoServer,
    /// The server connection was not established in `timeout connect`: 503.
    ConnectFailed,
    /// A `monitor-uri` request was answered.
    Monitor,
    /// The request head was malformed or too long: 400.
    BadRequest,
}

/// What the proxy reports.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ProxyEvent {
    /// A client connection was accepted.
    Accepted {
        /// Client address.
        client: SocketAddr,
        /// VIP and port it connected to.
        vip: SocketAddr,
    },
    /// A session was sent to a server.
    Forwarded {
        /// Client address.
        client: SocketAddr,
        /// Server index.
        server: usize,
    },
    /// A session ended.
    SessionEnded {
        /// Client address.
        client: SocketAddr,
        /// Server index, if one was chosen.
        server: Option<usize>,
        /// How.
        end: SessionEnd,
    },
    /// The TCP layer answered a segment of an unknown connection with a RST.
    ResetSent {
        /// The local end (a VIP and port for a client segment).
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
    },
    /// An ICMP error for a known flow lowered its path MTU.
    PathMtu {
        /// Local end of the flow.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
        /// The MTU reported.
        mtu: u16,
    },
    /// A server became usable or unusable for new connections.
    ServerState {
        /// Server index.
        server: usize,
        /// Whether it is usable now.
        usable: bool,
    },
    /// A packet was dropped.
    Dropped {
        /// Why.
        reason: DropReason,
    },
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Phase {
    Head,
    Connecting,
    Relay,
    Closing,
}

#[derive(Debug)]
struct Session {
    client: ConnId,
    client_addr: SocketAddr,
    vip: SocketAddr,
    server: Option<ConnId>,
    backend: Option<usize>,
    head: Vec<u8>,
    phase: Phase,
    client_open: bool,
    server_open: bool,
    client_fin_fwd: bool,
    server_fin_fwd: bool,
    end: Option<SessionEnd>,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Role {
    Client(u32),
    Server(u32),
    Check(usize),
    Agent(usize),
}

/// What each of the stack's connections is to the proxy, indexed by the handle's slot (the
/// stacks number their connections densely) and checked against its generation: a lookup
/// per stack event without hashing.
#[derive(Debug, Default)]
struct RoleTable {
    by_slot: Vec<Option<(u32, Role)>>,
}

impl RoleTable {
    fn get(&self, id: ConnId) -> Option<Role> {
        match self.by_slot.get(id.slot as usize) {
            Some(&Some((g, role))) if g == id.generation => Some(role),
            _ => None,
        }
    }

    fn insert(&mut self, id: ConnId, role: Role) {
        let i = id.slot as usize;
        if i >= self.by_slot.len() {
            self.by_slot.resize(i + 1, None);
        }
        self.by_slot[i] = Some((id.generation, role));
    }

    fn remove(&mut self, id: ConnId) -> Option<Role> {
        let role = self.get(id)?;
        self.by_slot[id.slot as usize] = None;
        Some(role)
    }
}

#[derive(Debug, Default)]
struct CheckState {
    next_check: Instant,
    next_agent: Instant,
    check_conn: Option<(ConnId, Instant)>,
    agent_conn: Option<(ConnId, Instant, Vec<u8>)>,
}

/// An L7 proxy over a TCP stack `S` (see the module documentation).
#[derive(Debug)]
pub struct Proxy<S: TcpStack> {
    cfg: ProxyConfig,
    stack: S,
    tunnel: TunnelEndpoint,
    /// The second tunnel, when `tunnel_addr_v6` is set.
    tunnel6: Option<TunnelEndpoint>,
    reasm: Reassembler,
    pool: Pool,
    agent_up: bool,
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    roles: RoleTable,
    checks: Vec<CheckState>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
    next_port: u16,
    events: VecDeque<ProxyEvent>,
    drops: BTreeMap<DropReason, u64>,
    buf: Vec<u8>,
    /// Request-head buffers of sessions that went on to a server, kept for the next ones.
    spare_heads: Vec<Vec<u8>>,
}

/// Most request-head buffers kept for reuse.
const SPARE_HEADS: usize = 1024;

/// Destination address and protocol (IPv6: the fixed header's next header) read in place;
/// `None` when the bytes are too short for the fixed header or of no IP version.
fn peek(p: &[u8]) -> Option<(IpAddr, u8)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            Some((IpAddr::from(d), p[9]))
        }
        6 if p.len() >= 40 => {
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            Some((IpAddr::from(d), p[6]))
        }
        _ => None,
    }
}

const PORT_LO: u16 = 32_768;
const PORT_HI: u16 = 60_999;

impl<S: TcpStack> Proxy<S> {
    /// A proxy over `stack` (which gets the tunnel address, the VIPs and the backend-side
    /// address, and listens on the frontend port of the first two).
    ///
    /// # Errors
    /// The stack refuses to listen (cannot happen for addresses just added).
    pub fn new(cfg: ProxyConfig, mut stack: S) -> Result<Self, crate::stack::StackError> {
        stack.add_address(cfg.tunnel_addr);
        stack.add_address(cfg.backend_addr);
        stack.listen(SocketAddr::new(cfg.tunnel_addr, cfg.port))?;
        for v in &cfg.vips {
            stack.add_address(*v);
            stack.listen(SocketAddr::new(*v, cfg.port))?;
        }
        let tunnel = TunnelEndpoint::new(cfg.tunnel_addr, cfg.vips.iter().copied(), cfg.mtu, false);
        let tunnel6 = match cfg.tunnel_addr_v6 {
            Some(a) => {
                stack.add_address(a);
                stack.listen(SocketAddr::new(a, cfg.port))?;
                Some(TunnelEndpoint::new(
                    a,
                    cfg.vips.iter().copied(),
                    cfg.mtu,
                    false,
                ))
            }
            None => None,
        };
        let pool = Pool::new(cfg.servers.clone(), cfg.balance, cfg.check);
        let start = Instant::ZERO + cfg.check_phase;
        let checks = cfg
            .servers
            .iter()
            .map(|_| CheckState {
                next_check: start,
                next_agent: start,
                ..CheckState::default()
            })
            .collect();
        Ok(Self {
            cfg,
            stack,
            tunnel,
            tunnel6,
            reasm: Reassembler::new(),
            pool,
            agent_up: true,
            sessions: Vec::new(),
            free: Vec::new(),
            roles: RoleTable::default(),
            checks,
            deadlines: BinaryHeap::new(),
            next_port: PORT_LO,
            events: VecDeque::new(),
            drops: BTreeMap::new(),
            buf: Vec::new(),
            spare_heads: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// The backend pool (servers and their states).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool, to change server states from outside (scenario events, tests).
    pub fn pool_mut(&mut self) -> &mut Pool {
        &mut self.pool
    }

    /// The TCP stack.
    pub fn stack(&self) -> &S {
        &self.stack
    }

    /// Sets the local agent file (`up` = true): `monitor-uri` fails while it is down.
    pub fn set_agent_up(&mut self, up: bool) {
        self.agent_up = up;
    }

    /// What `monitor-uri` answers now: 200 when at least one server is usable and the local
    /// agent file says up.
    pub fn monitor_ok(&self) -> bool {
        self.agent_up && self.pool.usable() > 0
    }

    /// Packets dropped, by reason.
    pub fn drops(&self) -> &BTreeMap<DropReason, u64> {
        &self.drops
    }

    /// Open proxied sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    fn drop_packet(&mut self, reason: DropReason) {
        *self.drops.entry(reason).or_default() += 1;
        self.events.push_back(ProxyEvent::Dropped { reason });
    }

    /// Takes a packet addressed to the proxy (see the module documentation).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        if !self.deliver_common(now, packet) {
            self.handle_any(now, packet);
        }
        self.process(now);
    }

    /// The common packets, checked once: a whole, well-formed TCP segment tunnelled to a
    /// VIP, or sent to the backend-side address; their header is checked here, and the
    /// tunnel and the stack go on from that check (`decap_view`, `TcpStack::handle_ip`).
    /// Returns false, with nothing done, for any other packet: `handle_any` then takes it
    /// and finds what is wrong with it, so a drop's reason is the same either way.
    fn deliver_common(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Ok(ip) = IpView::new_checked(packet, true) else {
            return false;
        };
        // (`handle_any` tells a tunnel by the fixed header's protocol: an IPv6 packet with
        // extension headers is left to it.)
        if ip.is_fragment() || (!ip.is_ipv4() && ip.transport_offset() != 40) {
            return false;
        }
        let to_tunnel6 = self.cfg.tunnel_addr_v6.is_some_and(|a| ip.dst_is(&a));
        let ip = match ip.proto() {
            IpProto::Ipip | IpProto::Ipv6 => {
                let tunnel = match &self.tunnel6 {
                    Some(t) if to_tunnel6 => t,
                    _ if ip.dst_is(&self.cfg.tunnel_addr) => &self.tunnel,
                    _ => return false,
                };
                match tunnel.decap_view(ip) {
                    Ok(d) => match d.inner_view {
                        Some(inner) if inner.proto() == IpProto::Tcp => inner,
                        _ => return false,
                    },
                    Err(_) => return false,
                }
            }
            IpProto::Tcp
                if ip.dst_is(&self.cfg.tunnel_addr)
                    || to_tunnel6
                    || ip.dst_is(&self.cfg.backend_addr) =>
            {
                ip
            }
            _ => return false,
        };
        if self.stack.handle_ip(now, &ip).is_err() {
            self.drop_packet(DropReason::Malformed);
        }
        true
    }

    /// Any packet addressed to the proxy: fragments reassembled, tunnels opened, ICMP
    /// errors, drops with their reason.
    fn handle_any(&mut self, now: Instant, packet: &[u8]) {
        let is_frag = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                packet.len() >= 8 && u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0
            }
            Some(6) => packet.get(6) == Some(&44),
            _ => false,
        };
        if is_frag {
            match self.reasm.push(now, packet) {
                Ok(Reassembly::Complete(whole)) => self.handle_whole(now, &whole),
                Ok(Reassembly::NotFragment) => self.handle_whole(now, packet),
                Ok(Reassembly::Pending | Reassembly::Duplicate) => {}
                Err(_) => self.drop_packet(DropReason::Fragment),
            }
        } else {
            self.handle_whole(now, packet);
        }
    }

    fn handle_whole(&mut self, now: Instant, packet: &[u8]) {
        // Headers are read in place (destination, protocol); the tunnel, the stack and the
        // ICMP path each parse and check what they need.
        let Some((dst, proto)) = peek(packet) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let tunnelled = matches!(proto, 4 | 41);
        let to_tunnel6 = self.cfg.tunnel_addr_v6 == Some(dst);
        if tunnelled && (dst == self.cfg.tunnel_addr || to_tunnel6) {
            let tunnel = match &self.tunnel6 {
                Some(t) if to_tunnel6 => t,
                _ => &self.tunnel,
            };
            match tunnel.decap(packet) {
                Ok(d) => self.deliver(now, &d.inner),
                Err(e) => self.drop_packet(DropReason::from(&e)),
            }
        } else if dst == self.cfg.tunnel_addr || to_tunnel6 || dst == self.cfg.backend_addr {
            self.deliver(now, packet);
        } else if self.cfg.vips.contains(&dst) {
            // A VIP is bound on the tunnel only: a bare packet to it is not ours.
            self.drop_packet(DropReason::NotTunnel);
        } else {
            self.drop_packet(DropReason::NotLocal);
        }
    }

    fn deliver(&mut self, now: Instant, packet: &[u8]) {
        if peek(packet).is_some_and(|(_, proto)| proto == 6) {
            if self.stack.handle_packet(now, packet).is_err() {
                self.drop_packet(DropReason::Malformed);
            }
            return;
        }
        let Ok(p) = Packet::parse_with(packet, Verify::IpHeader) else {
            return self.drop_packet(DropReason::Malformed);
        };
        match p.transport {
            Transport::Tcp(_) => {
                if self.stack.handle_packet(now, packet).is_err() {
                    self.drop_packet(DropReason::Malformed);
                }
            }
            Transport::Icmpv4(_) | Transport::Icmpv6(_) => self.icmp(now, &p),
            _ => self.drop_packet(DropReason::OtherProtocol),
        }
    }

    /// ICMP errors: a "fragmentation needed" / "packet too big" quoting one of our flows
    /// lowers its path MTU (and the stack resends what was lost,
    /// [`TcpStack::path_mtu_reduced`]); an error for an unknown flow is dropped.
    fn icmp(&mut self, now: Instant, p: &Packet<'_>) {
        let mtu = match p.transport {
            Transport::Icmpv4(m) if m.is_error() => match m {
                Icmpv4Repr::DestUnreachable {
                    code: 4,
                    next_hop_mtu,
                } => Some(next_hop_mtu),
                _ => None,
            },
            Transport::Icmpv6(m) if m.is_error() => match m {
                Icmpv6Repr::PacketTooBig { mtu } => Some(mtu.min(65_535) as u16),
                _ => None,
            },
            _ => return self.drop_packet(DropReason::IcmpIgnored),
        };
        let Ok(q) = quoted_flow(p.payload) else {
            return self.drop_packet(DropReason::IcmpIgnored);
        };
        if q.proto() != IpProto::Tcp {
            return self.drop_packet(DropReason::IcmpUnknownFlow);
        }
        let local = SocketAddr::new(q.src(), q.sport());
        let remote = SocketAddr::new(q.dst(), q.dport());
        let known = match (mtu, icmp_hard_error(p)) {
            (Some(m), _) => self.stack.path_mtu_reduced(now, local, remote, m),
            // Destination unreachable, time exceeded, parameter problem: a connection to a
            // server still connecting fails at once (HAProxy sees the connect fail).
            (None, Some((l, r, seq))) => self.stack.icmp_unreachable(now, l, r, seq),
            (None, None) => self.stack.knows(local, remote),
        };
        if !known {
            return self.drop_packet(DropReason::IcmpUnknownFlow);
        }
        if let Some(mtu) = mtu {
            self.events
                .push_back(ProxyEvent::PathMtu { local, remote, mtu });
        }
    }

    /// Runs timers due at `now`: the stack's, health and agent checks, connect timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stack.handle_timeout(now);
        self.process(now);
        self.run_checks(now);
        while let Some(&Reverse((at, slot, conn))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let connecting = self
                .sessions
                .get(slot as usize)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| s.phase == Phase::Connecting && s.server == Some(conn));
            if connecting {
                let _ = self.stack.abort(now, conn);
                self.fail_connect(now, slot, SessionEnd::ConnectFailed);
            }
        }
        self.reasm.expire(now);
        self.process(now);
    }

    /// The next instant [`Proxy::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.stack.poll_timeout();
        let mut min = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if self.cfg.check.enabled {
            for c in &self.checks {
                min(c.next_check);
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            if self.cfg.servers[i].agent_port.is_some() {
                min(c.next_agent);
            }
        }
        if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            min(*at);
        }
        t
    }

    /// The next packet to send (to a client, directly, or to a server).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stack.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    fn alloc_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= PORT_HI { PORT_LO } else { p + 1 };
        p
    }

    fn connect_from_backend_side(&mut self, now: Instant, to: SocketAddr) -> Option<ConnId> {
        for _ in 0..64 {
            let local = SocketAddr::new(self.cfg.backend_addr, self.alloc_port());
            match self.stack.connect(now, local, to) {
                Ok(id) => return Some(id),
                Err(crate::stack::StackError::AddrInUse { .. }) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn run_checks(&mut self, now: Instant) {
        for i in 0..self.checks.len() {
            if self.cfg.check.enabled && self.checks[i].next_check <= now {
                if let Some((id, _)) = self.checks[i].check_conn.take() {
                    // Still not connected after `inter`: a failure.
                    self.roles.remove(id);
                    let _ = self.stack.abort(now, id);
                    self.check_done(i, false);
                }
                self.checks[i].next_check = now + self.cfg.check.inter;
                if let Some(id) = self.connect_from_backend_side(now, self.cfg.servers[i].addr) {
                    self.roles.insert(id, Role::Check(i));
                    self.checks[i].check_conn = Some((id, now));
                } else {
                    self.check_done(i, false);
                }
            }
            if let Some(port) = self.cfg.servers[i].agent_port
                && self.checks[i].next_agent <= now
            {
                if let Some((id, _, _)) = self.checks[i].agent_conn.take() {
                    self.roles.remove(id);
                    let _ = self.stack.abort(now, id);
                }
                self.checks[i].next_agent = now + self.cfg.agent_inter;
                let to = SocketAddr::new(self.cfg.servers[i].addr.ip(), port);
                if let Some(id) = self.connect_from_backend_side(now, to) {
                    self.roles.insert(id, Role::Agent(i));
                    self.checks[i].agent_conn = Some((id, now, Vec::new()));
                }
            }
        }
    }

    fn check_done(&mut self, i: usize, ok: bool) {
        if self.pool.check_result(i, ok) {
            let usable = self.pool.servers()[i].usable();
            self.events
                .push_back(ProxyEvent::ServerState { server: i, usable });
        }
    }

    fn agent_reply(&mut self, i: usize, reply: &[u8]) {
        let words: Vec<AgentWord> = http::parse_agent(&String::from_utf8_lossy(reply));
        if self.pool.apply_agent(i, &words) {
            let usable = self.pool.servers()[i].usable();
            self.events
                .push_back(ProxyEvent::ServerState { server: i, usable });
        }
    }

    /// Drains the stack's events and acts on them.
    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.stack.poll_event() {
            match ev {
                TcpEvent::Accepted { id, local, remote } => self.accepted(id, local, remote),
                TcpEvent::ResetSent { local, remote } => {
                    self.events
                        .push_back(ProxyEvent::ResetSent { local, remote });
                }
                TcpEvent::Connected { id } => match self.roles.get(id) {
                    Some(Role::Server(slot)) => self.server_connected(now, slot),
                    Some(Role::Check(i)) => {
                        self.roles.remove(id);
                        self.checks[i].check_conn = None;
                        // HAProxy closes a successful connect check with a RST (no linger).
                        let _ = self.stack.abort(now, id);
                        self.check_done(i, true);
                    }
                    _ => {}
                },
                TcpEvent::Readable { id } | TcpEvent::Writable { id } => match self.roles.get(id) {
                    Some(Role::Client(slot)) => self.client_readable(now, slot),
                    Some(Role::Server(slot)) => self.pump_both(now, slot),
                    Some(Role::Agent(i)) => self.agent_readable(now, id, i),
                    _ => {}
                },
                TcpEvent::PeerClosed { id } => match self.roles.get(id) {
                    Some(Role::Client(slot)) => self.client_readable(now, slot),
                    Some(Role::Server(slot)) => self.pump_both(now, slot),
                    Some(Role::Agent(i)) => self.agent_readable(now, id, i),
                    _ => {}
                },
                TcpEvent::Closed { id, cause } => self.closed(now, id, cause),
            }
        }
    }

    fn accepted(&mut self, id: ConnId, local: SocketAddr, remote: SocketAddr) {
        let s = Session {
            client: id,
            client_addr: remote,
            vip: local,
            server: None,
            backend: None,
            head: Vec::new(),
            phase: Phase::Head,
            client_open: true,
            server_open: false,
            client_fin_fwd: false,
            server_fin_fwd: false,
            end: None,
        };
        let slot = if let Some(f) = self.free.pop() {
            self.sessions[f as usize] = Some(s);
            f
        } else {
            self.sessions.push(Some(s));
            (self.sessions.len() - 1) as u32
        };
        self.roles.insert(id, Role::Client(slot));
        self.events.push_back(ProxyEvent::Accepted {
            client: remote,
            vip: local,
        });
    }

    fn session(&mut self, slot: u32) -> Option<&mut Session> {
        self.sessions
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
    }

    /// Answers the client itself and closes (monitor-uri, 400, 503).
    fn respond(&mut self, now: Instant, slot: u32, body: &[u8], end: SessionEnd) {
        let Some(s) = self.session(slot) else { return };
        let client = s.client;
        s.phase = Phase::Closing;
        s.end = Some(end);
        let _ = self.stack.send(now, client, body);
        let _ = self.stack.close(now, client);
    }

    fn client_readable(&mut self, now: Instant, slot: u32) {
        let Some(s) = self.session(slot) else { return };
        let (client, phase) = (s.client, s.phase);
        match phase {
            Phase::Head => {
                let mut head = std::mem::take(&mut s.head);
                if head.capacity() == 0
                    && let Some(b) = self.spare_heads.pop()
                {
                    head = b;
                }
                let max = self.cfg.max_head;
                let want = max + 1 - head.len().min(max);
                let _ = self.stack.recv(now, client, &mut head, want);
                let Some(end) = http::head_end(&head) else {
                    if head.len() > max {
                        return self.respond(
                            now,
                            slot,
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                            SessionEnd::BadRequest,
                        );
                    }
                    if self.stack.peer_closed(client) {
                        let _ = self.stack.close(now, client);
                    }
                    if let Some(s) = self.session(slot) {
                        s.head = head;
                    }
                    return;
                };
                let monitor = http::request_path(&head[..end]).map(|p| p == self.cfg.monitor_uri);
                match monitor {
                    Err(_) => self.respond(
                        now,
                        slot,
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                        SessionEnd::BadRequest,
                    ),
                    Ok(true) => {
                        let ok = self.monitor_ok();
                        self.respond(now, slot, http::monitor_response(ok), SessionEnd::Monitor);
                    }
                    Ok(false) => self.start_server(now, slot, head),
                }
            }
            Phase::Relay => self.pump_both(now, slot),
            Phase::Connecting => {}
            Phase::Closing => {
                // Discard what a client sends after the answer.
                self.buf.clear();
                let n = self.stack.recv_queue(client);
                let mut b = std::mem::take(&mut self.buf);
                let _ = self.stack.recv(now, client, &mut b, n);
                self.buf = b;
            }
        }
    }

    fn start_server(&mut self, now: Instant, slot: u32, head: Vec<u8>) {
        let Some(s) = self.session(slot) else { return };
        let client_ip = s.client_addr.ip();
        let Some(b) = self.pool.pick(client_ip) else {
            return self.respond(
                now,
                slot,
                http::monitor_response(false),
                SessionEnd::NoServer,
            );
        };
        let to = self.cfg.servers[b].addr;
        let Some(id) = self.connect_from_backend_side(now, to) else {
            self.pool.release(b);
            return self.respond(
                now,
                slot,
                http::monitor_response(false),
                SessionEnd::ConnectFailed,
            );
        };
        self.roles.insert(id, Role::Server(slot));
        self.deadlines
            .push(Reverse((now + self.cfg.timeout_connect, slot, id)));
        let Some(s) = self.session(slot) else { return };
        s.server = Some(id);
        s.server_open = true;
        s.backend = Some(b);
        s.head = head;
        s.phase = Phase::Connecting;
        let client = s.client_addr;
        self.events
            .push_back(ProxyEvent::Forwarded { client, server: b });
    }

    fn server_connected(&mut self, now: Instant, slot: u32) {
        let send_proxy = self.cfg.send_proxy;
        let Some(s) = self.session(slot) else { return };
        let Some(server) = s.server else {
            return;
        };
        let mut head = std::mem::take(&mut s.head);
        s.phase = Phase::Relay;
        let (client, client_addr, vip) = (s.client, s.client_addr, s.vip);
        let mut first = std::mem::take(&mut self.buf);
        first.clear();
        if send_proxy {
            http::proxy_v1_into(client_addr, vip, &mut first);
        }
        first.extend_from_slice(&head);
        let _ = self.stack.send(now, server, &first);
        self.buf = first;
        // The relay below is all the session does from here on: a stack that can, does it
        // by itself.
        self.stack.relay(server, client);
        self.stack.relay(client, server);
        if self.spare_heads.len() < SPARE_HEADS {
            head.clear();
            self.spare_heads.push(head);
        }
        self.pump_both(now, slot);
    }

    fn pump(&mut self, now: Instant, from: ConnId, to: ConnId) {
        loop {
            let avail = self.stack.recv_queue(from);
            let room = self.stack.send_room(to);
            if avail == 0 {
                return;
            }
            if room == 0 {
                // Ask for a Writable event on `to`.
                let _ = self.stack.send(now, to, &[]);
                return;
            }
            if !matches!(self.stack.splice(now, from, to, avail), Ok(n) if n > 0) {
                return;
            }
        }
    }

    fn pump_both(&mut self, now: Instant, slot: u32) {
        let Some(s) = self.session(slot) else { return };
        if s.phase != Phase::Relay {
            return;
        }
        let (c, Some(sv)) = (s.client, s.server) else {
            return;
        };
        let (c_open, s_open) = (s.client_open, s.server_open);
        if c_open && s_open {
            self.pump(now, c, sv);
            self.pump(now, sv, c);
        }
        // Forward half-closes once everything before them was relayed.
        let c_fin = c_open && self.stack.peer_closed(c) && self.stack.recv_queue(c) == 0;
        let s_fin = s_open && self.stack.peer_closed(sv) && self.stack.recv_queue(sv) == 0;
        let Some(s) = self.session(slot) else { return };
        if c_fin && !s.client_fin_fwd {
            s.client_fin_fwd = true;
            if s_open {
                let _ = self.stack.close(now, sv);
            }
        }
        let Some(s) = self.session(slot) else { return };
        if s_fin && !s.server_fin_fwd {
            s.server_fin_fwd = true;
            if c_open {
                let _ = self.stack.close(now, c);
            }
        }
    }

    fn agent_readable(&mut self, now: Instant, id: ConnId, i: usize) {
        let mut b = Vec::new();
        let n = self.stack.recv_queue(id);
        let _ = self.stack.recv(now, id, &mut b, n);
        let done = self.stack.peer_closed(id);
        let Some((_, _, buf)) = self.checks[i].agent_conn.as_mut() else {
            return;
        };
        buf.extend_from_slice(&b);
        if let Some(nl) = buf.iter().position(|&c| c == b'\n') {
            let line = buf[..nl].to_vec();
            self.checks[i].agent_conn = None;
            self.roles.remove(id);
            let _ = self.stack.close(now, id);
            self.agent_reply(i, &line);
        } else if done {
            let line = std::mem::take(buf);
            self.checks[i].agent_conn = None;
            self.roles.remove(id);
            let _ = self.stack.close(now, id);
            self.agent_reply(i, &line);
        }
    }

    fn fail_connect(&mut self, now: Instant, slot: u32, end: SessionEnd) {
        let Some(s) = self.session(slot) else { return };
        s.server_open = false;
        let (server, backend) = (s.server.take(), s.backend);
        if let Some(id) = server {
            self.roles.remove(id);
        }
        if let Some(b) = backend {
            self.pool.release(b);
        }
        self.respond(now, slot, http::monitor_response(false), end);
    }

    fn closed(&mut self, now: Instant, id: ConnId, cause: CloseCause) {
        let Some(role) = self.roles.remove(id) else {
            return;
        };
        match role {
            Role::Check(i) => {
                self.checks[i].check_conn = None;
                self.check_done(i, false);
            }
            Role::Agent(i) => {
                if let Some((_, _, buf)) = self.checks[i].agent_conn.take()
                    && !buf.is_empty()
                {
                    self.agent_reply(i, &buf);
                }
            }
            Role::Client(slot) => {
                let Some(s) = self.session(slot) else { return };
                s.client_open = false;
                let server = s.server.filter(|_| s.server_open);
                let end = match cause {
                    CloseCause::Normal | CloseCause::Aborted => None,
                    // A passive connection never ends by ICMP (only SYN-SENT does): counted
                    // as a reset if a stack ever reports it.
                    CloseCause::Reset | CloseCause::Unreachable => Some(SessionEnd::ClientReset),
                    CloseCause::TimedOut => Some(SessionEnd::ClientTimedOut),
                };
                if let Some(e) = end {
                    s.end.get_or_insert(e);
                    if let Some(sv) = server {
                        let _ = self.stack.abort(now, sv);
                    }
                } else if let Some(sv) = server
                    && !std::mem::replace(&mut s.client_fin_fwd, true)
                {
                    // The client's FIN arrived with the close (the handle is gone by the
                    // time its PeerClosed is seen): forward the half-close now.
                    let _ = self.stack.close(now, sv);
                }
                self.maybe_end(slot);
            }
            Role::Server(slot) => {
                let Some(s) = self.session(slot) else { return };
                let phase = s.phase;
                s.server_open = false;
                if let Some(b) = s.backend {
                    self.pool.release(b);
                }
                let Some(s) = self.session(slot) else { return };
                if phase == Phase::Connecting {
                    // Refused or unanswered: HAProxy answers 503 once retries are exhausted.
                    s.server = None;
                    self.respond(
                        now,
                        slot,
                        http::monitor_response(false),
                        SessionEnd::ConnectFailed,
                    );
                    return;
                }
                let c = s.client;
                let c_open = s.client_open;
                match cause {
                    CloseCause::Reset | CloseCause::TimedOut | CloseCause::Unreachable => {
                        s.end.get_or_insert(if cause == CloseCause::TimedOut {
                            SessionEnd::ServerTimedOut
                        } else {
                            SessionEnd::ServerReset
                        });
                        if c_open {
                            // Relay what already arrived, then close the client.
                            let _ = self.stack.close(now, c);
                        }
                    }
                    CloseCause::Normal | CloseCause::Aborted => {
                        self.pump_both(now, slot);
                        if c_open {
                            let _ = self.stack.close(now, c);
                        }
                    }
                }
                self.maybe_end(slot);
            }
        }
    }

    fn maybe_end(&mut self, slot: u32) {
        let Some(s) = self.session(slot) else { return };
        if s.client_open || s.server_open {
            return;
        }
        let s = self.sessions[slot as usize].take().expect("checked");
        self.free.push(slot);
        self.events.push_back(ProxyEvent::SessionEnded {
            client: s.client_addr,
            server: s.backend,
            end: s.end.unwrap_or(SessionEnd::Completed),
        });
    }
}
