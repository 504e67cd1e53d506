//! Errors of `tierlab-ecmp`.

use thiserror::Error;

/// Why an ECMP configuration or update was refused.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum EcmpError {
    /// `fib_multipath_hash_policy` outside 0..=3.
    #[error("fib_multipath_hash_policy {0} is not 0, 1, 2 or 3")]
    BadPolicy(u8),
    /// `fib_multipath_hash_fields` with bits above bit 11 (the sysctl's maximum is 0xfff).
    #[error("fib_multipath_hash_fields {0:#x} has bits outside 0xfff")]
    BadHashFields(u32),
    /// A next-hop weight outside 1..=65535 (routes accept 1..=256, nexthop groups 1..=65535).
    #[error("next hop {id}: weight {weight} is outside 1..=65535")]
    BadWeight {
        /// The next hop's id.
        id: u32,
        /// The weight given.
        weight: u32,
    },
    /// A group with no next hop.
    #[error("a next-hop group needs at least one next hop")]
    EmptyGroup,
    /// The same next-hop id twice in one group.
    #[error("next hop {0} appears twice in the group")]
    DuplicateNextHop(u32),
    /// An update names a next hop that is not in the group.
    #[error("next hop {0} is not in the group")]
    UnknownNextHop(u32),
    /// A reorder that is not a permutation of the group's next hops.
    #[error("the new order is not a permutation of the group's next hops")]
    BadReorder,
    /// A resilient group with 0 buckets.
    #[error("a resilient group needs at least one bucket")]
    NoBuckets,
    /// A prefix length too long for its family.
    #[error("prefix length {len} is too long for {addr}")]
    BadPrefix {
        /// The address given.
        addr: std::net::IpAddr,
        /// The length given.
        len: u8,
    },
    /// No route for an address, or a route update names a prefix that has no route.
    #[error("no route to {0}")]
    NoRoute(String),
    /// The flow-space comparison of two groups would need too many steps (periods whose least
    /// common multiple is huge).
    #[error("moved share: the two groups' periods ({0} and {1}) are too large to compare exactly")]
    ShareTooComplex(u64, u64),
}
