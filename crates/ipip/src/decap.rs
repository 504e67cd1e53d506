//! Tunnel endpoints: accepting tunnelled packets as a Linux `ipip`/`ip6tnl` device with the
//! VIPs bound on it does (the lab's L7 proxies), and sending through the tunnel.
//!
//! Decapsulation mirrors `ip_tunnel_rcv` (net/ipv4/ip_tunnel.c) and `__ip6_tnl_rcv`
//! (net/ipv6/ip6_tunnel.c), v6.x: the outer destination must be the endpoint's local address;
//! the outer protocol must be 4 (IPv4 inside) or 41 (IPv6 inside) and match the inner version;
//! ECN is decapsulated per RFC 6040 (`INET_ECN_decapsulate`): CE outside and Not-ECT inside
//! drops the packet, CE outside and ECT inside marks the inner packet CE. The inner destination
//! must be one of the VIPs bound on the tunnel (as in the lab; a packet to any other address
//! would not be delivered to HAProxy). Outer fragments must be reassembled first
//! ([`tierlab_wire::frag::Reassembler`]), as `ip_defrag` does before the tunnel sees them.

use std::borrow::Cow;
use std::net::IpAddr;

use thiserror::Error;
use tierlab_wire::{IpProto, IpView, WireError, ipv4};

use crate::encap::TunnelError;
use crate::ipvs::{TunOutput, xmit};

/// Why a tunnel endpoint refused a packet.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum DecapError {
    /// The outer packet does not parse.
    #[error("outer packet: {0}")]
    Outer(WireError),
    /// The outer destination is not this endpoint's address.
    #[error("outer destination {dst} is not the local tunnel address {local}")]
    NotLocal {
        /// Outer destination.
        dst: IpAddr,
        /// The endpoint's address.
        local: IpAddr,
    },
    /// The outer packet is not IP-in-IP (protocol 4 or 41).
    #[error("outer protocol {0} is not IP-in-IP (4 or 41)")]
    NotTunnel(IpProto),
    /// The outer packet is a fragment: reassemble it first.
    #[error("outer packet is a fragment; reassemble before decapsulating")]
    OuterFragment,
    /// The inner packet does not parse.
    #[error("inner packet: {0}")]
    Inner(WireError),
    /// The outer protocol announces one family and the inner packet is of the other.
    #[error("outer protocol {proto} does not match inner IP version {version}")]
    FamilyMismatch {
        /// Outer protocol.
        proto: IpProto,
        /// Inner version nibble.
        version: u8,
    },
    /// The inner destination is not a VIP bound on this tunnel.
    #[error("inner destination {0} is not a VIP bound on this tunnel")]
    NotAcceptedVip(IpAddr),
    /// CE marked outside, Not-ECT inside: dropped (RFC 6040 §4.2).
    #[error("outer header marked CE but inner packet is not ECN-capable")]
    EcnCeOnNotEct,
}

/// A decapsulated packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Decapsulated<'a> {
    /// The outer packet as received (a checked view: read any header field from it).
    pub outer: IpView<'a>,
    /// The inner packet (borrowed, or rewritten when ECN CE had to be copied in).
    pub inner: Cow<'a, [u8]>,
    /// The inner packet's checked view (its lengths and IPv4 header checksum verified), when
    /// `inner` is borrowed; `None` when it was rewritten.
    pub inner_view: Option<IpView<'a>>,
}

/// One end of an IP-in-IP tunnel: its outer address, the inner addresses (VIPs) it accepts,
/// and the MTU of the link it sends on.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TunnelEndpoint {
    local: IpAddr,
    /// Sorted, without duplicates; a handful of addresses, scanned linearly.
    vips: Vec<IpAddr>,
    mtu: u16,
    pmtu_disc: bool,
}

impl TunnelEndpoint {
    /// An endpoint at `local` accepting inner packets to `vips`, sending on a link of `mtu`
    /// bytes; oversized packets it sends are fragmented silently (`pmtu_disc=false`) or
    /// answered with an ICMP error (`true`).
    pub fn new(
        local: IpAddr,
        vips: impl IntoIterator<Item = IpAddr>,
        mtu: u16,
        pmtu_disc: bool,
    ) -> Self {
        Self {
            local,
            vips: vips.into_iter().collect(),
            mtu,
            pmtu_disc,
        }
    }

    /// The local outer address.
    pub fn local(&self) -> IpAddr {
        self.local
    }

    /// The VIPs bound on the tunnel.
    pub fn vips(&self) -> impl Iterator<Item = &IpAddr> {
        self.vips.iter()
    }

    /// The largest inner packet that crosses a link of this MTU to `remote` unfragmented.
    pub fn tunnel_mtu(&self, remote: IpAddr) -> usize {
        usize::from(self.mtu).saturating_sub(crate::encap::overhead(remote))
    }

    /// Decapsulates `packet` (an outer packet as received).
    ///
    /// # Errors
    /// [`DecapError`] naming why the packet is refused.
    pub fn decap<'a>(&self, packet: &'a [u8]) -> Result<Decapsulated<'a>, DecapError> {
        // Outer IP header (with the checksum `ip_rcv` checks); what follows is the inner packet.
        let outer = IpView::new_checked(packet, true).map_err(DecapError::Outer)?;
        self.decap_view(outer)
    }

    /// [`TunnelEndpoint::decap`] of a packet its caller has already checked: `outer` is
    /// `IpView::new_checked(packet, true)` of it.
    ///
    /// # Errors
    /// [`DecapError`] naming why the packet is refused (any but [`DecapError::Outer`]).
    pub fn decap_view<'a>(&self, outer: IpView<'a>) -> Result<Decapsulated<'a>, DecapError> {
        if !outer.dst_is(&self.local) {
            return Err(DecapError::NotLocal {
                dst: outer.dst(),
                local: self.local,
            });
        }
        if outer.is_fragment() {
            return Err(DecapError::OuterFragment);
        }
        let proto = outer.proto();
        if proto != IpProto::Ipip && proto != IpProto::Ipv6 {
            return Err(DecapError::NotTunnel(proto));
        }
        let inner_bytes = outer.payload();
        let version = inner_bytes.first().map_or(0, |b| b >> 4);
        let expected = if proto == IpProto::Ipip { 4 } else { 6 };
        if version != expected {
            return Err(DecapError::FamilyMismatch { proto, version });
        }
        // The inner packet goes through `ip_rcv` again after decapsulation: its IPv4 header
        // checksum is checked there; its transport checksum is the receiving stack's business.
        let inner = IpView::new_checked(inner_bytes, true).map_err(DecapError::Inner)?;
        if !self.vips.iter().any(|v| inner.dst_is(v)) {
            return Err(DecapError::NotAcceptedVip(inner.dst()));
        }
        let outer_ce = outer.dsfield() & 3 == 3;
        let inner_ecn = inner.dsfield() & 3;
        let bytes = inner.bytes();
        let (inner, inner_view) = if !outer_ce || inner_ecn == 3 {
            (Cow::Borrowed(bytes), Some(inner))
        } else if inner_ecn == 0 {
            return Err(DecapError::EcnCeOnNotEct);
        } else {
            (Cow::Owned(mark_ce(bytes)), None)
        };
        Ok(Decapsulated {
            outer,
            inner,
            inner_view,
        })
    }

    /// Sends `inner` through the tunnel to `remote`: encapsulates it (TTL and DS inherited),
    /// fragments the outer packet or answers an ICMP error when it does not fit the link MTU,
    /// as the endpoint's `pmtu_disc` says. The inner TTL is not decremented (a host sending,
    /// not a router forwarding).
    ///
    /// # Errors
    /// [`TunnelError`] when the inner packet does not parse or `remote` is of the other family.
    pub fn send(&self, inner: &[u8], remote: IpAddr, ident: u16) -> Result<TunOutput, TunnelError> {
        xmit(
            inner,
            self.local,
            remote,
            self.mtu,
            self.pmtu_disc,
            false,
            ident,
        )
    }
}

/// Sets ECN CE on a packet (IPv4: fixing the header checksum).
fn mark_ce(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v[0] >> 4 == 4 {
        v[1] |= 3;
        let hlen = usize::from(v[0] & 0xf) * 4;
        let c = ipv4::internet_checksum(&v[..hlen], Some(10));
        v[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        // Traffic class straddles bytes 0 and 1: its ECN bits are bits 4-5 of byte 1.
        v[1] |= 0x30;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encap::{DsMode, EncapParams, encapsulate};
    use tierlab_wire::{Packet, PacketBuilder, TcpFlags, TcpRepr};

    fn syn(src: &str, dst: &str, ds: u8) -> Vec<u8> {
        let t = TcpRepr {
            sport: 40000,
            dport: 80,
            flags: TcpFlags::SYN,
            ..TcpRepr::default()
        };
        PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
            .unwrap()
            .dsfield(ds)
            .tcp(&t, &[])
            .unwrap()
    }

    fn endpoint() -> TunnelEndpoint {
        TunnelEndpoint::new(
            "192.0.2.101".parse().unwrap(),
            [
                "198.51.100.1".parse().unwrap(),
                "2001:db8::c633:6401".parse().unwrap(),
            ],
            1500,
            false,
        )
    }

    fn wrap(inner: &[u8], dst: &str, ds: DsMode) -> Vec<u8> {
        let p = EncapParams {
            ds,
            ..EncapParams::ipvs("192.0.2.4".parse().unwrap(), dst.parse().unwrap(), false, 1)
        };
        encapsulate(inner, &p).unwrap()
    }

    #[test]
    fn accepts_both_inner_families() {
        let e = endpoint();
        for inner in [
            syn("203.0.113.7", "198.51.100.1", 0),
            syn("2001:db8::cb00:7107", "2001:db8::c633:6401", 0),
        ] {
            let outer = wrap(&inner, "192.0.2.101", DsMode::Inherit);
            let d = e.decap(&outer).unwrap();
            assert_eq!(d.inner.as_ref(), inner.as_slice());
            assert!(matches!(d.inner, Cow::Borrowed(_)));
            // The inner view comes with a borrowed inner packet, over the same bytes, and
            // decapsulating from the caller's checked view gives the same.
            assert_eq!(d.inner_view.map(|v| v.bytes()), Some(inner.as_slice()));
            let view = IpView::new_checked(&outer, true).unwrap();
            assert_eq!(e.decap_view(view), Ok(d));
        }
    }

    #[test]
    fn typed_refusals() {
        let e = endpoint();
        let inner = syn("203.0.113.7", "198.51.100.1", 0);
        assert!(matches!(
            e.decap(&wrap(&inner, "192.0.2.102", DsMode::Inherit)),
            Err(DecapError::NotLocal { .. })
        ));
        let other_vip = syn("203.0.113.7", "198.51.100.9", 0);
        assert_eq!(
            e.decap(&wrap(&other_vip, "192.0.2.101", DsMode::Inherit)),
            Err(DecapError::NotAcceptedVip("198.51.100.9".parse().unwrap()))
        );
        let plain = syn("203.0.113.7", "192.0.2.101", 0);
        assert_eq!(e.decap(&plain), Err(DecapError::NotTunnel(IpProto::Tcp)));
        let mut mismatched = wrap(&inner, "192.0.2.101", DsMode::Inherit);
        mismatched[9] = 41;
        let c = ipv4::internet_checksum(&mismatched[..20], Some(10));
        mismatched[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(matches!(
            e.decap(&mismatched),
            Err(DecapError::FamilyMismatch { version: 4, .. })
        ));
        assert!(matches!(e.decap(&[0x45, 0, 0]), Err(DecapError::Outer(_))));
    }

    #[test]
    fn ecn_decapsulation_rules() {
        let e = endpoint();
        let not_ect = syn("203.0.113.7", "198.51.100.1", 0);
        assert_eq!(
            e.decap(&wrap(&not_ect, "192.0.2.101", DsMode::Fixed(3))),
            Err(DecapError::EcnCeOnNotEct)
        );
        let ect0 = syn("203.0.113.7", "198.51.100.1", 2);
        let outer = wrap(&ect0, "192.0.2.101", DsMode::Fixed(3));
        let d = e.decap(&outer).unwrap();
        let p = Packet::parse(&d.inner, true).unwrap();
        assert_eq!(p.ip.dsfield() & 3, 3);
        assert_eq!(
            d.inner_view, None,
            "no view of the original over rewritten bytes"
        );
        let ect6 = syn("2001:db8::cb00:7107", "2001:db8::c633:6401", 1);
        let outer = wrap(&ect6, "192.0.2.101", DsMode::Fixed(3));
        let d = e.decap(&outer).unwrap();
        assert_eq!(Packet::parse(&d.inner, true).unwrap().ip.dsfield() & 3, 3);
    }

    #[test]
    fn outer_fragments_must_be_reassembled_first() {
        let e = endpoint();
        let big = {
            let t = TcpRepr {
                sport: 1,
                dport: 80,
                flags: TcpFlags::ACK,
                ..TcpRepr::default()
            };
            PacketBuilder::new(
                "203.0.113.7".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
            )
            .unwrap()
            .tcp(&t, &[0u8; 1460])
            .unwrap()
        };
        let sender = TunnelEndpoint::new("192.0.2.4".parse().unwrap(), [], 1500, false);
        let TunOutput::Forward(frags) = sender
            .send(&big, "192.0.2.101".parse().unwrap(), 5)
            .unwrap()
        else {
            panic!("expected fragments")
        };
        assert_eq!(frags.len(), 2);
        assert_eq!(e.decap(&frags[0]), Err(DecapError::OuterFragment));
        assert_eq!(e.decap(&frags[1]), Err(DecapError::OuterFragment));
        assert_eq!(sender.tunnel_mtu("192.0.2.101".parse().unwrap()), 1480);
    }
}
