//! IP protocol numbers (IPv4 "protocol", IPv6 "next header").

use core::fmt;

use serde::{Deserialize, Serialize};

/// An IP protocol number. Every wire value round-trips: numbers tierlab does not model are kept
/// as [`IpProto::Unknown`].
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(from = "u8", into = "u8")]
pub enum IpProto {
    /// ICMP for IPv4 (1).
    Icmp,
    /// IPv4 encapsulated in IP (4): IPIP, and IPVS TUN mode for an IPv4 inner packet.
    Ipip,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 encapsulated in IP (41): 6in4 ("sit") and 6in6 (`ip6tnl`).
    Ipv6,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number.
    Unknown(u8),
}

impl IpProto {
    /// The protocol number on the wire.
    pub const fn number(self) -> u8 {
        match self {
            Self::Icmp => 1,
            Self::Ipip => 4,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Ipv6 => 41,
            Self::Ipv6Frag => 44,
            Self::Icmpv6 => 58,
            Self::Unknown(n) => n,
        }
    }

    /// Whether the protocol carries 16-bit source and destination ports first in its header
    /// (TCP, UDP; also SCTP (132) and DCCP (33), as the kernel's flow dissector treats them).
    pub const fn has_ports(self) -> bool {
        matches!(
            self,
            Self::Tcp | Self::Udp | Self::Unknown(132) | Self::Unknown(33)
        )
    }
}

impl From<u8> for IpProto {
    fn from(n: u8) -> Self {
        match n {
            1 => Self::Icmp,
            4 => Self::Ipip,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6,
            44 => Self::Ipv6Frag,
            58 => Self::Icmpv6,
            n => Self::Unknown(n),
        }
    }
}

impl From<IpProto> for u8 {
    fn from(p: IpProto) -> Self {
        p.number()
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Icmp => f.write_str("icmp"),
            Self::Ipip => f.write_str("ipip"),
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Ipv6 => f.write_str("ipv6"),
            Self::Ipv6Frag => f.write_str("ipv6-frag"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Unknown(n) => write!(f, "proto-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for n in 0..=255u8 {
            assert_eq!(IpProto::from(n).number(), n);
        }
        assert_eq!(IpProto::from(6), IpProto::Tcp);
        assert_eq!(IpProto::from(41), IpProto::Ipv6);
    }
}
