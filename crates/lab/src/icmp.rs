//! Path-MTU errors in the lab: where an ICMP "fragmentation needed" (IPv4) or "packet too
//! big" (IPv6) about a proxy's reply ends up.
//!
//! ## What happens (`topology.client_mtu` below `topology.mtu`)
//! The clients advertise an MSS from `topology.mtu`, so the proxies send full-size segments
//! (with DF, Linux's default). The link from `internet` to the clients is smaller:
//! - `internet` ([`EdgeMtu`] on its [`RouterNode`]) checks the egress MTU as Linux's
//!   `ip_forward` / `ip6_forward` do: after the TTL check, before the TTL is decremented. A
//!   larger IPv4 packet with DF, or any larger IPv6 packet, is dropped
//!   ([`DropReason::MtuExceeded`]) and answered with an error built as Linux builds it
//!   ([`build_error`]: the packet as it arrived is quoted, the next-hop MTU given), from the
//!   router's address on the edge segment, to the packet's source: the VIP. An IPv4 packet
//!   without DF is fragmented instead (after the TTL decrement, as `ip_fragment` does).
//! - The error is locally generated, and Linux routes it by its destination (the VIP) with
//!   the multipath hash **of the offending packet** (`icmp_route_lookup` →
//!   `ip_route_output_key_hash(…, skb_in)`; IPv6 `icmp6_send`:
//!   `rt6_multipath_hash(net, &fl6, skb, NULL)`). The hash is symmetric, so the error leaves
//!   `internet` toward the edge router the client's flow came in by ([`local_hop`]).
//! - That router forwards it by its own policy ([`tierlab_ecmp`]): policy 0 hashes the quoted
//!   header (for IPv4: its addresses, the same hash as the flow's), so the error goes to the
//!   flow's director; policies 1, 2 and 3 hash the error's own header (source = `internet`,
//!   destination = the VIP), the same for every error toward one VIP through one router, so
//!   it reaches one fixed director.
//! - A director forwards it over the tunnel to the proxy of its connection entry, or drops it
//!   without an entry (`ip_vs_in_icmp`, `schedule_icmp=0`: `icmp_no_flow`). A proxy holding
//!   the flow lowers its path MTU and resends smaller; a proxy that does not drops it
//!   (`icmp_no_flow` too).
//!
//! ## Accounting
//! The network follows these errors ([`tierlab_net::Network::watch`]); each node records what
//! it does with one ([`IcmpTally`]): taken by the proxy holding the flow, or dropped with a
//! reason. At the end of a run [`collect`] gathers them into an [`IcmpLedger`]:
//! `sent = reached_owner + dropped + in_flight` ([`IcmpReport`]).
//!
//! Rate limits: none, as in Linux, which exempts these errors from its ICMP limits (IPv4:
//! `icmpv4_mask_allow` lets fragmentation-needed through both `icmp_ratelimit` and
//! `icmp_msgs_per_sec`; IPv6: the default `ratemask`, 0-1,3-127, leaves packet too big out):
//! every too-big packet gets its error. `tests/linux_icmp_ratelimit.rs` checks it on the
//! running kernel (100 errors for 100 packets per family; port unreachable, which is limited,
//! 6 of 100).
//!
//! Not modelled: the use a locally generated error makes of a resilient next-hop bucket.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use tierlab_ecmp::HashInput;
use tierlab_l7::client::ConnRecord;
use tierlab_l7::{ProxyEvent, TcpStack};
use tierlab_net::{DropReason, IfaceId, LinkSpec, Network, NodeId, Outbox};
use tierlab_wire::frag::fragment_v4;
use tierlab_wire::icmp::{IcmpError, build_error};
use tierlab_wire::{FlowKey, Instant, IpHeader, Packet};

use crate::build::Lab;
use crate::nodes::{DirectorNode, Forwarding, Hop, ProxyNode, RouterNode};
use crate::scenario::Scenario;

/// A client connection as the errors name it: (client address and port, VIP and port).
pub type FlowId = (SocketAddr, SocketAddr);

/// Instants, each with how many errors came then (errors come in bursts: a window of
/// segments answered at once), in time order.
pub type Times = Vec<(Instant, u32)>;

/// Appends one error at `at` to `times` (time never goes backwards in a run).
fn push_time(times: &mut Times, at: Instant) {
    match times.last_mut() {
        Some((t, n)) if *t == at => *n += 1,
        _ => times.push((at, 1)),
    }
}

/// The flow a packet sent from a VIP to a client belongs to.
fn flow_of_reply(f: &FlowKey) -> FlowId {
    (
        SocketAddr::new(f.dst(), f.dport()),
        SocketAddr::new(f.src(), f.sport()),
    )
}

/// The ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2) in
/// `packet`, which may also be the inner packet of an IPIP / IPv6 tunnel packet (a director
/// forwarding it to a proxy): the error's own bytes.
pub fn pmtu_error(packet: &[u8]) -> Option<&[u8]> {
    pmtu_error_in(packet, true)
}

fn pmtu_error_in(p: &[u8], outer: bool) -> Option<&[u8]> {
    match p.first()? >> 4 {
        4 => {
            let hl = usize::from(p[0] & 0xf) * 4;
            if hl < 20 || p.len() < hl + 8 {
                return None;
            }
            // Not a fragment (offset or MF set).
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                return None;
            }
            match p[9] {
                1 => (p[hl] == 3 && p[hl + 1] == 4).then_some(p),
                4 | 41 if outer => pmtu_error_in(&p[hl..], false),
                _ => None,
            }
        }
        6 => {
            if p.len() < 48 {
                return None;
            }
            match p[6] {
                58 => (p[40] == 2 && p[41] == 0).then_some(p),
                4 | 41 if outer => pmtu_error_in(&p[40..], false),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The source address of an error [`pmtu_error`] found.
fn error_source(err: &[u8]) -> Option<IpAddr> {
    match err.first()? >> 4 {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(err.get(12..16)?).ok()?)),
        6 => Some(IpAddr::from(<[u8; 16]>::try_from(err.get(8..24)?).ok()?)),
        _ => None,
    }
}

/// The error's source and the flow it quotes, for a packet that carries a path-MTU error.
fn error_and_flow(packet: &[u8]) -> Option<(IpAddr, FlowId)> {
    let err = pmtu_error(packet)?;
    let quoted = Packet::parse(err, false).ok()?.icmp_quoted_flow().ok()??;
    Some((error_source(err)?, flow_of_reply(&quoted)))
}

/// Where a locally generated packet to `dst` leaves: the route of `dst`, the next hop the
/// multipath hash of `input` picks in it (Linux hashes a locally generated ICMP error from
/// the packet it is about).
pub fn local_hop(fwd: &Forwarding, dst: IpAddr, input: &HashInput) -> Option<Hop> {
    let (_, group) = fwd.router.fib().lookup(dst)?;
    let index = group.select(fwd.router.hash(input));
    let id = group.members().get(index)?.id;
    fwd.hops.get(&id).copied()
}

/// The egress MTU check of a router with a link smaller than the packets that reach it
/// (`internet` toward the clients), and what it did.
#[derive(Clone, Debug)]
pub struct EdgeMtu {
    /// Egress interfaces whose MTU is checked, with that MTU.
    pub limits: BTreeMap<IfaceId, u16>,
    /// Source of the IPv4 errors (the router's address on the segment the errors leave by).
    pub src_v4: IpAddr,
    /// Source of the IPv6 errors.
    pub src_v6: IpAddr,
    /// Errors sent.
    pub sent: u64,
    /// Errors sent, per flow: when.
    pub sent_by_flow: BTreeMap<FlowId, Times>,
    /// IPv4 packets without DF fragmented instead.
    pub fragmented: u64,
    smallest: usize,
    ident: u16,
}

impl EdgeMtu {
    /// A check of `limits`, errors from `src_v4` / `src_v6`.
    pub fn new(limits: BTreeMap<IfaceId, u16>, src_v4: IpAddr, src_v6: IpAddr) -> Self {
        let smallest = limits
            .values()
            .copied()
            .min()
            .map_or(usize::MAX, usize::from);
        Self {
            limits,
            src_v4,
            src_v6,
            sent: 0,
            sent_by_flow: BTreeMap::new(),
            fragmented: 0,
            smallest,
            ident: 0,
        }
    }

    /// Whether a packet of `len` bytes may meet a smaller egress MTU (the router keeps a copy
    /// of such a packet as it arrived, to quote it).
    pub fn may_exceed(&self, len: usize) -> bool {
        len > self.smallest
    }

    /// The MTU of `iface` if `len` bytes exceed it.
    pub fn exceeded(&self, iface: IfaceId, len: usize) -> Option<u16> {
        self.limits
            .get(&iface)
            .copied()
            .filter(|&m| len > usize::from(m))
    }

    /// Handles a packet too big for `hop` (MTU `mtu`): `original` as it arrived (quoted),
    /// `forwarded` after the TTL decrement (fragmented when IPv4 without DF).
    #[allow(clippy::too_many_arguments)] // the router's whole forwarding context, as it has it
    pub fn too_big(
        &mut self,
        now: Instant,
        fwd: &Forwarding,
        original: &[u8],
        forwarded: Vec<u8>,
        hop: Hop,
        mtu: u16,
        origin: NodeId,
        out: &mut Outbox,
    ) {
        let Ok(p) = Packet::parse(original, false) else {
            return out.drop_packet(DropReason::Malformed);
        };
        let (df, src) = match p.ip {
            IpHeader::V4(h) => (h.dont_frag, self.src_v4),
            IpHeader::V6(_) => (true, self.src_v6),
        };
        if !df {
            // ip_forward lets it through; ip_finish_output fragments it.
            return match fragment_v4(&forwarded, usize::from(mtu), false) {
                Ok(frags) => {
                    self.fragmented += 1;
                    for f in frags {
                        out.forward(hop.iface, hop.addr, f, origin);
                    }
                }
                Err(_) => out.drop_packet(DropReason::Malformed),
            };
        }
        out.drop_packet(DropReason::MtuExceeded);
        let ident = self.ident;
        let Ok(Some(err)) =
            build_error(original, src, IcmpError::TooBig { mtu: mtu.into() }, ident)
        else {
            return; // Linux sends no error about this packet (see build_error)
        };
        self.ident = self.ident.wrapping_add(1);
        match local_hop(fwd, p.src(), &HashInput::from_packet(&p)) {
            Some(Hop {
                iface,
                addr: Some(a),
            }) => out.send_to(iface, a, err),
            Some(Hop { iface, addr: None }) => out.send(iface, err),
            // No route back to the source: Linux's icmp_route_lookup fails and nothing is
            // sent (the too-big packet is already counted as dropped).
            None => return,
        }
        self.sent += 1;
        let flow = flow_of_reply(&p.flow_key());
        push_time(self.sent_by_flow.entry(flow).or_default(), now);
    }
}

/// What became of one path-MTU error at a node.
#[derive(Clone, Copy, Debug, Eq, Ord, PartialEq, PartialOrd)]
pub enum Fate {
    /// Taken by the proxy holding the flow it quotes (its path MTU was lowered).
    Reached,
    /// Dropped, with the node's reason.
    Dropped(DropReason),
}

/// The path-MTU errors a router, director or proxy took or dropped.
#[derive(Clone, Debug, Default)]
pub struct IcmpTally {
    /// How many, per (error source: the router that sent it, fate).
    pub counts: BTreeMap<(IpAddr, Fate), u64>,
    /// When, per (error source, flow quoted, fate).
    pub flows: BTreeMap<(IpAddr, FlowId, Fate), Times>,
}

impl IcmpTally {
    fn mark(&mut self, now: Instant, from: IpAddr, flow: FlowId, fate: Fate) {
        *self.counts.entry((from, fate)).or_default() += 1;
        push_time(self.flows.entry((from, flow, fate)).or_default(), now);
    }

    /// Records `packet` if it carries a path-MTU error.
    pub fn note(&mut self, now: Instant, packet: &[u8], fate: Fate) {
        if let Some((from, flow)) = error_and_flow(packet) {
            self.mark(now, from, flow, fate);
        }
    }

    /// Records what a proxy reported about the packet it was just given: its path MTU
    /// lowered for a flow it holds, or an ICMP packet dropped (reported to the engine too).
    pub fn proxy_event(
        &mut self,
        now: Instant,
        packet: &[u8],
        event: &ProxyEvent,
        out: &mut Outbox,
    ) {
        use tierlab_l7::proxy::DropReason as P;
        match event {
            ProxyEvent::PathMtu { local, remote, .. } => {
                if let Some((from, _)) = error_and_flow(packet) {
                    self.mark(now, from, (*remote, *local), Fate::Reached);
                }
            }
            ProxyEvent::Dropped { reason } if pmtu_error(packet).is_some() => {
                let r = match reason {
                    P::IcmpUnknownFlow => DropReason::IcmpNoFlow,
                    P::Malformed | P::IcmpIgnored => DropReason::Malformed,
                    _ => DropReason::Tunnel,
                };
                out.drop_packet(r);
                self.note(now, packet, Fate::Dropped(r));
            }
            _ => {}
        }
    }
}

/// The MTU of the clients' link.
pub fn client_mtu(s: &Scenario) -> u16 {
    s.topology.client_mtu.unwrap_or(s.topology.mtu)
}

/// The clients' link: `link` with the clients' MTU.
pub fn client_link(s: &Scenario, link: LinkSpec) -> LinkSpec {
    LinkSpec {
        mtu: client_mtu(s),
        ..link
    }
}

/// Sets up the egress MTU check of `internet` toward the clients (interface `to_clients`;
/// errors from `src_v4` / `src_v6`, its edge addresses) and the network's watch of the errors
/// it sends, when the clients' link is smaller than the others (otherwise nothing changes).
pub fn install(
    net: &mut Network,
    internet: NodeId,
    s: &Scenario,
    to_clients: IfaceId,
    src_v4: IpAddr,
    src_v6: IpAddr,
) {
    let mtu = client_mtu(s);
    if mtu >= s.topology.mtu {
        return;
    }
    if let Some(n) = net.node_mut::<RouterNode>(internet) {
        n.mtu = Some(Box::new(EdgeMtu::new(
            BTreeMap::from([(to_clients, mtu)]),
            src_v4,
            src_v6,
        )));
    }
    net.watch(Box::new(move |p| {
        pmtu_error(p)
            .and_then(error_source)
            .is_some_and(|a| a == src_v4 || a == src_v6)
    }));
}

/// Every path-MTU error of a run and what became of it, gathered from the nodes.
#[derive(Clone, Debug, Default)]
pub struct IcmpLedger {
    /// The clients' link MTU.
    pub client_mtu: u16,
    /// Errors sent (`internet`).
    pub sent: u64,
    /// IPv4 packets fragmented instead.
    pub fragmented: u64,
    /// Errors nodes took or dropped: (node name, fate) → count.
    pub at_nodes: BTreeMap<(String, Fate), u64>,
    /// Errors the network dropped: (node name, reason) → count.
    pub network_drops: BTreeMap<(String, DropReason), u64>,
    /// Errors still travelling at the end.
    pub in_flight: u64,
    /// What happened to the errors about each flow.
    pub flows: BTreeMap<FlowId, FlowMarks>,
}

/// When errors about one flow were sent, reached its proxy, or were dropped by a node without
/// state for it (a director without an entry, a proxy not holding it): distinct instants, in
/// time order.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct FlowMarks {
    /// Sent by `internet`.
    pub sent: Vec<Instant>,
    /// Taken by the proxy holding the flow.
    pub reached: Vec<Instant>,
    /// Dropped for want of state (`icmp_no_flow`).
    pub misrouted: Vec<Instant>,
}

fn any_within(v: &[Instant], from: Instant, to: Instant) -> bool {
    let i = v.partition_point(|&t| t < from);
    v.get(i).is_some_and(|&t| t <= to)
}

/// Gathers the errors of the lab's run (nodes of stack kind `S`).
pub fn collect<S: TcpStack + 'static>(lab: &Lab) -> IcmpLedger {
    let net = &lab.net;
    let s = lab.scenario();
    let mut ledger = IcmpLedger {
        client_mtu: client_mtu(s),
        ..IcmpLedger::default()
    };
    let Some(edge) = net
        .node::<RouterNode>(lab.nodes.internet)
        .and_then(|n| n.mtu.as_deref())
    else {
        return ledger;
    };
    let ours = [edge.src_v4, edge.src_v6];
    ledger.sent = edge.sent;
    ledger.fragmented = edge.fragmented;
    for (flow, times) in &edge.sent_by_flow {
        let f = ledger.flows.entry(*flow).or_default();
        f.sent.extend(times.iter().map(|&(t, _)| t));
    }
    let n = &lab.nodes;
    let ids = n
        .routers
        .iter()
        .chain([&n.internet])
        .chain(&n.directors)
        .chain(&n.proxies);
    let mut all: Vec<NodeId> = ids.copied().collect();
    all.sort_unstable();
    for id in all {
        let tally = net
            .node::<RouterNode>(id)
            .map(|r| &r.icmp)
            .or_else(|| net.node::<DirectorNode>(id).map(|d| &d.icmp))
            .or_else(|| net.node::<ProxyNode<S>>(id).map(|p| &p.icmp));
        let Some(tally) = tally else { continue };
        let name = net.node_name(id).unwrap_or("?");
        for (&(from, fate), &count) in &tally.counts {
            if ours.contains(&from) {
                *ledger.at_nodes.entry((name.to_owned(), fate)).or_default() += count;
            }
        }
        for (&(from, flow, fate), times) in &tally.flows {
            let list = match fate {
                _ if !ours.contains(&from) => continue,
                Fate::Reached => &mut ledger.flows.entry(flow).or_default().reached,
                Fate::Dropped(DropReason::IcmpNoFlow) => {
                    &mut ledger.flows.entry(flow).or_default().misrouted
                }
                Fate::Dropped(_) => continue,
            };
            list.extend(times.iter().map(|&(t, _)| t));
        }
    }
    for f in ledger.flows.values_mut() {
        for v in [&mut f.sent, &mut f.reached, &mut f.misrouted] {
            v.sort_unstable();
            v.dedup();
        }
    }
    if let Some(w) = net.watched() {
        for (id, reason, count) in w.drops.iter() {
            let name = net.node_name(id).unwrap_or("?").to_owned();
            *ledger.network_drops.entry((name, reason)).or_default() += count;
        }
        ledger.in_flight = w.in_flight;
    }
    ledger
}

/// The `icmp` section of a run report (see `docs/report.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IcmpReport {
    /// MTU of the link between `internet` and the clients.
    pub client_mtu: u16,
    /// Errors `internet` sent (to the VIPs: the sources of the too-big packets).
    pub sent: u64,
    /// Errors that reached the proxy holding the flow they quote.
    pub reached_owner: u64,
    /// Errors dropped on the way (`sent = reached_owner + dropped + in_flight`).
    pub dropped: u64,
    /// Dropped errors per reason (`icmp_no_flow`: a director without a connection entry for
    /// the flow, or a proxy that does not hold it; the network's reasons otherwise).
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Dropped errors per node (the one that dropped it; for the network's drops, as in the
    /// drop counters: the sender, or the receiving node when it is down).
    pub dropped_by_node: BTreeMap<String, u64>,
    /// Errors still travelling at the end.
    pub in_flight: u64,
    /// IPv4 packets without DF that `internet` fragmented instead of answering.
    pub fragmented: u64,
    /// Flows (client address and port, VIP and port) errors were sent about.
    pub flows: u64,
    /// Of those, flows at least one of whose errors reached the proxy holding it.
    pub flows_reached_owner: u64,
    /// Connections of the run that broke by `icmp_misrouted` (see the report module), whether
    /// or not an event is blamed for them.
    pub broken_misrouted: u64,
}

impl IcmpLedger {
    /// Whether connection `r` broke because its errors never reached its proxy: it timed out
    /// (the client's read or connect timeout, or TCP giving up), `internet` sent at least one
    /// error about its flow while it was open, none of them reached the proxy holding the
    /// flow, and at least one was dropped by a node without state for it (a director without
    /// a connection entry, or a proxy that does not hold it).
    pub fn misrouted(&self, r: &ConnRecord) -> bool {
        if r.outcome != tierlab_l7::client::Outcome::TimedOut {
            return false;
        }
        let Some(f) = self.flows.get(&(r.src, r.vip)) else {
            return false;
        };
        let live = |v: &[Instant]| any_within(v, r.started, r.ended);
        live(&f.sent) && !live(&f.reached) && live(&f.misrouted)
    }

    /// The report section, with `records` the run's connections.
    pub fn report(&self, records: &[ConnRecord]) -> IcmpReport {
        let mut rep = IcmpReport {
            client_mtu: self.client_mtu,
            sent: self.sent,
            in_flight: self.in_flight,
            fragmented: self.fragmented,
            flows: self.flows.values().filter(|f| !f.sent.is_empty()).count() as u64,
            flows_reached_owner: self
                .flows
                .values()
                .filter(|f| !f.sent.is_empty() && !f.reached.is_empty())
                .count() as u64,
            broken_misrouted: records.iter().filter(|r| self.misrouted(r)).count() as u64,
            ..IcmpReport::default()
        };
        let drops = self
            .at_nodes
            .iter()
            .filter_map(|((node, fate), &n)| match fate {
                Fate::Reached => {
                    rep.reached_owner += n;
                    None
                }
                Fate::Dropped(r) => Some(((node.clone(), *r), n)),
            })
            .collect::<Vec<_>>();
        let network = self.network_drops.iter().map(|(k, &n)| (k.clone(), n));
        for ((node, reason), n) in drops.into_iter().chain(network) {
            rep.dropped += n;
            *rep.dropped_by_reason
                .entry(reason.name().to_owned())
                .or_default() += n;
            *rep.dropped_by_node.entry(node).or_default() += n;
        }
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_ecmp::{
        Algorithm, HashConfig, HashFields, HashSeed, NextHop, NextHopGroup, NextHopId, Policy,
        Prefix, Router,
    };
    use tierlab_ipip::{EncapParams, encapsulate};
    use tierlab_net::Node;
    use tierlab_wire::frag::{Reassembler, Reassembly};
    use tierlab_wire::{
        Icmpv4Repr, Icmpv6Repr, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, Transport,
    };

    const EDGE: IfaceId = IfaceId(0);
    const CLIENTS: IfaceId = IfaceId(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `internet` in small: VIPs over two edge routers (policy 1), clients on interface 1
    /// (MTU 1400).
    fn internet() -> RouterNode {
        let mut router = Router::new(HashConfig::new(
            Policy::L4,
            HashFields::DEFAULT,
            HashSeed::Fixed(9),
        ));
        let mut hops = BTreeMap::new();
        let mut routes = BTreeMap::new();
        let mut add = |prefix: Prefix, members: Vec<(u32, Hop)>| {
            let group = NextHopGroup::new(
                Algorithm::HashThreshold,
                members
                    .iter()
                    .map(|&(id, _)| NextHop {
                        id: NextHopId(id),
                        weight: 1,
                    })
                    .collect(),
                Instant::ZERO,
            )
            .unwrap();
            router.add_route(prefix, group);
            routes.insert(
                prefix,
                members.iter().map(|&(id, _)| NextHopId(id)).collect(),
            );
            for (id, hop) in members {
                hops.insert(NextHopId(id), hop);
            }
        };
        let edge = |a: &str| Hop {
            iface: EDGE,
            addr: Some(ip(a)),
        };
        let clients = Hop {
            iface: CLIENTS,
            addr: None,
        };
        add(
            Prefix::new(ip("198.51.100.1"), 32).unwrap(),
            vec![(0, edge("100.64.0.1")), (1, edge("100.64.0.2"))],
        );
        add(
            Prefix::new(ip("2001:db8::c633:6401"), 128).unwrap(),
            vec![(2, edge("2001:db8:ff::1")), (3, edge("2001:db8:ff::2"))],
        );
        add(
            Prefix::new(ip("203.0.113.0"), 24).unwrap(),
            vec![(4, clients)],
        );
        add(
            Prefix::new(ip("2001:db8::cb00:7100"), 120).unwrap(),
            vec![(5, clients)],
        );
        let mut node = RouterNode::new(Forwarding {
            router,
            hops,
            routes,
        });
        node.mtu = Some(Box::new(EdgeMtu::new(
            BTreeMap::from([(CLIENTS, 1400)]),
            ip("100.64.0.254"),
            ip("2001:db8:ff::fe"),
        )));
        node
    }

    fn segment(
        src: &str,
        dst: &str,
        sport: u16,
        dport: u16,
        len: usize,
        df: bool,
        ttl: u8,
    ) -> Vec<u8> {
        let t = TcpRepr {
            sport,
            dport,
            seq: TcpSeq(1000),
            ack: TcpSeq(1),
            flags: TcpFlags::ACK,
            window: 1000,
            ..TcpRepr::default()
        };
        PacketBuilder::new(ip(src), ip(dst))
            .unwrap()
            .ttl(ttl)
            .dont_frag(df)
            .tcp(&t, &vec![0x61; len])
            .unwrap()
    }

    fn feed(node: &mut RouterNode, packet: Vec<u8>) -> Outbox {
        let mut out = Outbox::new();
        node.handle_packet(Instant::from_secs(1), EDGE, packet, NodeId(7), &mut out);
        out
    }

    /// The next hop `internet` picks for the client's own packets of a flow.
    fn flow_hop(node: &RouterNode, request: &[u8]) -> Option<IpAddr> {
        let sel = node
            .fwd
            .router
            .select(&HashInput::from_packet(
                &Packet::parse(request, false).unwrap(),
            ))
            .unwrap();
        node.fwd.hops[&sel.id].addr
    }

    #[test]
    fn df_packet_too_big_is_answered_with_frag_needed_by_the_flows_router() {
        let mut routers = std::collections::BTreeSet::new();
        for sport in 40_000u16..40_008 {
            let mut node = internet();
            let reply = segment("198.51.100.1", "203.0.113.7", 80, sport, 1460, true, 63);
            let out = feed(&mut node, reply.clone());
            assert_eq!(out.drops(), [DropReason::MtuExceeded]);
            let sent: Vec<_> = out.sent().collect();
            assert_eq!(sent.len(), 1);
            let (iface, hop, err) = sent[0];
            assert_eq!(iface, EDGE);
            let request = segment("203.0.113.7", "198.51.100.1", sport, 80, 10, true, 64);
            assert_eq!(hop, flow_hop(&node, &request), "back by the flow's router");
            routers.insert(hop);
            let p = Packet::parse(err, true).unwrap();
            assert_eq!((p.src(), p.dst()), (ip("100.64.0.254"), ip("198.51.100.1")));
            assert_eq!(
                p.transport,
                Transport::Icmpv4(Icmpv4Repr::DestUnreachable {
                    code: 4,
                    next_hop_mtu: 1400
                })
            );
            // The quote is the packet as it arrived (TTL 63, not decremented).
            assert_eq!(&p.payload[..28], &reply[..28]);
            let edge = node.mtu.as_ref().unwrap();
            let flow = (
                SocketAddr::new(ip("203.0.113.7"), sport),
                SocketAddr::new(ip("198.51.100.1"), 80),
            );
            assert_eq!(edge.sent, 1);
            assert_eq!(
                edge.sent_by_flow,
                BTreeMap::from([(flow, vec![(Instant::from_secs(1), 1)])])
            );
        }
        assert_eq!(
            routers.len(),
            2,
            "both edge routers were picked: {routers:?}"
        );
    }

    #[test]
    fn ipv6_packet_too_big_is_always_answered() {
        let mut node = internet();
        let reply = segment(
            "2001:db8::c633:6401",
            "2001:db8::cb00:7107",
            80,
            40_000,
            1440,
            true,
            63,
        );
        let out = feed(&mut node, reply);
        assert_eq!(out.drops(), [DropReason::MtuExceeded]);
        let (_, hop, err) = out.sent().next().unwrap();
        assert!(matches!(hop, Some(IpAddr::V6(_))));
        let p = Packet::parse(err, true).unwrap();
        assert_eq!(p.src(), ip("2001:db8:ff::fe"));
        assert_eq!(
            p.transport,
            Transport::Icmpv6(Icmpv6Repr::PacketTooBig { mtu: 1400 })
        );
        assert_eq!(err.len(), 1280, "quoted up to the IPv6 minimum MTU");
    }

    #[test]
    fn packet_without_df_is_fragmented_after_the_ttl_decrement() {
        let mut node = internet();
        let reply = segment("198.51.100.1", "203.0.113.7", 80, 40_000, 1460, false, 63);
        let out = feed(&mut node, reply.clone());
        assert!(out.drops().is_empty());
        let frags: Vec<Vec<u8>> = out
            .sent()
            .map(|(i, _, b)| {
                assert_eq!(i, CLIENTS);
                b.to_vec()
            })
            .collect();
        assert_eq!(frags.len(), 2);
        assert!(frags.iter().all(|f| f.len() <= 1400 && f[8] == 62));
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(Instant::ZERO, &frags[0]).unwrap(),
            Reassembly::Pending
        );
        let Reassembly::Complete(whole) = r.push(Instant::ZERO, &frags[1]).unwrap() else {
            panic!("not reassembled");
        };
        let mut expected = reply;
        assert!(tierlab_wire::decrement_ttl(&mut expected));
        assert_eq!(whole, expected);
        assert_eq!(node.mtu.as_ref().unwrap().fragmented, 1);
        assert_eq!(node.mtu.as_ref().unwrap().sent, 0);
    }

    #[test]
    fn fitting_packets_pass_and_ttl_comes_first() {
        let mut node = internet();
        let small = segment("198.51.100.1", "203.0.113.7", 80, 40_000, 1360, true, 63);
        let out = feed(&mut node, small.clone());
        let (iface, _, fwd) = out.sent().next().unwrap();
        assert_eq!((iface, fwd.len(), fwd[8]), (CLIENTS, 1400, 62));
        assert!(out.drops().is_empty());
        // TTL expiring: dropped for the TTL, no "fragmentation needed" (ip_forward's order).
        let dying = segment("198.51.100.1", "203.0.113.7", 80, 40_000, 1460, true, 1);
        let out = feed(&mut node, dying);
        assert_eq!(out.drops(), [DropReason::Ttl]);
        assert_eq!(out.sent().count(), 0);
    }

    #[test]
    fn pmtu_errors_are_recognised_bare_and_tunnelled() {
        let reply = segment("198.51.100.1", "203.0.113.7", 80, 40_000, 1460, true, 63);
        let err = build_error(
            &reply,
            ip("100.64.0.254"),
            IcmpError::TooBig { mtu: 1400 },
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(pmtu_error(&err), Some(&err[..]));
        let wrapped = encapsulate(
            &err,
            &EncapParams::ipvs(ip("172.17.0.1"), ip("172.18.0.4"), false, 1),
        )
        .unwrap();
        assert_eq!(pmtu_error(&wrapped), Some(&err[..]));
        assert_eq!(
            error_and_flow(&wrapped),
            Some((
                ip("100.64.0.254"),
                (
                    SocketAddr::new(ip("203.0.113.7"), 40_000),
                    SocketAddr::new(ip("198.51.100.1"), 80)
                )
            ))
        );
        let unreachable = build_error(&reply, ip("100.64.0.254"), IcmpError::PortUnreachable, 3)
            .unwrap()
            .unwrap();
        assert_eq!(pmtu_error(&unreachable), None);
        assert_eq!(pmtu_error(&reply), None);
        assert_eq!(pmtu_error(&[0x45; 10]), None);
        assert_eq!(pmtu_error(&[]), None);
        let v6 = segment(
            "2001:db8::c633:6401",
            "2001:db8::cb00:7107",
            80,
            40_000,
            1440,
            true,
            63,
        );
        let ptb = build_error(
            &v6,
            ip("2001:db8:ff::fe"),
            IcmpError::TooBig { mtu: 1400 },
            0,
        )
        .unwrap()
        .unwrap();
        assert!(pmtu_error(&ptb).is_some());
    }
}
