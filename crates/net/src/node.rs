//! The node interface: every tier is a sans-IO state machine the engine drives.

use std::any::Any;
use std::net::IpAddr;

use tierlab_wire::Instant;

use crate::drop::DropReason;
use crate::ids::{IfaceId, NodeId};

/// A network node: a packet or a timer goes in, packets, timers and drops come out through the
/// [`Outbox`]. A node never reads a clock: `now` is given, and never goes backwards between
/// calls. A node keeps no reference to the engine.
pub trait Node: Any {
    /// A packet arrived on interface `iface`. `origin` is the node that built it (routers and
    /// directors forward packets without becoming their origin): a client uses it to say who
    /// reset its connection.
    fn handle_packet(
        &mut self,
        now: Instant,
        iface: IfaceId,
        packet: Vec<u8>,
        origin: NodeId,
        out: &mut Outbox,
    );

    /// A timer the node set (with this `token`) fired. Timers cannot be cancelled: a node
    /// ignores tokens it no longer cares about.
    fn handle_timer(&mut self, now: Instant, token: u64, out: &mut Outbox);
}

/// One packet a node sends.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Send {
    pub(crate) iface: IfaceId,
    pub(crate) next_hop: Option<IpAddr>,
    pub(crate) packet: Vec<u8>,
    /// The node that built the packet; `None`: the sender itself.
    pub(crate) origin: Option<NodeId>,
}

/// What a node produces while handling one input.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) sends: Vec<Send>,
    pub(crate) timers: Vec<(Instant, u64)>,
    pub(crate) drops: Vec<DropReason>,
}

impl Outbox {
    /// An empty outbox (for driving a node directly in tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `packet` on a point-to-point interface (the other end receives it).
    pub fn send(&mut self, iface: IfaceId, packet: Vec<u8>) {
        self.sends.push(Send {
            iface,
            next_hop: None,
            packet,
            origin: None,
        });
    }

    /// Sends `packet` on a shared segment to the node that owns `next_hop` (on a
    /// point-to-point link the next hop is ignored).
    pub fn send_to(&mut self, iface: IfaceId, next_hop: IpAddr, packet: Vec<u8>) {
        self.sends.push(Send {
            iface,
            next_hop: Some(next_hop),
            packet,
            origin: None,
        });
    }

    /// Forwards a packet built by `origin` (a router passing it on): like
    /// [`Outbox::send_to`] (or [`Outbox::send`] without a next hop), but the receiver is told
    /// `origin`, not this node.
    pub fn forward(
        &mut self,
        iface: IfaceId,
        next_hop: Option<IpAddr>,
        packet: Vec<u8>,
        origin: NodeId,
    ) {
        self.sends.push(Send {
            iface,
            next_hop,
            packet,
            origin: Some(origin),
        });
    }

    /// Asks for [`Node::handle_timer`] with `token` at `at` (immediately if `at` is past).
    pub fn set_timer(&mut self, at: Instant, token: u64) {
        self.timers.push((at, token));
    }

    /// Reports that the packet being handled (or one the node held) was dropped, and why.
    pub fn drop_packet(&mut self, reason: DropReason) {
        self.drops.push(reason);
    }

    /// The packets sent so far: (interface, next hop, bytes). For tests that drive a node
    /// without a network.
    pub fn sent(&self) -> impl Iterator<Item = (IfaceId, Option<IpAddr>, &[u8])> {
        self.sends
            .iter()
            .map(|s| (s.iface, s.next_hop, s.packet.as_slice()))
    }

    /// The drops reported so far.
    pub fn drops(&self) -> &[DropReason] {
        &self.drops
    }

    /// The timers set so far.
    pub fn timers(&self) -> &[(Instant, u64)] {
        &self.timers
    }

    /// Empties the outbox.
    pub fn clear(&mut self) {
        self.sends.clear();
        self.timers.clear();
        self.drops.clear();
    }
}
