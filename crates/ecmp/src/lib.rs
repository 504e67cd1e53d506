//! # tierlab-ecmp: Linux-exact ECMP
//!
//! Which next hop does a Linux router pick for a flow, before and after a change? This crate
//! answers bit for bit as the kernel does (checked against the running kernel by the workspace
//! test `tests/linux_ecmp.rs`). Module map:
//!
//! - [`hash`]: the multipath hash — `fib_multipath_hash_policy` 0-3, `fib_multipath_hash_fields`,
//!   `fib_multipath_hash_seed`, IPv6 flow label, ICMP errors, forwarding vs route-lookup paths,
//!   packets carrying an RSS hash. [`MultipathHasher`] is a configuration prepared to hash
//!   many packets (key derived once, constant SipHash prefix precomputed).
//! - [`group`]: next-hop groups — hash-threshold with weights (the kernel's upper bounds),
//!   modulo-N, resilient buckets with their timers — updates, and the exact share of the flow
//!   space an update moves ([`moved_share`]).
//! - [`fib`]: a longest-prefix-match FIB for both families.
//! - [`router`]: [`Router`], what a simulator calls per packet.
//! - [`siphash`], [`jhash`], [`toeplitz`]: the hash functions underneath.
//!
//! ```
//! use tierlab_ecmp::{HashConfig, HashFields, HashInput, HashSeed, NextHopGroup, Policy, Prefix, Router};
//! use tierlab_wire::{FlowKey, IpProto};
//! let mut r = Router::new(HashConfig::new(Policy::L4, HashFields::DEFAULT, HashSeed::Fixed(1)));
//! r.add_route(Prefix::default_route(true), NextHopGroup::equal(2)?);
//! let flow = FlowKey::v4([203, 0, 113, 7].into(), [198, 51, 100, 1].into(), IpProto::Tcp, 40000, 80);
//! let hop = r.select(&HashInput::flow(flow))?.index;
//! assert!(hop < 2);
//! # Ok::<(), tierlab_ecmp::EcmpError>(())
//! ```

pub mod error;
pub mod fib;
pub mod group;
pub mod hash;
pub mod jhash;
pub mod router;
pub mod siphash;
pub mod toeplitz;

pub use error::EcmpError;
pub use fib::{Fib, Prefix};
pub use group::{
    Algorithm, GroupUpdate, HASH_SPACE, NextHop, NextHopGroup, NextHopId, ResilientParams, Share,
    moved_share,
};
pub use hash::{
    FamilyHash, HashConfig, HashFields, HashInput, HashPath, HashSeed, MultipathHasher, Policy,
    QuotedHeader,
};
pub use router::{Router, Selection};
pub use toeplitz::Toeplitz;
