//! # tierlab-wire: packets as bytes
//!
//! The foundation every tierlab tier stands on. Module map:
//!
//! - [`time`]: virtual time ([`Instant`], [`Duration`]) in integer nanoseconds; no clock is read.
//! - [`rng`]: the one portable seeded generator ([`SimRng`], ChaCha8).
//! - [`proto`]: IP protocol numbers ([`IpProto`]).
//! - [`flow`]: [`FlowKey`], the 5-tuple plus IPv6 flow label.
//! - [`ipv4`], [`ipv6`], [`tcp`], [`udp`], [`icmp`]: one module per header, each with a `Repr`
//!   that parses from and emits into bytes (through `pnet_packet` views) and checks every
//!   length field pnet leaves unchecked.
//! - [`checksum`]: the Internet checksum and pseudo-headers.
//! - [`view`]: zero-copy checked views ([`IpView`], [`TcpView`]): the fast path for tiers
//!   that read a few fields of every packet.
//! - [`packet`]: whole packets ([`Packet::parse`], [`PacketBuilder`]).
//! - [`frag`]: IPv4 fragmentation as Linux's `ip_do_fragment` does it, and reassembly.
//! - [`pcap`]: a pcap writer (and reader) with link type RAW and nanosecond timestamps.
//! - [`pool`]: recycled packet buffers (a per-thread free list builders take from).
//!
//! ## Panic contract
//! No parser panics on any input bytes: each returns a [`WireError`] saying which layer, at
//! which byte offset, and what was wrong. Builders return [`WireError::Build`] rather than
//! panic. `tests/wire_props.rs` in the workspace feeds random and mutated packets to every
//! parser and checks build → parse round trips.
//!
//! ```
//! use tierlab_wire::{Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
//! let syn = TcpRepr { sport: 41000, dport: 80, seq: TcpSeq(7), flags: TcpFlags::SYN,
//!                     window: 64240, mss: Some(1460), ..TcpRepr::default() };
//! let bytes = PacketBuilder::new("203.0.113.9".parse()?, "198.51.100.1".parse()?)?.tcp(&syn, &[])?;
//! let flow = Packet::parse(&bytes, true)?.flow_key();
//! assert_eq!((flow.sport(), flow.dport()), (41000, 80));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checksum;
pub mod error;
pub mod flow;
pub mod frag;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod packet;
pub mod pcap;
pub mod pool;
pub mod proto;
pub mod rng;
pub mod tcp;
pub mod time;
pub mod udp;
pub mod view;

pub use error::{Layer, Result, WireError};
pub use flow::FlowKey;
pub use icmp::{IcmpError, Icmpv4Repr, Icmpv6Repr};
pub use ipv4::Ipv4Repr;
pub use ipv6::Ipv6Repr;
pub use packet::{IpHeader, Packet, PacketBuilder, Transport, Verify, decrement_ttl};
pub use proto::IpProto;
pub use rng::SimRng;
pub use tcp::{TcpFlags, TcpRepr, TcpSeq};
pub use time::{Duration, Instant};
pub use udp::UdpRepr;
pub use view::{IpView, TcpView};
