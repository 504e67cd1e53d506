//! Why a packet was dropped, and counters per node and per reason.

use core::fmt;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// Why a packet was dropped. The network uses the first group; nodes report the others (and
/// may use any) through [`crate::Outbox::drop_packet`]. Names are stable: reports use them as
/// keys.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The sending interface is not attached to any link.
    NoLink,
    /// The link or segment is down.
    LinkDown,
    /// The receiving node is down (or the sender was down when the packet was due to leave).
    NodeDown,
    /// On a shared segment, no attached node owns the next-hop address.
    NoNeighbor,
    /// Larger than the link MTU.
    TooBig,
    /// A router refused to forward a packet larger than the egress MTU that may not be
    /// fragmented (IPv4 with DF, or IPv6) and sent the source an ICMP "fragmentation needed" /
    /// "packet too big" instead (where [`DropReason::TooBig`] is the network's silent drop).
    MtuExceeded,
    /// The node has no route for the destination.
    NoRoute,
    /// TTL or hop limit expired.
    Ttl,
    /// A packet to a VIP that no service of this node serves.
    UnknownVip,
    /// The scheduler found no usable destination.
    NoDestination,
    /// A segment without a connection entry that may not create one (IPVS: not a SYN while
    /// `sloppy_tcp` is off, or a RST).
    NoEntry,
    /// The destination of a connection entry is no longer available (IPVS, `expire_nodest_conn=0`).
    DestUnavailable,
    /// An ICMP error that matches no known flow.
    IcmpNoFlow,
    /// Bytes that do not parse.
    Malformed,
    /// Addressed to this node but to no listener or flow (after any RST it caused).
    NoSocket,
    /// Refused by a tunnel endpoint.
    Tunnel,
    /// Any other reason a node names (kept as a counter of its own).
    Other,
}

impl DropReason {
    /// The reason's stable snake_case name (the key used in reports).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoLink => "no_link",
            Self::LinkDown => "link_down",
            Self::NodeDown => "node_down",
            Self::NoNeighbor => "no_neighbor",
            Self::TooBig => "too_big",
            Self::MtuExceeded => "mtu_exceeded",
            Self::NoRoute => "no_route",
            Self::Ttl => "ttl",
            Self::UnknownVip => "unknown_vip",
            Self::NoDestination => "no_destination",
            Self::NoEntry => "no_entry",
            Self::DestUnavailable => "dest_unavailable",
            Self::IcmpNoFlow => "icmp_no_flow",
            Self::Malformed => "malformed",
            Self::NoSocket => "no_socket",
            Self::Tunnel => "tunnel",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters: per (node, reason), iterated in sorted order.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct DropCounters {
    by_node: BTreeMap<(NodeId, DropReason), u64>,
}

impl DropCounters {
    /// Counts one drop at `node` for `reason`.
    pub fn count(&mut self, node: NodeId, reason: DropReason) {
        *self.by_node.entry((node, reason)).or_default() += 1;
    }

    /// Total drops.
    pub fn total(&self) -> u64 {
        self.by_node.values().sum()
    }

    /// Drops per reason over all nodes, sorted by reason.
    pub fn by_reason(&self) -> BTreeMap<DropReason, u64> {
        let mut out = BTreeMap::new();
        for (&(_, r), &n) in &self.by_node {
            *out.entry(r).or_default() += n;
        }
        out
    }

    /// Drops at one node, per reason.
    pub fn at_node(&self, node: NodeId) -> BTreeMap<DropReason, u64> {
        self.by_node
            .range((node, DropReason::NoLink)..=(node, DropReason::Other))
            .map(|(&(_, r), &n)| (r, n))
            .collect()
    }

    /// Every (node, reason, count), sorted.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, DropReason, u64)> + '_ {
        self.by_node.iter().map(|(&(n, r), &c)| (n, r, c))
    }
}
