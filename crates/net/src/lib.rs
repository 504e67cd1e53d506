//! # tierlab-net: the discrete-event engine
//!
//! Drives virtual time and packet delivery between sans-IO nodes without knowing what any node
//! is (a router, a director, a proxy are all [`Node`]s to it). Module map:
//!
//! - [`ids`]: index newtypes [`NodeId`], [`IfaceId`], [`LinkId`].
//! - [`node`]: the [`Node`] trait (packet or timer in → packets, timers and drops out through an
//!   [`Outbox`]).
//! - [`queue`]: the event queue, a binary heap ordered by (time, insertion sequence).
//! - [`drop`](mod@drop): [`DropReason`] and per-node, per-reason counters.
//! - [`trace`]: which packets go to the pcap tap ([`TraceFilter`]).
//! - [`network`]: the [`Network`]: nodes, point-to-point links and shared segments (latency,
//!   MTU, up/down), address ownership, delivery, accounting ([`Accounting`]), a class of
//!   packets followed apart ([`Network::watch`], [`Watched`]), tracing.
//!
//! ## Accounting invariant
//! Every packet a node sends is, at any instant, exactly one of: in flight, delivered to a node,
//! or dropped by the network with a [`DropReason`]. Nodes report what they discard themselves
//! through [`Outbox::drop_packet`], so `sent == delivered + dropped_in_network + in_flight`
//! holds at every step ([`Accounting::balanced`]), and a packet a node receives is either sent
//! on (as a new packet), consumed, or dropped by that node with a reason.
//!
//! ## Determinism
//! No clock, no RNG, no hash-map iteration: the same calls in the same order give the same
//! events in the same order, the same counters and the same pcap bytes.

pub mod drop;
pub mod ids;
pub mod network;
pub mod node;
pub mod queue;
pub mod trace;

pub use drop::{DropCounters, DropReason};
pub use ids::{IfaceId, LinkId, NodeId};
pub use network::{Accounting, LinkSpec, NetError, Network, WatchFn, Watched};
pub use node::{Node, Outbox};
pub use trace::TraceFilter;
