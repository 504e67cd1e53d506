//! The lab's nodes as `tierlab-net` [`Node`]s: adapters around each tier's sans-IO state
//! machine. They add what a host's kernel adds around an application: a routing decision per
//! packet (which interface, which next hop), TTL handling for routers, and a timer armed at
//! the tier's next deadline. No tier logic lives here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tierlab_ecmp::{
    Algorithm, GroupUpdate, HashInput, NextHop, NextHopGroup, NextHopId, Prefix, Router,
};
use tierlab_l4::{Director, Verdict};
use tierlab_l7::{BackendServer, ClientHost, Proxy, TcpStack};
use tierlab_net::{DropReason, IfaceId, Node, NodeId, Outbox};
use tierlab_wire::view::IpView;
use tierlab_wire::{Instant, SimRng, decrement_ttl};

use crate::icmp::{EdgeMtu, Fate, IcmpTally};

/// Keeps one engine timer armed at a sans-IO node's next deadline. A node's deadline may move
/// earlier or later at every input; the earliest is kept armed, and a timer that is no longer
/// the latest armed one is ignored when it fires (an early wake-up is harmless: sans-IO nodes
/// treat spurious `handle_timeout` calls as no-ops).
#[derive(Debug, Default)]
pub struct Alarm {
    token: u64,
    armed: Option<Instant>,
}

impl Alarm {
    /// Arms the timer for `next` if it is earlier than what is armed.
    pub fn update(&mut self, next: Option<Instant>, out: &mut Outbox) {
        if let Some(t) = next
            && self.armed.is_none_or(|a| t < a)
        {
            self.token += 1;
            self.armed = Some(t);
            out.set_timer(t, self.token);
        }
    }

    /// Whether a fired timer is the armed one (then nothing is armed any more).
    pub fn fired(&mut self, token: u64) -> bool {
        if token == self.token {
            self.armed = None;
            true
        } else {
            false
        }
    }
}

/// Where a router sends the packets of one next hop.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Hop {
    /// Interface.
    pub iface: IfaceId,
    /// Next-hop address on that interface's segment (`None` on a point-to-point link).
    pub addr: Option<IpAddr>,
}

/// A Linux multipath FIB ([`Router`]) whose next-hop ids map to interfaces and gateways.
#[derive(Clone, Debug)]
pub struct Forwarding {
    /// The FIB and hash configuration.
    pub router: Router,
    /// Next-hop id → where to send.
    pub hops: BTreeMap<NextHopId, Hop>,
    /// The members of each multipath route, in the order the route lists them.
    pub routes: BTreeMap<Prefix, Vec<NextHopId>>,
}

impl Forwarding {
    /// Appends a next hop to a multipath route (Linux appends a new gateway at the end).
    ///
    /// # Errors
    /// The route does not exist or the group refuses the member.
    pub fn add_member(
        &mut self,
        prefix: Prefix,
        hop: Hop,
        now: Instant,
    ) -> Result<(), tierlab_ecmp::EcmpError> {
        let id = NextHopId(self.hops.keys().map(|k| k.0 + 1).max().unwrap_or(0));
        self.router
            .update_route(&prefix, &GroupUpdate::Add(NextHop { id, weight: 1 }), now)?;
        self.hops.insert(id, hop);
        self.routes.entry(prefix).or_default().push(id);
        Ok(())
    }

    /// Removes the next hop with gateway `addr` from a multipath route; `Ok(false)` if it is
    /// not a member.
    ///
    /// # Errors
    /// The group refuses (e.g. it would become empty).
    pub fn remove_member(
        &mut self,
        prefix: Prefix,
        addr: IpAddr,
        now: Instant,
    ) -> Result<bool, tierlab_ecmp::EcmpError> {
        let Some(members) = self.routes.get_mut(&prefix) else {
            return Ok(false);
        };
        let Some(pos) = members
            .iter()
            .position(|id| self.hops.get(id).is_some_and(|h| h.addr == Some(addr)))
        else {
            return Ok(false);
        };
        let id = members[pos];
        self.router
            .update_route(&prefix, &GroupUpdate::Remove(id), now)?;
        members.remove(pos);
        Ok(true)
    }

    /// Makes `hops` the members of the route to `prefix`, in that order (a next hop that
    /// stays keeps its id, so a resilient group keeps its buckets); no hops removes the route.
    ///
    /// # Errors
    /// The group refuses the members.
    pub fn set_members(
        &mut self,
        prefix: Prefix,
        hops: &[Hop],
        algorithm: Algorithm,
        now: Instant,
    ) -> Result<(), tierlab_ecmp::EcmpError> {
        let current = self.routes.get(&prefix).cloned().unwrap_or_default();
        let mut ids = Vec::with_capacity(hops.len());
        let mut next = self.hops.keys().map(|k| k.0 + 1).max().unwrap_or(0);
        for hop in hops {
            let existing = current
                .iter()
                .copied()
                .find(|id| self.hops.get(id) == Some(hop) && !ids.contains(id));
            let id = existing.unwrap_or_else(|| {
                let id = NextHopId(next);
                next += 1;
                id
            });
            self.hops.insert(id, *hop);
            ids.push(id);
        }
        if ids == current {
            return Ok(());
        }
        if ids.is_empty() {
            // The route is gone; its entry stays, empty, so it can come back.
            let _ = self.router.remove_route(&prefix);
            self.routes.insert(prefix, ids);
            return Ok(());
        }
        let members: Vec<NextHop> = ids.iter().map(|&id| NextHop { id, weight: 1 }).collect();
        if current.is_empty() {
            self.router
                .add_route(prefix, NextHopGroup::new(algorithm, members, now)?);
        } else {
            self.router
                .update_route(&prefix, &GroupUpdate::Replace(members), now)?;
        }
        self.routes.insert(prefix, ids);
        Ok(())
    }

    /// The same routes on a new router (another seed or hash policy), members in their
    /// current order.
    ///
    /// # Errors
    /// A group refuses its members.
    pub fn rebuild(
        &mut self,
        mut router: Router,
        algorithm: Algorithm,
        now: Instant,
    ) -> Result<(), tierlab_ecmp::EcmpError> {
        for (prefix, members) in self.routes.iter().filter(|(_, m)| !m.is_empty()) {
            let hops = members
                .iter()
                .map(|&id| NextHop { id, weight: 1 })
                .collect();
            router.add_route(*prefix, NextHopGroup::new(algorithm, hops, now)?);
        }
        self.router = router;
        Ok(())
    }

    /// Where the packet goes (recording the use of a resilient bucket at `now`).
    fn hop(&mut self, input: &HashInput, now: Instant) -> Option<Hop> {
        let sel = self.router.forward(input, now).ok()?;
        self.hops.get(&sel.id).copied()
    }
}

/// An IP router. It decrements the TTL (dropping at 1, reason [`DropReason::Ttl`]) and
/// forwards the packet unchanged otherwise, keeping its origin. With an egress MTU check
/// ([`EdgeMtu`]), a packet too big for its interface is answered with an ICMP error or
/// fragmented instead (see [`crate::icmp`]).
#[derive(Debug)]
pub struct RouterNode {
    /// Its FIB.
    pub fwd: Forwarding,
    /// Egress MTU check (`None`: every link it forwards to takes what reaches it).
    pub mtu: Option<Box<EdgeMtu>>,
    /// Path-MTU errors it dropped.
    pub icmp: IcmpTally,
}

impl RouterNode {
    /// A router forwarding by `fwd`, without an egress MTU check.
    pub fn new(fwd: Forwarding) -> Self {
        Self {
            fwd,
            mtu: None,
            icmp: IcmpTally::default(),
        }
    }

    fn drop_packet(&mut self, now: Instant, packet: &[u8], reason: DropReason, out: &mut Outbox) {
        self.icmp.note(now, packet, Fate::Dropped(reason));
        out.drop_packet(reason);
    }
}

impl Node for RouterNode {
    fn handle_packet(
        &mut self,
        now: Instant,
        _iface: IfaceId,
        mut packet: Vec<u8>,
        origin: NodeId,
        out: &mut Outbox,
    ) {
        let Ok(input) = HashInput::from_bytes(&packet) else {
            return out.drop_packet(DropReason::Malformed);
        };
        // Linux checks the egress MTU after the TTL and quotes the packet as it arrived.
        let original = self
            .mtu
            .as_ref()
            .filter(|m| m.may_exceed(packet.len()))
            .map(|_| packet.clone());
        if !decrement_ttl(&mut packet) {
            return self.drop_packet(now, &packet, DropReason::Ttl, out);
        }
        match self.fwd.hop(&input, now) {
            Some(hop) => {
                if let (Some(orig), Some(check)) = (original, self.mtu.as_deref_mut())
                    && let Some(mtu) = check.exceeded(hop.iface, packet.len())
                {
                    return check.too_big(now, &self.fwd, &orig, packet, hop, mtu, origin, out);
                }
                out.forward(hop.iface, hop.addr, packet, origin);
            }
            None => self.drop_packet(now, &packet, DropReason::NoRoute, out),
        }
    }

    fn handle_timer(&mut self, now: Instant, _token: u64, _out: &mut Outbox) {
        self.fwd.router.handle_timeout(now);
    }
}

/// An L4 director: every packet goes to the IPVS model; what it forwards leaves on the core
/// interface to the real server's tunnel address; ICMP errors it answers go back through
/// `reply_via`.
#[derive(Debug)]
pub struct DirectorNode {
    /// The IPVS model.
    pub director: Director,
    /// Interface towards routers and proxies.
    pub core: IfaceId,
    /// Gateway for packets the director itself sends back to clients (ICMP errors).
    pub reply_via: Option<IpAddr>,
    /// Path-MTU errors it dropped.
    pub icmp: IcmpTally,
    alarm: Alarm,
}

impl DirectorNode {
    /// A director node on interface `core`.
    pub fn new(director: Director, core: IfaceId, reply_via: Option<IpAddr>) -> Self {
        Self {
            director,
            core,
            reply_via,
            icmp: IcmpTally::default(),
            alarm: Alarm::default(),
        }
    }
}

impl Node for DirectorNode {
    fn handle_packet(
        &mut self,
        now: Instant,
        _iface: IfaceId,
        packet: Vec<u8>,
        _origin: NodeId,
        out: &mut Outbox,
    ) {
        match self.director.handle_packet(now, &packet) {
            Verdict::Forward {
                dest_addr, packets, ..
            } => {
                for p in packets {
                    out.send_to(self.core, dest_addr, p);
                }
            }
            Verdict::Drop { reason, reply } => {
                let reason = director_drop(reason);
                self.icmp.note(now, &packet, Fate::Dropped(reason));
                out.drop_packet(reason);
                if let (Some(r), Some(via)) = (reply, self.reply_via) {
                    out.send_to(self.core, via, r);
                }
            }
        }
        self.alarm.update(self.director.poll_timeout(), out);
        tierlab_wire::pool::give(packet);
    }

    fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox) {
        if self.alarm.fired(token) {
            self.director.handle_timeout(now);
        }
        self.alarm.update(self.director.poll_timeout(), out);
    }
}

/// The engine's name for a director's drop reason.
fn director_drop(r: tierlab_l4::DropReason) -> DropReason {
    use tierlab_l4::DropReason as D;
    match r {
        D::Malformed | D::Fragment | D::UnsupportedProtocol => DropReason::Malformed,
        D::NotLocal | D::NoService | D::NotVirtualService => DropReason::UnknownVip,
        D::NoDestination => DropReason::NoDestination,
        D::NotSyn => DropReason::NoEntry,
        D::DestUnavailable => DropReason::DestUnavailable,
        D::IcmpNoEntry => DropReason::IcmpNoFlow,
        D::TooBig | D::MtuBelowMinimum => DropReason::TooBig,
        D::TtlExpired => DropReason::Ttl,
        _ => DropReason::Other,
    }
}

/// A host's routes: prefixes reached directly on an interface (the next hop is the
/// destination itself), then a default multipath route through gateways.
#[derive(Clone, Debug)]
pub struct HostRoutes {
    /// On-link prefixes.
    pub direct: Vec<(Prefix, IfaceId)>,
    /// Everything else.
    pub default: Forwarding,
}

impl HostRoutes {
    fn send(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        let Ok(view) = IpView::new_checked(&packet, false) else {
            return out.drop_packet(DropReason::Malformed);
        };
        let dst = view.dst();
        if let Some((_, iface)) = self.direct.iter().find(|(pfx, _)| pfx.contains(dst)) {
            return out.send_to(*iface, dst, packet);
        }
        let Ok(input) = HashInput::from_view(&view) else {
            return out.drop_packet(DropReason::Malformed);
        };
        match self.default.hop(&input, now) {
            Some(Hop {
                iface,
                addr: Some(a),
            }) => out.send_to(iface, a, packet),
            Some(Hop { iface, addr: None }) => out.send(iface, packet),
            None => out.drop_packet(DropReason::NoRoute),
        }
    }
}

/// An L7 proxy host: the proxy, and the host's routes (backends directly on the backend
/// segment, everything else through the routers).
#[derive(Debug)]
pub struct ProxyNode<S: TcpStack> {
    /// The proxy.
    pub proxy: Proxy<S>,
    /// Routes.
    pub routes: HostRoutes,
    /// Path-MTU errors it took (for a flow it holds) or dropped.
    pub icmp: IcmpTally,
    alarm: Alarm,
}

impl<S: TcpStack> ProxyNode<S> {
    /// A proxy host.
    pub fn new(proxy: Proxy<S>, routes: HostRoutes) -> Self {
        Self {
            proxy,
            routes,
            icmp: IcmpTally::default(),
            alarm: Alarm::default(),
        }
    }

    /// Sends what the proxy sends; `packet` is the one it was just given, if any (what the
    /// proxy reports about it is recorded).
    fn flush(&mut self, now: Instant, packet: Option<&[u8]>, out: &mut Outbox) {
        while let Some(p) = self.proxy.poll_transmit() {
            self.routes.send(now, p, out);
        }
        while let Some(e) = self.proxy.poll_event() {
            if let Some(p) = packet {
                self.icmp.proxy_event(now, p, &e, out);
            }
        }
        self.alarm.update(self.proxy.poll_timeout(), out);
    }
}

impl<S: TcpStack + 'static> Node for ProxyNode<S> {
    fn handle_packet(
        &mut self,
        now: Instant,
        _iface: IfaceId,
        packet: Vec<u8>,
        _origin: NodeId,
        out: &mut Outbox,
    ) {
        self.proxy.handle_packet(now, &packet);
        self.flush(now, Some(&packet), out);
        tierlab_wire::pool::give(packet);
    }

    fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox) {
        if self.alarm.fired(token) {
            self.proxy.handle_timeout(now);
        }
        self.flush(now, None, out);
    }
}

/// A backend host on the backend segment: replies go straight to the proxies.
#[derive(Debug)]
pub struct BackendNode<S: TcpStack> {
    /// The server.
    pub server: BackendServer<S>,
    /// Its only interface.
    pub iface: IfaceId,
    alarm: Alarm,
}

impl<S: TcpStack> BackendNode<S> {
    /// A backend host.
    pub fn new(server: BackendServer<S>, iface: IfaceId) -> Self {
        Self {
            server,
            iface,
            alarm: Alarm::default(),
        }
    }

    fn flush(&mut self, out: &mut Outbox) {
        while let Some(p) = self.server.poll_transmit() {
            let dst = IpView::new_checked(&p, false).map(|v| v.dst());
            match dst {
                Ok(d) => out.send_to(self.iface, d, p),
                Err(_) => out.drop_packet(DropReason::Malformed),
            }
        }
        self.alarm.update(self.server.poll_timeout(), out);
    }
}

impl<S: TcpStack + 'static> Node for BackendNode<S> {
    fn handle_packet(
        &mut self,
        now: Instant,
        _iface: IfaceId,
        packet: Vec<u8>,
        _origin: NodeId,
        out: &mut Outbox,
    ) {
        if self.server.handle_packet(now, &packet).is_err() {
            out.drop_packet(DropReason::NoSocket);
        }
        tierlab_wire::pool::give(packet);
        self.flush(out);
    }

    fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox) {
        if self.alarm.fired(token) {
            self.server.handle_timeout(now);
        }
        self.flush(out);
    }
}

/// The clients' host: every user address, one uplink. The origin of each packet it receives
/// is passed to the client as the tag of who sent it (the node id), so a reset says which
/// node reset the connection.
#[derive(Debug)]
pub struct ClientNode<S: TcpStack> {
    /// The workload.
    pub client: ClientHost<S>,
    /// The uplink.
    pub iface: IfaceId,
    /// The workload's own random stream.
    pub rng: SimRng,
    alarm: Alarm,
}

impl<S: TcpStack> ClientNode<S> {
    /// A client host.
    pub fn new(client: ClientHost<S>, iface: IfaceId, rng: SimRng) -> Self {
        Self {
            client,
            iface,
            rng,
            alarm: Alarm::default(),
        }
    }

    fn flush(&mut self, out: &mut Outbox) {
        while let Some(p) = self.client.poll_transmit() {
            out.send(self.iface, p);
        }
        self.alarm.update(self.client.poll_timeout(), out);
    }

    /// Opens the first connections (call once, at the start).
    pub fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.client.fill(now, &mut self.rng);
        self.flush(out);
    }
}

impl<S: TcpStack + 'static> Node for ClientNode<S> {
    fn handle_packet(
        &mut self,
        now: Instant,
        _iface: IfaceId,
        packet: Vec<u8>,
        origin: NodeId,
        out: &mut Outbox,
    ) {
        if self
            .client
            .handle_packet(now, origin.0, &packet, &mut self.rng)
            .is_err()
        {
            out.drop_packet(DropReason::NoSocket);
        }
        tierlab_wire::pool::give(packet);
        self.flush(out);
    }

    fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox) {
        if token == u64::MAX {
            // The start signal (see `Lab::start`).
            self.client.fill(now, &mut self.rng);
        } else if self.alarm.fired(token) {
            self.client.handle_timeout(now, &mut self.rng);
        }
        self.flush(out);
    }
}
