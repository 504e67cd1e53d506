//! The director node: IPVS in TUN mode as a sans-IO state machine.
//!
//! # Method kinds and call order
//! - Configuration ([`Director::add_service`], [`Director::add_dest`], [`Director::edit_dest`],
//!   [`Director::del_dest`], [`Director::add_local_address`]): `ipvsadm` and `ip addr`; callable
//!   at any time (a health-check layer drives them).
//! - [`Director::handle_packet`]`(now, bytes)`: a packet delivered to the director; returns a
//!   [`Verdict`] at once (forward the outer packet(s) to a real server, or drop with a typed
//!   reason and possibly an ICMP error for the client).
//! - [`Director::handle_timeout`]`(now)`: expires connection entries; call it when
//!   [`Director::poll_timeout`] says (it may be early, never late).
//!
//! `now` is virtual time and must not go backwards; nothing here reads a clock or a random
//! source, so the same calls give the same bytes.
//!
//! # Kernel behaviour mirrored (net/netfilter/ipvs/ip_vs_core.c, Linux v6.x, `ip_vs_in_hook`)
//! 1. ICMP errors (`ip_vs_in_icmp`/`ip_vs_in_icmp_v6`): IPv4 types 3, 4 and 11, every ICMPv6
//!    error type, are matched to the entry of the flow they quote (reversed, since the quote
//!    is a packet the real server sent from the VIP) and tunnelled to that entry's destination.
//!    With no entry they are not scheduled (`schedule_icmp=0`): dropped here with
//!    [`DropReason::IcmpNoEntry`]. Other ICMP goes to the director's own stack:
//!    [`DropReason::NotVirtualService`].
//! 2. Entry lookup (`conn_in_get`). A TCP SYN on an existing entry reschedules it (entry
//!    expired, packet scheduled anew) when `expire_nodest_conn` is on and the entry's
//!    destination has weight 0, or when `conn_reuse_mode` is on and the entry is in TIME_WAIT
//!    or CLOSE (or FIN_WAIT with `conn_reuse_mode & 2`): `is_new_conn_expected`.
//! 3. An entry whose destination was deleted (not `IP_VS_DEST_F_AVAILABLE`): with
//!    `expire_nodest_conn=1` the entry is expired at once and the packet scheduled anew; with
//!    0 (the lab) the packet is dropped silently and the entry **not** refreshed, so the flow
//!    is blackholed until the destination is added back or the entry times out.
//! 4. No entry: `ip_vs_try_to_schedule` → `tcp_conn_schedule`/`udp_conn_schedule`: a TCP
//!    segment is scheduled only if it has SYN, or any non-RST segment with `sloppy_tcp=1`; the
//!    service is looked up by protocol, VIP and port; the scheduler's choice creates the entry.
//!    When the scheduler finds no destination, `ip_vs_leave` answers ICMP port unreachable
//!    (within the host's ICMP rate limits, [`crate::icmp_limit`]) and drops
//!    ([`DropReason::NoDestination`]).
//! 5. Statistics, TCP state transition, timer re-armed, then `ip_vs_tunnel_xmit` through
//!    [`tierlab_ipip::ipvs::tun_xmit`] with the `pmtu_disc` choice.
//!
//! Not modelled: persistence templates (so `expire_quiescent_template` has no effect),
//! connection thresholds (`IP_VS_DEST_F_OVERLOAD`), SCTP, fwmark services, conntrack, IP
//! reassembly before IPVS (fragments are dropped with [`DropReason::Fragment`]), and the kernel's
//! lazy flush of entries of deleted destinations by `expire_nodest_conn` (entries are expired
//! when their next packet arrives, which is what their flows observe).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::icmp_limit::{IcmpLimiter, IcmpRateLimit};
use serde::{Deserialize, Serialize};
use tierlab_ipip::ipvs::{TunConfig, TunOutput, tun_xmit};
use tierlab_wire::icmp::{IcmpError, build_error};
use tierlab_wire::{FlowKey, Icmpv4Repr, Instant, IpProto, Packet, Transport};

use crate::conn::{Conn, ConnHandle, ConnKey, ConnState, ConnTable, ServiceId, TcpState, Timeouts};
use crate::error::L4Error;
use crate::service::{DestId, Service, ServiceConfig};

/// A director's settings: the `net.ipv4.vs.*` sysctls that matter here and its tunnel source
/// addresses. [`Default`] is the lab's configuration.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorConfig {
    /// Outer source of IPv4 tunnels (the director's own address).
    pub tunnel_src_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6 tunnels.
    pub tunnel_src_v6: Option<Ipv6Addr>,
    /// `net.ipv4.vs.sloppy_tcp` (lab: 1): schedule a non-SYN TCP segment that has no entry.
    pub sloppy_tcp: bool,
    /// `net.ipv4.vs.pmtu_disc` (lab: 0): fragment too-big IPv4 packets silently.
    pub pmtu_disc: bool,
    /// `net.ipv4.vs.expire_nodest_conn` (lab: 0).
    pub expire_nodest_conn: bool,
    /// `net.ipv4.vs.expire_quiescent_template` (lab: 0). Kept for fidelity of the
    /// configuration; templates (persistence) are not modelled, so it changes nothing.
    pub expire_quiescent_template: bool,
    /// `net.ipv4.vs.conn_reuse_mode` (kernel default 1).
    pub conn_reuse_mode: u8,
    /// Route MTU towards the real servers (lab: 1500).
    pub route_mtu: u16,
    /// Entry timeouts.
    pub timeouts: Timeouts,
    /// The host's ICMP rate limits, which the port unreachable of `ip_vs_leave` goes
    /// through (Linux's defaults).
    #[serde(default)]
    pub icmp_ratelimit: IcmpRateLimit,
}

impl Default for DirectorConfig {
    /// The lab: `sloppy_tcp=1`, `pmtu_disc=0`, `expire_nodest_conn=0`,
    /// `expire_quiescent_template=0`, `conn_reuse_mode=1`, route MTU 1500, kernel timeouts; no
    /// tunnel source addresses (set them).
    fn default() -> Self {
        Self {
            tunnel_src_v4: None,
            tunnel_src_v6: None,
            sloppy_tcp: true,
            pmtu_disc: false,
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            conn_reuse_mode: 1,
            route_mtu: 1500,
            timeouts: Timeouts::default(),
            icmp_ratelimit: IcmpRateLimit::default(),
        }
    }
}

/// Why the director did not forward a packet.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[non_exhaustive]
pub enum DropReason {
    /// The bytes do not parse as an IP packet.
    Malformed,
    /// The destination address is not one of the director's (no VIP there).
    NotLocal,
    /// An IP fragment (the kernel reassembles before IPVS; tierlab does not model that).
    Fragment,
    /// Addressed to a local VIP, but no virtual service matches the protocol and port (the
    /// kernel hands it to the director's own stack).
    NoService,
    /// Not a packet IPVS handles (e.g. an ICMP echo to the VIP): the director's own stack.
    NotVirtualService,
    /// A protocol tierlab's director does not model (only TCP, UDP, ICMP).
    UnsupportedProtocol,
    /// A TCP segment without an entry that may not create one: not a SYN with `sloppy_tcp=0`,
    /// or a RST.
    NotSyn,
    /// The scheduler found no usable destination: ICMP port unreachable sent, packet dropped.
    NoDestination,
    /// The entry's destination was deleted from the service (`expire_nodest_conn=0`): dropped
    /// silently, entry not refreshed.
    DestUnavailable,
    /// An ICMP error quoting a flow that has no entry.
    IcmpNoEntry,
    /// Too big for the tunnel (IPv6, or IPv4 with DF and `pmtu_disc=1`): ICMP error sent.
    TooBig,
    /// The TTL / hop limit ran out: ICMP time exceeded sent.
    TtlExpired,
    /// The route MTU leaves less than the minimum for the tunnel.
    MtuBelowMinimum,
    /// No tunnel source address configured for the packet's family.
    NoTunnelSource,
    /// The tunnel code refused the packet.
    TunnelError,
}

/// What the director does with a packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Send `packets` (the outer IPIP packet, or its fragments) to the real server.
    Forward {
        /// The service the entry belongs to.
        service: ServiceId,
        /// The destination.
        dest: DestId,
        /// Its address (the outer destination).
        dest_addr: IpAddr,
        /// Whether this packet created the entry.
        new_entry: bool,
        /// The packets to send.
        packets: Vec<Vec<u8>>,
    },
    /// Dropped; `reply` is an ICMP error to send back to the packet's source, if any.
    Drop {
        /// Why.
        reason: DropReason,
        /// ICMP error for the sender.
        reply: Option<Vec<u8>>,
    },
}

impl Verdict {
    const fn drop(reason: DropReason) -> Self {
        Self::Drop {
            reason,
            reply: None,
        }
    }
}

/// A director: services, connection table, counters.
#[derive(Debug)]
pub struct Director {
    config: DirectorConfig,
    services: Vec<Service>,
    index: BTreeMap<(u8, IpAddr, u16), ServiceId>,
    local: BTreeSet<IpAddr>,
    conns: ConnTable,
    drops: BTreeMap<DropReason, u64>,
    expired: u64,
    ident: u16,
    icmp: IcmpLimiter,
}

impl Director {
    /// A director with no services.
    pub fn new(config: DirectorConfig) -> Self {
        Self {
            config,
            services: Vec::new(),
            index: BTreeMap::new(),
            local: BTreeSet::new(),
            conns: ConnTable::new(),
            drops: BTreeMap::new(),
            expired: 0,
            ident: 0,
            icmp: IcmpLimiter::new(config.icmp_ratelimit),
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &DirectorConfig {
        &self.config
    }

    /// Adds a local address (a VIP configured on the director without a service, or any other
    /// address of its own). Service VIPs are added automatically.
    pub fn add_local_address(&mut self, addr: IpAddr) {
        self.local.insert(addr);
    }

    /// Adds a virtual service (`ipvsadm -A`).
    ///
    /// # Errors
    /// [`L4Error::ServiceExists`], [`L4Error::BadTableSize`].
    pub fn add_service(&mut self, config: ServiceConfig) -> Result<ServiceId, L4Error> {
        let k = (config.proto.number(), config.vip, config.port);
        if self.index.contains_key(&k) {
            return Err(L4Error::ServiceExists {
                proto: k.0,
                vip: k.1,
                port: k.2,
            });
        }
        let svc = Service::new(config)?;
        let id = ServiceId(self.services.len() as u32);
        self.services.push(svc);
        self.index.insert(k, id);
        self.local.insert(config.vip);
        Ok(id)
    }

    /// The service `id`.
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        self.services.get(id.0 as usize)
    }

    /// Changes a service's scheduler and table size ([`Service::edit`]).
    ///
    /// # Errors
    /// [`L4Error::UnknownServiceId`], and [`Service::edit`]'s.
    pub fn edit_service(
        &mut self,
        id: ServiceId,
        scheduler: crate::SchedulerKind,
        table_size: Option<usize>,
    ) -> Result<(), L4Error> {
        self.svc_mut(id)?.edit(scheduler, table_size)
    }

    /// Every service, by id.
    pub fn services(&self) -> impl Iterator<Item = (ServiceId, &Service)> {
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| (ServiceId(i as u32), s))
    }

    /// The service for a protocol, VIP and port.
    pub fn find_service(&self, proto: IpProto, vip: IpAddr, port: u16) -> Option<ServiceId> {
        self.index.get(&(proto.number(), vip, port)).copied()
    }

    fn svc_mut(&mut self, id: ServiceId) -> Result<&mut Service, L4Error> {
        self.services
            .get_mut(id.0 as usize)
            .ok_or(L4Error::UnknownServiceId(id.0))
    }

    /// `ipvsadm -a`: adds a destination at the head of the service's list.
    ///
    /// # Errors
    /// As [`Service::add_dest`], or [`L4Error::NoSuchService`].
    pub fn add_dest(
        &mut self,
        svc: ServiceId,
        addr: IpAddr,
        port: u16,
        weight: u32,
    ) -> Result<DestId, L4Error> {
        self.svc_mut(svc)?.add_dest(addr, port, weight)
    }

    /// `ipvsadm -e`: changes a destination's weight (0 drains it).
    ///
    /// # Errors
    /// As [`Service::edit_dest`], or [`L4Error::NoSuchService`].
    pub fn edit_dest(
        &mut self,
        svc: ServiceId,
        addr: IpAddr,
        port: u16,
        weight: u32,
    ) -> Result<DestId, L4Error> {
        self.svc_mut(svc)?.edit_dest(addr, port, weight)
    }

    /// `ipvsadm -d`: deletes a destination; its entries stay and are blackholed
    /// (`expire_nodest_conn=0`) or rescheduled on their next packet (`=1`).
    ///
    /// # Errors
    /// As [`Service::del_dest`], or [`L4Error::NoSuchService`].
    pub fn del_dest(&mut self, svc: ServiceId, addr: IpAddr, port: u16) -> Result<DestId, L4Error> {
        self.svc_mut(svc)?.del_dest(addr, port)
    }

    /// The connection table.
    pub const fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// Dropped packets by reason.
    pub const fn drops(&self) -> &BTreeMap<DropReason, u64> {
        &self.drops
    }

    /// Entries that timed out so far.
    pub const fn expired(&self) -> u64 {
        self.expired
    }

    /// Number of connection entries the director holds (`ipvsadm -Lnc | wc -l`).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// When [`Director::handle_timeout`] must next be called (possibly early).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.next_timer()
    }

    /// Expires the entries due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Self {
            conns,
            services,
            expired,
            ..
        } = self;
        conns.expire(now, |c| {
            *expired += 1;
            release(services, &c);
        });
    }

    /// Handles a packet delivered to the director at `now`.
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> Verdict {
        let v = self.process(now, bytes);
        if let Verdict::Drop { reason, .. } = &v {
            *self.drops.entry(*reason).or_insert(0) += 1;
        }
        v
    }

    fn process(&mut self, now: Instant, bytes: &[u8]) -> Verdict {
        let Ok(pkt) = Packet::parse(bytes, false) else {
            return Verdict::drop(DropReason::Malformed);
        };
        if !self.local.contains(&pkt.dst()) {
            return Verdict::drop(DropReason::NotLocal);
        }
        let is_fragment = match pkt.ip {
            tierlab_wire::IpHeader::V4(h) => h.is_fragment(),
            tierlab_wire::IpHeader::V6(_) => pkt.ipv6_frag.is_some(),
        };
        if is_fragment {
            return Verdict::drop(DropReason::Fragment);
        }
        let bytes = &bytes[..pkt.len.min(bytes.len())];
        match pkt.transport {
            Transport::Icmpv4(m) => {
                // ip_vs_in_icmp: only these three types are "related".
                let related = matches!(
                    m,
                    Icmpv4Repr::DestUnreachable { .. } | Icmpv4Repr::TimeExceeded { .. }
                ) || matches!(m, Icmpv4Repr::Other { kind: 4, .. });
                if related {
                    self.icmp(&pkt, bytes)
                } else {
                    Verdict::drop(DropReason::NotVirtualService)
                }
            }
            Transport::Icmpv6(m) => {
                // ip_vs_in_icmp_v6: informational messages (type & 0x80) are not related.
                if m.is_error() {
                    self.icmp(&pkt, bytes)
                } else {
                    Verdict::drop(DropReason::NotVirtualService)
                }
            }
            Transport::Tcp(_) | Transport::Udp(_) => self.flow_packet(now, &pkt, bytes),
            _ => Verdict::drop(DropReason::UnsupportedProtocol),
        }
    }

    fn icmp(&mut self, pkt: &Packet<'_>, bytes: &[u8]) -> Verdict {
        let Ok(Some(quoted)) = pkt.icmp_quoted_flow() else {
            return Verdict::drop(DropReason::Malformed);
        };
        if !matches!(quoted.proto(), IpProto::Tcp | IpProto::Udp) {
            return Verdict::drop(DropReason::NotVirtualService);
        }
        let Some(h) = self.conns.lookup(&ConnKey::from_quoted(&quoted)) else {
            return Verdict::drop(DropReason::IcmpNoEntry);
        };
        let Some(conn) = self.conns.get(h).copied() else {
            return Verdict::drop(DropReason::IcmpNoEntry);
        };
        if let Some(d) = self
            .services
            .get_mut(conn.service.0 as usize)
            .and_then(|s| s.dest_mut(conn.dest))
        {
            d.stats.icmp_errors += 1;
        }
        self.xmit(conn.service, conn.dest, false, bytes)
    }

    fn flow_packet(&mut self, now: Instant, pkt: &Packet<'_>, bytes: &[u8]) -> Verdict {
        let flow = pkt.flow_key();
        let key = ConnKey::from_flow(&flow);
        let tcp = pkt.tcp().map(|t| t.flags);
        let mut found = self.conns.lookup(&key);

        // is_new_conn + resched (ip_vs_in_hook).
        if let (Some(h), Some(flags)) = (found, tcp)
            && flags.syn()
            && let Some(c) = self.conns.get(h)
        {
            let dest_weight = self.dest_of(c).map_or(0, |d| d.weight);
            let state = match c.state {
                ConnState::Tcp(s) => s,
                ConnState::Udp => TcpState::None,
            };
            let expected = matches!(state, TcpState::TimeWait | TcpState::Close)
                || (self.config.conn_reuse_mode & 2 != 0 && state == TcpState::FinWait);
            if (self.config.expire_nodest_conn && dest_weight == 0)
                || (self.config.conn_reuse_mode != 0 && expected)
            {
                self.expire_now(h);
                found = None;
            }
        }

        // Check the server status.
        if let Some(h) = found
            && let Some(c) = self.conns.get(h).copied()
            && !self.dest_of(&c).is_some_and(|d| d.available)
        {
            if self.config.expire_nodest_conn {
                self.expire_now(h);
                found = None;
            } else {
                if let Some(d) = self
                    .services
                    .get_mut(c.service.0 as usize)
                    .and_then(|s| s.dest_mut(c.dest))
                {
                    d.stats.dropped_unavailable += 1;
                }
                return Verdict::drop(DropReason::DestUnavailable);
            }
        }

        let (h, new_entry) = match found {
            Some(h) => (h, false),
            None => match self.try_to_schedule(now, &flow, tcp, bytes) {
                Ok(h) => (h, true),
                Err(v) => return v,
            },
        };
        let Some(conn) = self.conns.get_mut(h) else {
            return Verdict::drop(DropReason::Malformed);
        };
        // ip_vs_in_stats, ip_vs_set_state, timer.
        conn.packets += 1;
        if let (ConnState::Tcp(s), Some(f)) = (conn.state, tcp) {
            conn.state = ConnState::Tcp(s.next_input_only(f.syn(), f.fin(), f.ack(), f.rst()));
        }
        let c = *conn;
        self.conns
            .set_expires(h, now + c.state.timeout(&self.config.timeouts));
        if let Some(d) = self
            .services
            .get_mut(c.service.0 as usize)
            .and_then(|s| s.dest_mut(c.dest))
        {
            d.stats.packets += 1;
            d.stats.bytes += bytes.len() as u64;
        }
        self.xmit(c.service, c.dest, new_entry, bytes)
    }

    /// ip_vs_try_to_schedule → tcp_conn_schedule / udp_conn_schedule → ip_vs_schedule.
    fn try_to_schedule(
        &mut self,
        now: Instant,
        flow: &FlowKey,
        tcp: Option<tierlab_wire::TcpFlags>,
        bytes: &[u8],
    ) -> Result<ConnHandle, Verdict> {
        let Some(sid) = self.find_service(flow.proto(), flow.dst(), flow.dport()) else {
            return Err(Verdict::drop(DropReason::NoService));
        };
        if let Some(f) = tcp
            && (!(f.syn() || self.config.sloppy_tcp) || f.rst())
        {
            return Err(Verdict::drop(DropReason::NotSyn));
        }
        let svc = &mut self.services[sid.0 as usize];
        let Some(dest) = svc.schedule(flow) else {
            // ip_vs_leave: ICMP port unreachable from the VIP, if the host's ICMP rate
            // limits let it go (see `icmp_limit`), and drop.
            let reply = if self.icmp.allow(now, flow.src()) {
                let ident = next_ident(&mut self.ident);
                build_error(bytes, flow.dst(), IcmpError::PortUnreachable, ident)
                    .ok()
                    .flatten()
            } else {
                None
            };
            return Err(Verdict::Drop {
                reason: DropReason::NoDestination,
                reply,
            });
        };
        if let Some(d) = svc.dest_mut(dest) {
            d.stats.flows += 1;
            d.stats.entries += 1;
        }
        let state = ConnState::initial(flow.proto());
        Ok(self.conns.insert(Conn {
            key: ConnKey::from_flow(flow),
            service: sid,
            dest,
            state,
            expires: now + state.timeout(&self.config.timeouts),
            packets: 0,
        }))
    }

    fn dest_of(&self, c: &Conn) -> Option<&crate::service::Dest> {
        self.services.get(c.service.0 as usize)?.dest(c.dest)
    }

    fn expire_now(&mut self, h: ConnHandle) {
        if let Some(c) = self.conns.remove(h) {
            release(&mut self.services, &c);
        }
    }

    /// ip_vs_tunnel_xmit / ip_vs_tunnel_xmit_v6 via tierlab-ipip.
    fn xmit(&mut self, service: ServiceId, dest: DestId, new_entry: bool, bytes: &[u8]) -> Verdict {
        let Some(d) = self
            .services
            .get(service.0 as usize)
            .and_then(|s| s.dest(dest))
        else {
            return Verdict::drop(DropReason::TunnelError);
        };
        let dest_addr = d.addr;
        let src = match dest_addr {
            IpAddr::V4(_) => self.config.tunnel_src_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.config.tunnel_src_v6.map(IpAddr::V6),
        };
        let Some(src) = src else {
            return Verdict::drop(DropReason::NoTunnelSource);
        };
        let cfg = TunConfig {
            pmtu_disc: self.config.pmtu_disc,
            route_mtu: self.config.route_mtu,
        };
        let ident = next_ident(&mut self.ident);
        match tun_xmit(bytes, src, dest_addr, &cfg, ident) {
            Ok(TunOutput::Forward(packets)) => Verdict::Forward {
                service,
                dest,
                dest_addr,
                new_entry,
                packets,
            },
            Ok(TunOutput::TooBig { icmp, .. }) => Verdict::Drop {
                reason: DropReason::TooBig,
                reply: icmp,
            },
            Ok(TunOutput::TtlExpired { icmp }) => Verdict::Drop {
                reason: DropReason::TtlExpired,
                reply: icmp,
            },
            Ok(TunOutput::MtuBelowMinimum) => Verdict::drop(DropReason::MtuBelowMinimum),
            Err(_) => Verdict::drop(DropReason::TunnelError),
        }
    }
}

fn next_ident(ident: &mut u16) -> u16 {
    *ident = ident.wrapping_add(1);
    *ident
}

fn release(services: &mut [Service], c: &Conn) {
    if let Some(d) = services
        .get_mut(c.service.0 as usize)
        .and_then(|s| s.dest_mut(c.dest))
    {
        d.stats.entries = d.stats.entries.saturating_sub(1);
    }
}
