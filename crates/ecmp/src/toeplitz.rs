//! The Toeplitz hash of receive-side scaling (RSS), as NICs compute it, for modelling packets
//! that reach a router with an L4 hash already set (`skb->l4_hash`).
//!
//! Under `fib_multipath_hash_policy = 1` the kernel's forwarding path returns
//! `skb_get_hash_raw(skb) >> 1` when the packet already carries an L4 hash
//! (net/ipv4/route.c `fib_multipath_hash`, net/ipv6/route.c `rt6_multipath_hash`, Linux 6.18),
//! instead of hashing the flow with the multipath seed. A NIC with RSS sets that hash for TCP
//! and UDP packets; a packet that crossed a veth from a local socket carries the socket's random
//! `sk_txhash` (not modelled: it is random per connection).

use std::net::IpAddr;

use tierlab_wire::{FlowKey, IpProto};

/// The 40-byte key Microsoft's RSS specification uses in its verification examples, which many
/// drivers also use as their default.
pub const MICROSOFT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// An RSS Toeplitz hasher with a 40-byte key (enough for IPv6 with ports: 36 input bytes).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Toeplitz {
    key: [u8; 40],
}

impl Default for Toeplitz {
    fn default() -> Self {
        Self { key: MICROSOFT_KEY }
    }
}

impl Toeplitz {
    /// A hasher with the given key.
    pub const fn new(key: [u8; 40]) -> Self {
        Self { key }
    }

    /// The key.
    pub const fn key(&self) -> &[u8; 40] {
        &self.key
    }

    /// The Toeplitz hash of `input` (at most 36 bytes are meaningful with a 40-byte key).
    pub fn hash(&self, input: &[u8]) -> u32 {
        let mut result = 0u32;
        // The 32-bit window of the key starting at the current input bit.
        let mut window = u32::from_be_bytes([self.key[0], self.key[1], self.key[2], self.key[3]]);
        for (i, &byte) in input.iter().enumerate() {
            let next = self.key.get(i + 4).copied().unwrap_or(0);
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    result ^= window;
                }
                window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
            }
        }
        result
    }

    /// The RSS hash a NIC reports for a TCP or UDP flow (4-tuple: source address, destination
    /// address, source port, destination port), or `None` for other protocols, which get an L3
    /// hash and so no `l4_hash`.
    pub fn l4_hash(&self, flow: &FlowKey) -> Option<u32> {
        if !matches!(flow.proto(), IpProto::Tcp | IpProto::Udp) {
            return None;
        }
        let mut buf = [0u8; 36];
        let n = match (flow.src(), flow.dst()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                buf[..4].copy_from_slice(&s.octets());
                buf[4..8].copy_from_slice(&d.octets());
                8
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                buf[..16].copy_from_slice(&s.octets());
                buf[16..32].copy_from_slice(&d.octets());
                32
            }
            _ => return None,
        };
        buf[n..n + 2].copy_from_slice(&flow.sport().to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&flow.dport().to_be_bytes());
        Some(self.hash(&buf[..n + 4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Microsoft's "Verifying the RSS hash calculation" examples (IPv4 and IPv6, with and
    /// without ports).
    #[test]
    fn microsoft_verification_vectors() {
        let t = Toeplitz::default();
        let v4 = [
            (
                "66.9.149.187",
                2794,
                "161.142.100.80",
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                "199.92.111.2",
                14230,
                "65.69.140.83",
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                "24.19.198.95",
                12898,
                "12.22.207.184",
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
            (
                "38.27.205.30",
                48228,
                "209.142.163.6",
                2217,
                0x8298_9176,
                0xafc7_327f,
            ),
            (
                "153.39.163.191",
                44251,
                "202.188.127.2",
                1303,
                0x5d18_09c5,
                0x10e8_28a2,
            ),
        ];
        for (s, sp, d, dp, l3, l4) in v4 {
            let s: Ipv4Addr = s.parse().unwrap();
            let d: Ipv4Addr = d.parse().unwrap();
            let mut ip = [0u8; 8];
            ip[..4].copy_from_slice(&s.octets());
            ip[4..].copy_from_slice(&d.octets());
            assert_eq!(t.hash(&ip), l3, "{s} -> {d}");
            let f = FlowKey::v4(s, d, IpProto::Tcp, sp, dp);
            assert_eq!(t.l4_hash(&f), Some(l4), "{f}");
        }
        let s: Ipv6Addr = "3ffe:2501:200:1fff::7".parse().unwrap();
        let d: Ipv6Addr = "3ffe:2501:200:3::1".parse().unwrap();
        let mut ip = [0u8; 32];
        ip[..16].copy_from_slice(&s.octets());
        ip[16..].copy_from_slice(&d.octets());
        assert_eq!(t.hash(&ip), 0x2cc1_8cd5);
        let f = FlowKey::v6(s, d, IpProto::Tcp, 2794, 1766, 0);
        assert_eq!(t.l4_hash(&f), Some(0x4020_7d3d));
        let icmp = FlowKey::v6(s, d, IpProto::Icmpv6, 0, 0, 0);
        assert_eq!(t.l4_hash(&icmp), None);
    }
}
