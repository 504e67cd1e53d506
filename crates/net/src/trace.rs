//! Which packets the pcap tap records.

use std::collections::BTreeSet;

use crate::ids::NodeId;

/// A filter for the pcap tap. Without a filter every packet is written once, as it leaves its
/// sender; with one, only packets sent by (or delivered to) the listed nodes.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub enum TraceFilter {
    /// Every packet, once, as it leaves its sender.
    #[default]
    All,
    /// Packets sent by any of these nodes, and packets delivered to them by the network (each
    /// packet still written at most once per event).
    Nodes(BTreeSet<NodeId>),
}

impl TraceFilter {
    /// Whether a packet sent by `from` is recorded when it leaves.
    pub fn on_send(&self, from: NodeId) -> bool {
        match self {
            Self::All => true,
            Self::Nodes(set) => set.contains(&from),
        }
    }

    /// Whether a packet delivered to `to` (sent by `from`) is recorded as it arrives.
    pub fn on_deliver(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            Self::All => false,
            Self::Nodes(set) => set.contains(&to) && !set.contains(&from),
        }
    }
}
