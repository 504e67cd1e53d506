//! The network: nodes, links and segments, delivery, accounting and tracing.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tierlab_wire::pcap::PcapWriter;
use tierlab_wire::{Duration, Instant, WireError};

use crate::drop::{DropCounters, DropReason};
use crate::ids::{IfaceId, LinkId, NodeId};
use crate::node::{Node, Outbox, Send};
use crate::queue::EventQueue;
use crate::trace::TraceFilter;

/// Latency and MTU of a link or segment.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way delay.
    pub latency: Duration,
    /// Largest packet (IP MTU, as Linux counts it: the IP header included, no link header).
    pub mtu: u16,
}

impl Default for LinkSpec {
    /// 50 µs and 1500 bytes: a data-centre Ethernet hop.
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(50),
            mtu: 1500,
        }
    }
}

/// Why a topology change was refused.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum NetError {
    /// No such node.
    #[error("no node {0}")]
    NoNode(NodeId),
    /// No such link or segment.
    #[error("no link {0}")]
    NoLink(LinkId),
    /// The link is point-to-point; attaching more nodes needs a segment.
    #[error("{0} is a point-to-point link, not a segment")]
    NotASegment(LinkId),
    /// An address is already owned by another node on this segment.
    #[error("address {addr} already owned on {link} by {owner}")]
    AddressTaken {
        /// The segment.
        link: LinkId,
        /// The address.
        addr: IpAddr,
        /// Its owner.
        owner: NodeId,
    },
    /// A node has more interfaces than an [`IfaceId`] counts.
    #[error("{0} has too many interfaces")]
    TooManyInterfaces(NodeId),
    /// Writing the pcap failed.
    #[error("pcap: {0}")]
    Pcap(WireError),
}

/// Packet accounting of a run so far.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct Accounting {
    /// Packets nodes handed to the network.
    pub sent: u64,
    /// Packets the network handed to a node.
    pub delivered: u64,
    /// Packets the network dropped (link down, node down, too big, no neighbour...).
    pub dropped_in_network: u64,
    /// Packets still travelling.
    pub in_flight: u64,
    /// Packets nodes reported dropping themselves (after delivery, or held and discarded).
    pub dropped_by_nodes: u64,
}

impl Accounting {
    /// The invariant: every packet sent is delivered, dropped by the network, or in flight.
    pub fn balanced(&self) -> bool {
        self.sent == self.delivered + self.dropped_in_network + self.in_flight
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Attachment {
    node: NodeId,
    iface: IfaceId,
}

#[derive(Debug)]
enum Medium {
    PointToPoint([Attachment; 2]),
    Segment {
        /// Who owns each address (looked up per packet, never iterated: the hash order
        /// reaches no output).
        owners: Owners,
    },
}

/// Address owners on a segment: one map per family keyed by the address's bits, and in front
/// of the maps a table indexed by the address's last byte that answers without hashing when
/// one address alone on the segment ends in that byte (the common case: hosts numbered 1, 2,
/// 3, … on each network). A lookup cost a few percent of a whole run.
#[derive(Debug)]
struct Owners {
    v4: HashMap<u32, Attachment, FixedState>,
    v6: HashMap<u128, Attachment, FixedState>,
    by_last_byte: Box<[LastByte; 256]>,
}

/// What the segment holds for one last address byte.
#[derive(Clone, Copy, Debug)]
enum LastByte {
    /// No address ends in this byte.
    Empty,
    /// Exactly this one (so any other address ending in this byte is not on the segment).
    One(IpAddr, Attachment),
    /// Several: ask the maps.
    Many,
}

impl Default for Owners {
    fn default() -> Self {
        Self {
            v4: HashMap::default(),
            v6: HashMap::default(),
            by_last_byte: Box::new([LastByte::Empty; 256]),
        }
    }
}

fn last_byte(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(a) => usize::from(a.octets()[3]),
        IpAddr::V6(a) => usize::from(a.octets()[15]),
    }
}

impl Owners {
    fn get(&self, addr: IpAddr) -> Option<&Attachment> {
        match &self.by_last_byte[last_byte(addr)] {
            LastByte::Empty => None,
            LastByte::One(a, att) => (*a == addr).then_some(att),
            LastByte::Many => match addr {
                IpAddr::V4(a) => self.v4.get(&a.to_bits()),
                IpAddr::V6(a) => self.v6.get(&a.to_bits()),
            },
        }
    }

    fn insert(&mut self, addr: IpAddr, att: Attachment) {
        match addr {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), att),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), att),
        };
        let slot = &mut self.by_last_byte[last_byte(addr)];
        *slot = match *slot {
            LastByte::Empty => LastByte::One(addr, att),
            LastByte::One(a, _) if a == addr => LastByte::One(addr, att),
            LastByte::One(..) | LastByte::Many => LastByte::Many,
        };
    }
}

#[derive(Debug)]
struct Link {
    medium: Medium,
    spec: LinkSpec,
    up: bool,
}

struct Slot {
    name: String,
    node: Box<dyn Node>,
    up: bool,
    ifaces: Vec<LinkId>,
}

#[derive(Debug)]
enum Event {
    Deliver {
        link: LinkId,
        from: NodeId,
        origin: NodeId,
        to: Attachment,
        packet: Vec<u8>,
        watched: bool,
    },
    Timer {
        node: NodeId,
        token: u64,
    },
}

/// The simulated network. See the crate documentation for the accounting invariant.
pub struct Network {
    nodes: Vec<Slot>,
    links: Vec<Link>,
    queue: EventQueue<Event>,
    now: Instant,
    acct: Accounting,
    network_drops: DropCounters,
    node_drops: DropCounters,
    pcap: Option<(PcapWriter<Box<dyn Write>>, TraceFilter)>,
    pcap_error: Option<WireError>,
    outbox: Outbox,
    watch: Option<(WatchFn, Watched)>,
}

/// The predicate of [`Network::watch`]: whether a packet (its bytes) is watched.
pub type WatchFn = Box<dyn Fn(&[u8]) -> bool>;

/// Accounting of the packets a [`Network::watch`] predicate selects (a class of packets whose
/// fate a run reports on its own, such as ICMP errors). Every hop counts: a packet forwarded
/// by a router is sent again by it.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Watched {
    /// Watched packets nodes handed to the network.
    pub sent: u64,
    /// Watched packets delivered to a node.
    pub delivered: u64,
    /// Watched packets the network dropped, per node (as in [`Network::network_drops`]) and
    /// reason.
    pub drops: DropCounters,
    /// Watched packets still travelling.
    pub in_flight: u64,
}

impl core::fmt::Debug for Network {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.nodes.len())
            .field("links", &self.links.len())
            .field("now", &self.now)
            .field("accounting", &self.accounting())
            .finish()
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// An empty network at time zero.
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            links: Vec::new(),
            queue: EventQueue::new(),
            now: Instant::ZERO,
            acct: Accounting::default(),
            network_drops: DropCounters::default(),
            node_drops: DropCounters::default(),
            pcap: None,
            pcap_error: None,
            outbox: Outbox::new(),
            watch: None,
        }
    }

    /// Follows the packets `is_watched` selects from now on: their sends, deliveries and the
    /// network's drops of them are also counted apart ([`Network::watched`]). The predicate
    /// runs on every packet sent, so it must be cheap; without a watch nothing is evaluated.
    pub fn watch(&mut self, is_watched: WatchFn) {
        self.watch = Some((is_watched, Watched::default()));
    }

    /// The accounting of watched packets, if a watch is set.
    pub fn watched(&self) -> Option<&Watched> {
        self.watch.as_ref().map(|(_, w)| w)
    }

    /// Adds a node; it is up and has no interface yet.
    pub fn add_node(&mut self, name: impl Into<String>, node: Box<dyn Node>) -> NodeId {
        self.nodes.push(Slot {
            name: name.into(),
            node,
            up: true,
            ifaces: Vec::new(),
        });
        NodeId((self.nodes.len() - 1) as u32)
    }

    /// Connects two nodes with a point-to-point link; returns the link and the new interface on
    /// each side.
    ///
    /// # Errors
    /// [`NetError::NoNode`], [`NetError::TooManyInterfaces`].
    pub fn connect(
        &mut self,
        a: NodeId,
        b: NodeId,
        spec: LinkSpec,
    ) -> Result<(LinkId, IfaceId, IfaceId), NetError> {
        self.slot(a)?;
        self.slot(b)?;
        let link = LinkId(self.links.len() as u32);
        let ia = self.new_iface(a, link)?;
        let ib = self.new_iface(b, link)?;
        self.links.push(Link {
            medium: Medium::PointToPoint([
                Attachment { node: a, iface: ia },
                Attachment { node: b, iface: ib },
            ]),
            spec,
            up: true,
        });
        Ok((link, ia, ib))
    }

    /// Adds an empty shared segment (a LAN): packets go to the attached node owning the next
    /// hop the sender names.
    pub fn add_segment(&mut self, spec: LinkSpec) -> LinkId {
        self.links.push(Link {
            medium: Medium::Segment {
                owners: Owners::default(),
            },
            spec,
            up: true,
        });
        LinkId((self.links.len() - 1) as u32)
    }

    /// Attaches `node` to segment `link`, owning `addrs` there; returns its new interface.
    ///
    /// # Errors
    /// Unknown node or link, a point-to-point link, or an address another node owns.
    pub fn attach(
        &mut self,
        link: LinkId,
        node: NodeId,
        addrs: &[IpAddr],
    ) -> Result<IfaceId, NetError> {
        self.slot(node)?;
        let l = self
            .links
            .get(link.0 as usize)
            .ok_or(NetError::NoLink(link))?;
        let Medium::Segment { owners } = &l.medium else {
            return Err(NetError::NotASegment(link));
        };
        if let Some((addr, owner)) = addrs.iter().find_map(|&a| owners.get(a).map(|o| (a, o))) {
            return Err(NetError::AddressTaken {
                link,
                addr,
                owner: owner.node,
            });
        }
        let iface = self.new_iface(node, link)?;
        let Medium::Segment { owners } = &mut self.links[link.0 as usize].medium else {
            unreachable!("checked to be a segment above");
        };
        for &a in addrs {
            owners.insert(a, Attachment { node, iface });
        }
        Ok(iface)
    }

    /// Gives `addr` on segment `link` to `node`'s interface `iface` (a VIP moving, a route
    /// change): later packets to that next hop go there.
    ///
    /// # Errors
    /// Unknown link, or not a segment.
    pub fn set_owner(
        &mut self,
        link: LinkId,
        addr: IpAddr,
        node: NodeId,
        iface: IfaceId,
    ) -> Result<(), NetError> {
        let l = self
            .links
            .get_mut(link.0 as usize)
            .ok_or(NetError::NoLink(link))?;
        let Medium::Segment { owners } = &mut l.medium else {
            return Err(NetError::NotASegment(link));
        };
        owners.insert(addr, Attachment { node, iface });
        Ok(())
    }

    /// Brings a link up or down. Packets in flight on a link that goes down are dropped
    /// ([`DropReason::LinkDown`]) when they would have arrived.
    ///
    /// # Errors
    /// [`NetError::NoLink`].
    pub fn set_link_up(&mut self, link: LinkId, up: bool) -> Result<(), NetError> {
        self.links
            .get_mut(link.0 as usize)
            .ok_or(NetError::NoLink(link))?
            .up = up;
        Ok(())
    }

    /// Brings a node up or down. A down node receives nothing ([`DropReason::NodeDown`]) and its
    /// timers are discarded; bringing it back does not restore them (the node's owner decides
    /// what a restart means).
    ///
    /// # Errors
    /// [`NetError::NoNode`].
    pub fn set_node_up(&mut self, node: NodeId, up: bool) -> Result<(), NetError> {
        self.slot_mut(node)?.up = up;
        Ok(())
    }

    /// Whether the node is up.
    pub fn node_is_up(&self, node: NodeId) -> bool {
        self.nodes.get(node.0 as usize).is_some_and(|s| s.up)
    }

    /// The node's name.
    pub fn node_name(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(node.0 as usize).map(|s| s.name.as_str())
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node, as its concrete type (for inspection and configuration between steps).
    pub fn node<T: Node>(&self, id: NodeId) -> Option<&T> {
        let n: &dyn std::any::Any = self.nodes.get(id.0 as usize)?.node.as_ref();
        n.downcast_ref::<T>()
    }

    /// The node, as its concrete type, mutably.
    pub fn node_mut<T: Node>(&mut self, id: NodeId) -> Option<&mut T> {
        let n: &mut dyn std::any::Any = self.nodes.get_mut(id.0 as usize)?.node.as_mut();
        n.downcast_mut::<T>()
    }

    /// Records packets to a pcap stream from now on, filtered by `filter`.
    ///
    /// # Errors
    /// [`NetError::Pcap`] when the file header cannot be written.
    pub fn trace_pcap(&mut self, out: Box<dyn Write>, filter: TraceFilter) -> Result<(), NetError> {
        self.pcap = Some((PcapWriter::new(out).map_err(NetError::Pcap)?, filter));
        Ok(())
    }

    /// Stops tracing; flushes and returns the stream, or the first write error met.
    ///
    /// # Errors
    /// [`NetError::Pcap`] for a write error during the run or while flushing.
    pub fn finish_pcap(&mut self) -> Result<Option<Box<dyn Write>>, NetError> {
        if let Some(e) = self.pcap_error.take() {
            return Err(NetError::Pcap(e));
        }
        match self.pcap.take() {
            Some((w, _)) => w.finish().map(Some).map_err(NetError::Pcap),
            None => Ok(None),
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time of the next pending event.
    pub fn next_event_at(&self) -> Option<Instant> {
        self.queue.peek_time()
    }

    /// Packet accounting so far.
    pub fn accounting(&self) -> Accounting {
        Accounting {
            dropped_by_nodes: self.node_drops.total(),
            ..self.acct.clone()
        }
    }

    /// Drops by the network, per node (the receiving node for [`DropReason::NodeDown`], the
    /// sender otherwise) and reason.
    pub fn network_drops(&self) -> &DropCounters {
        &self.network_drops
    }

    /// Drops nodes reported, per node and reason.
    pub fn node_drops(&self) -> &DropCounters {
        &self.node_drops
    }

    /// Asks for `node`'s [`Node::handle_timer`] with `token` at `at` (not before now).
    pub fn schedule_timer(&mut self, node: NodeId, at: Instant, token: u64) {
        self.queue
            .push(at.max(self.now), Event::Timer { node, token });
    }

    /// Injects a packet as if `from` had sent it on `iface` now (a test harness, or a host
    /// outside the simulated nodes' logic).
    pub fn inject(
        &mut self,
        from: NodeId,
        iface: IfaceId,
        next_hop: Option<IpAddr>,
        packet: Vec<u8>,
    ) {
        self.transmit(
            from,
            Send {
                iface,
                next_hop,
                packet,
                origin: None,
            },
        );
    }

    /// Runs every event due at or before `until`, then sets the clock to `until`. Returns the
    /// number of events processed.
    pub fn run_until(&mut self, until: Instant) -> u64 {
        let mut n = 0;
        while self.queue.peek_time().is_some_and(|t| t <= until) {
            self.step();
            n += 1;
        }
        self.now = self.now.max(until);
        n
    }

    /// Processes the next event, if any; returns its time.
    pub fn step(&mut self) -> Option<Instant> {
        let (at, event) = self.queue.pop()?;
        self.now = at;
        match event {
            Event::Deliver {
                link,
                from,
                origin,
                to,
                packet,
                watched,
            } => {
                self.acct.in_flight -= 1;
                if let (true, Some((_, w))) = (watched, &mut self.watch) {
                    w.in_flight -= 1;
                }
                if !self.links[link.0 as usize].up {
                    self.network_drop(from, DropReason::LinkDown, watched);
                    tierlab_wire::pool::give(packet);
                } else if !self.nodes[to.node.0 as usize].up {
                    self.network_drop(to.node, DropReason::NodeDown, watched);
                    tierlab_wire::pool::give(packet);
                } else {
                    self.acct.delivered += 1;
                    if let (true, Some((_, w))) = (watched, &mut self.watch) {
                        w.delivered += 1;
                    }
                    if self
                        .pcap
                        .as_ref()
                        .is_some_and(|(_, f)| f.on_deliver(from, to.node))
                    {
                        self.record(&packet);
                    }
                    let mut out = std::mem::take(&mut self.outbox);
                    self.nodes[to.node.0 as usize]
                        .node
                        .handle_packet(at, to.iface, packet, origin, &mut out);
                    self.apply(to.node, &mut out);
                    self.outbox = out;
                }
            }
            Event::Timer { node, token } => {
                if self.nodes.get(node.0 as usize).is_some_and(|s| s.up) {
                    let mut out = std::mem::take(&mut self.outbox);
                    self.nodes[node.0 as usize]
                        .node
                        .handle_timer(at, token, &mut out);
                    self.apply(node, &mut out);
                    self.outbox = out;
                }
            }
        }
        Some(at)
    }

    fn apply(&mut self, node: NodeId, out: &mut Outbox) {
        for reason in out.drops.drain(..) {
            self.node_drops.count(node, reason);
        }
        for (at, token) in out.timers.drain(..) {
            self.queue
                .push(at.max(self.now), Event::Timer { node, token });
        }
        // The node's sends leave in order; the outbox keeps its allocation (no vector per
        // event).
        let mut sends = std::mem::take(&mut out.sends);
        for s in sends.drain(..) {
            self.transmit(node, s);
        }
        out.sends = sends;
    }

    fn transmit(&mut self, from: NodeId, s: Send) {
        self.acct.sent += 1;
        let watched = match &mut self.watch {
            Some((f, w)) if f(&s.packet) => {
                w.sent += 1;
                true
            }
            _ => false,
        };
        if self.pcap.as_ref().is_some_and(|(_, f)| f.on_send(from)) {
            self.record(&s.packet);
        }
        let Some(&link) = self
            .nodes
            .get(from.0 as usize)
            .and_then(|n| n.ifaces.get(usize::from(s.iface.0)))
        else {
            return self.network_drop(from, DropReason::NoLink, watched);
        };
        let l = &self.links[link.0 as usize];
        if !self.nodes[from.0 as usize].up {
            return self.network_drop(from, DropReason::NodeDown, watched);
        }
        if !l.up {
            return self.network_drop(from, DropReason::LinkDown, watched);
        }
        if s.packet.len() > usize::from(l.spec.mtu) {
            return self.network_drop(from, DropReason::TooBig, watched);
        }
        let to = match &l.medium {
            Medium::PointToPoint([a, b]) => {
                if a.node == from && a.iface == s.iface {
                    *b
                } else {
                    *a
                }
            }
            Medium::Segment { owners } => {
                let hop = s.next_hop.or_else(|| destination(&s.packet));
                match hop.and_then(|h| owners.get(h)) {
                    Some(&att) => att,
                    None => return self.network_drop(from, DropReason::NoNeighbor, watched),
                }
            }
        };
        let at = self.now + l.spec.latency;
        self.acct.in_flight += 1;
        if let (true, Some((_, w))) = (watched, &mut self.watch) {
            w.in_flight += 1;
        }
        let origin = s.origin.unwrap_or(from);
        self.queue.push_in_order(
            at,
            Event::Deliver {
                link,
                from,
                origin,
                to,
                packet: s.packet,
                watched,
            },
        );
    }

    fn network_drop(&mut self, node: NodeId, reason: DropReason, watched: bool) {
        self.acct.dropped_in_network += 1;
        self.network_drops.count(node, reason);
        if let (true, Some((_, w))) = (watched, &mut self.watch) {
            w.drops.count(node, reason);
        }
    }

    fn record(&mut self, packet: &[u8]) {
        if let Some((w, _)) = &mut self.pcap
            && let Err(e) = w.write_packet(self.now, packet)
        {
            self.pcap_error.get_or_insert(e);
        }
    }

    fn slot(&self, id: NodeId) -> Result<&Slot, NetError> {
        self.nodes.get(id.0 as usize).ok_or(NetError::NoNode(id))
    }

    fn slot_mut(&mut self, id: NodeId) -> Result<&mut Slot, NetError> {
        self.nodes
            .get_mut(id.0 as usize)
            .ok_or(NetError::NoNode(id))
    }

    fn new_iface(&mut self, node: NodeId, link: LinkId) -> Result<IfaceId, NetError> {
        let slot = self.slot_mut(node)?;
        let id = u16::try_from(slot.ifaces.len()).map_err(|_| NetError::TooManyInterfaces(node))?;
        slot.ifaces.push(link);
        Ok(IfaceId(id))
    }
}

/// The destination address of an IP packet, if it has a readable one.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_wire::{Packet, PacketBuilder, TcpFlags, TcpRepr};

    /// Echoes every packet back on the interface it came from, with addresses swapped;
    /// drops packets whose TTL is 1 (reporting it).
    #[derive(Default)]
    struct Echo {
        seen: u64,
        origins: Vec<NodeId>,
        timers: Vec<(Instant, u64)>,
    }

    impl Node for Echo {
        fn handle_packet(
            &mut self,
            _now: Instant,
            iface: IfaceId,
            packet: Vec<u8>,
            origin: NodeId,
            out: &mut Outbox,
        ) {
            self.seen += 1;
            self.origins.push(origin);
            let p = Packet::parse(&packet, true).unwrap();
            if p.ip.ttl() <= 1 {
                out.drop_packet(DropReason::Ttl);
                return;
            }
            let t = *p.tcp().unwrap();
            let reply = PacketBuilder::new(p.dst(), p.src())
                .unwrap()
                .ttl(p.ip.ttl() - 1)
                .tcp(&t, &[])
                .unwrap();
            out.send(iface, reply);
        }
        fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox) {
            self.timers.push((now, token));
            if token < 3 {
                out.set_timer(now + Duration::from_millis(1), token + 1);
            }
        }
    }

    fn syn(ttl: u8) -> Vec<u8> {
        let t = TcpRepr {
            sport: 1,
            dport: 2,
            flags: TcpFlags::SYN,
            ..TcpRepr::default()
        };
        PacketBuilder::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .unwrap()
            .ttl(ttl)
            .tcp(&t, &[])
            .unwrap()
    }

    fn pair(latency_us: u64) -> (Network, NodeId, NodeId, LinkId, IfaceId) {
        let mut net = Network::new();
        let a = net.add_node("a", Box::new(Echo::default()));
        let b = net.add_node("b", Box::new(Echo::default()));
        let spec = LinkSpec {
            latency: Duration::from_micros(latency_us),
            mtu: 1500,
        };
        let (l, ia, _) = net.connect(a, b, spec).unwrap();
        (net, a, b, l, ia)
    }

    #[test]
    fn segment_owners_answer_as_a_plain_map() {
        // Addresses sharing last bytes (within and across families), ownership moving, and
        // addresses never given: the fast table agrees with a reference map.
        let mut owners = Owners::default();
        let mut reference = HashMap::new();
        let addrs: Vec<IpAddr> = (0..600u32)
            .map(|i| {
                if i % 3 == 0 {
                    IpAddr::from([10, 0, (i >> 8) as u8, i as u8])
                } else if i % 3 == 1 {
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 8) as u16, i as u16])
                } else {
                    IpAddr::from([192, 0, 2, (i % 7) as u8])
                }
            })
            .collect();
        for (k, &a) in addrs.iter().enumerate() {
            if k % 5 == 4 {
                continue; // never given
            }
            let att = Attachment {
                node: NodeId(k as u32 % 11),
                iface: IfaceId(k as u16 % 3),
            };
            owners.insert(a, att);
            reference.insert(a, att);
            for &b in &addrs {
                assert_eq!(owners.get(b), reference.get(&b), "after giving {a}: {b}");
            }
        }
    }

    #[test]
    fn ping_pong_until_ttl_runs_out_with_exact_accounting() {
        let (mut net, a, b, _, ia) = pair(100);
        net.inject(a, ia, None, syn(4));
        net.run_until(Instant::from_secs(1));
        // TTL 4 → b (3) → a (2) → b (1) → a drops. 4 sends, 4 deliveries.
        let acct = net.accounting();
        assert_eq!(
            (
                acct.sent,
                acct.delivered,
                acct.in_flight,
                acct.dropped_by_nodes
            ),
            (4, 4, 0, 1)
        );
        assert!(acct.balanced());
        assert_eq!(net.node::<Echo>(a).unwrap().seen, 2);
        assert_eq!(net.node::<Echo>(b).unwrap().seen, 2);
        assert_eq!(net.node_drops().at_node(a).get(&DropReason::Ttl), Some(&1));
        assert_eq!(net.node::<Echo>(a).unwrap().origins, vec![b, b]);
        assert_eq!(net.node::<Echo>(b).unwrap().origins, vec![a, a]);
        assert_eq!(net.now(), Instant::from_secs(1));
    }

    #[test]
    fn link_and_node_down_drop_with_reasons() {
        let (mut net, a, b, l, ia) = pair(100);
        net.inject(a, ia, None, syn(9));
        net.set_link_up(l, false).unwrap(); // in flight when the link goes down
        net.run_until(Instant::from_millis(1));
        assert_eq!(
            net.network_drops().by_reason().get(&DropReason::LinkDown),
            Some(&1)
        );
        net.set_link_up(l, true).unwrap();
        net.set_node_up(b, false).unwrap();
        net.inject(a, ia, None, syn(9));
        net.run_until(Instant::from_millis(2));
        assert_eq!(
            net.network_drops().at_node(b).get(&DropReason::NodeDown),
            Some(&1)
        );
        net.inject(a, IfaceId(7), None, syn(9));
        net.inject(a, ia, None, vec![0x45; 2000]);
        let acct = net.accounting();
        assert_eq!(acct.dropped_in_network, 4);
        assert!(acct.balanced());
    }

    /// Watched packets are counted apart through sends, deliveries and the network's drops;
    /// the others are not evaluated differently.
    #[test]
    fn watched_packets_are_accounted_apart() {
        let (mut net, a, b, _, ia) = pair(100);
        // Watch packets whose TTL is even.
        net.watch(Box::new(|p| p.get(8).is_some_and(|t| t % 2 == 0)));
        net.inject(a, ia, None, syn(4));
        net.run_until(Instant::from_secs(1));
        let w = net.watched().unwrap().clone();
        // TTL 4 (watched) → 3 → 2 (watched) → 1: two watched sends, both delivered.
        assert_eq!(
            (w.sent, w.delivered, w.in_flight, w.drops.total()),
            (2, 2, 0, 0)
        );
        net.set_node_up(b, false).unwrap();
        net.inject(a, ia, None, syn(6));
        net.inject(a, ia, None, syn(7));
        assert_eq!(net.watched().unwrap().in_flight, 1);
        net.run_until(Instant::from_secs(2));
        let w = net.watched().unwrap();
        assert_eq!((w.sent, w.delivered, w.in_flight), (3, 2, 0));
        assert_eq!(w.drops.at_node(b).get(&DropReason::NodeDown), Some(&1));
        assert_eq!(
            net.network_drops().at_node(b).get(&DropReason::NodeDown),
            Some(&2)
        );
        assert!(net.accounting().balanced());
    }

    #[test]
    fn segments_deliver_by_next_hop_and_refuse_unknown_neighbours() {
        let mut net = Network::new();
        let a = net.add_node("a", Box::new(Echo::default()));
        let b = net.add_node("b", Box::new(Echo::default()));
        let c = net.add_node("c", Box::new(Echo::default()));
        let seg = net.add_segment(LinkSpec::default());
        let ia = net.attach(seg, a, &["10.0.0.1".parse().unwrap()]).unwrap();
        net.attach(seg, b, &["10.0.0.2".parse().unwrap()]).unwrap();
        net.attach(seg, c, &["10.0.0.3".parse().unwrap()]).unwrap();
        assert!(matches!(
            net.attach(seg, c, &["10.0.0.2".parse().unwrap()]),
            Err(NetError::AddressTaken { .. })
        ));
        // Next hop c although the packet is addressed to .2 (c replies to .1 = a).
        net.inject(a, ia, Some("10.0.0.3".parse().unwrap()), syn(2));
        // No next hop: the destination address (.2 = b) is used.
        net.inject(a, ia, None, syn(2));
        net.inject(a, ia, Some("10.0.0.9".parse().unwrap()), syn(2));
        net.run_until(Instant::from_secs(1));
        assert_eq!(net.node::<Echo>(c).unwrap().seen, 1);
        assert_eq!(net.node::<Echo>(b).unwrap().seen, 1);
        assert_eq!(net.node::<Echo>(a).unwrap().seen, 2);
        assert_eq!(
            net.network_drops().by_reason().get(&DropReason::NoNeighbor),
            Some(&1)
        );
        assert!(net.accounting().balanced());
    }

    #[test]
    fn timers_fire_in_order_and_not_on_down_nodes() {
        let (mut net, a, b, _, _) = pair(1);
        net.schedule_timer(a, Instant::from_millis(5), 0);
        net.schedule_timer(b, Instant::from_millis(5), 0);
        net.set_node_up(b, false).unwrap();
        net.run_until(Instant::from_secs(1));
        let t: Vec<u64> = net
            .node::<Echo>(a)
            .unwrap()
            .timers
            .iter()
            .map(|(at, _)| at.as_nanos() / 1_000_000)
            .collect();
        assert_eq!(t, vec![5, 6, 7, 8]);
        assert!(net.node::<Echo>(b).unwrap().timers.is_empty());
    }

    #[test]
    fn pcap_records_each_packet_once_in_time_order() {
        let (mut net, a, _, _, ia) = pair(100);
        let buf: std::rc::Rc<std::cell::RefCell<Vec<u8>>> = Default::default();
        struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        net.trace_pcap(Box::new(Shared(buf.clone())), TraceFilter::All)
            .unwrap();
        net.inject(a, ia, None, syn(4));
        net.run_until(Instant::from_secs(1));
        net.finish_pcap().unwrap();
        let recs = tierlab_wire::pcap::read_all(buf.borrow().as_slice()).unwrap();
        assert_eq!(recs.len(), 4);
        let times: Vec<u64> = recs.iter().map(|r| r.at.as_nanos() / 1000).collect();
        assert_eq!(times, vec![0, 100, 200, 300]);
        let ttls: Vec<u8> = recs
            .iter()
            .map(|r| Packet::parse(&r.data, true).unwrap().ip.ttl())
            .collect();
        assert_eq!(ttls, vec![4, 3, 2, 1]);
    }
}
