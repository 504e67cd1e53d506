//! Generic IP-in-IP encapsulation.
//!
//! Mirrors the header Linux writes in `ip_tunnel_xmit`/`iptunnel_xmit` (net/ipv4/ip_tunnel.c,
//! ip_tunnel_core.c) and `ip6_tnl_xmit` (net/ipv6/ip6_tunnel.c), and in IPVS
//! `ip_vs_tunnel_xmit[_v6]` (net/netfilter/ipvs/ip_vs_xmit.c), v6.x:
//! outer protocol 4 for an IPv4 inner packet and 41 for IPv6; the outer TTL/hop limit inherited
//! from the inner packet or fixed; DF copied from the inner IPv4 header, forced or cleared; the
//! DS field inherited with ECN encapsulated per RFC 6040 (`INET_ECN_encapsulate`: the inner ECN
//! codepoint is copied, except CE, which becomes ECT(0) outside); IPv6 outer flow label 0.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tierlab_wire::{
    IpHeader, IpProto, IpView, Ipv4Repr, Ipv6Repr, PacketBuilder, WireError, ipv4, ipv6,
};

/// How the outer TTL (IPv4) or hop limit (IPv6) is chosen.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum TtlMode {
    /// Copy the inner packet's TTL / hop limit (Linux `ttl inherit`, and IPVS TUN mode, which
    /// copies the inner TTL after decrementing it).
    Inherit,
    /// A fixed value (Linux `ttl N`).
    Fixed(u8),
}

/// How the outer IPv4 DF flag is set (ignored for an IPv6 outer header, which has none).
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum DfMode {
    /// Copy DF from an IPv4 inner header (clear for an IPv6 inner packet): IPVS with
    /// `pmtu_disc=1`.
    Copy,
    /// Always set (a Linux `ipip` device with `pmtudisc`, its default).
    Set,
    /// Always clear: IPVS with `pmtu_disc=0` (the lab), `nopmtudisc` devices.
    Clear,
}

/// How the outer DS field (TOS / traffic class) is chosen.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum DsMode {
    /// Inherit the inner DS field, ECN encapsulated as `INET_ECN_encapsulate` (IPVS, and
    /// `tos inherit`).
    Inherit,
    /// A fixed value.
    Fixed(u8),
}

/// Parameters of one encapsulation.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct EncapParams {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address (the tunnel's remote end).
    pub dst: IpAddr,
    /// Outer TTL / hop limit.
    pub ttl: TtlMode,
    /// Outer DF flag (IPv4 outer only).
    pub df: DfMode,
    /// Outer DS field.
    pub ds: DsMode,
    /// Outer IPv4 identification (Linux draws it from a hashed counter; a simulator gives it).
    pub ident: u16,
}

impl EncapParams {
    /// What IPVS TUN mode writes: TTL and DS inherited; DF copied with `pmtu_disc=1`, clear with
    /// `pmtu_disc=0`.
    pub fn ipvs(src: IpAddr, dst: IpAddr, pmtu_disc: bool, ident: u16) -> Self {
        Self {
            src,
            dst,
            ttl: TtlMode::Inherit,
            df: if pmtu_disc {
                DfMode::Copy
            } else {
                DfMode::Clear
            },
            ds: DsMode::Inherit,
            ident,
        }
    }
}

/// Why a packet could not be encapsulated.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum TunnelError {
    /// The inner packet is not a valid IPv4/IPv6 packet.
    #[error("inner packet: {0}")]
    Inner(WireError),
    /// The outer source and destination are of different families.
    #[error("outer source {src} and destination {dst} are of different families")]
    MixedOuterFamilies {
        /// Outer source.
        src: IpAddr,
        /// Outer destination.
        dst: IpAddr,
    },
    /// The outer packet would exceed 65,535 bytes.
    #[error("encapsulated packet would be {0} bytes, above 65,535")]
    TooLong(usize),
}

/// Bytes added by the outer header for an outer address family (20 for IPv4, 40 for IPv6).
pub fn overhead(outer: IpAddr) -> usize {
    if outer.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    }
}

/// ECN field rule of RFC 6040 normal mode, as `INET_ECN_encapsulate(outer, inner)`.
pub(crate) fn ecn_encapsulate(inner_ds: u8) -> u8 {
    const CE: u8 = 3;
    let ecn = inner_ds & 3;
    (inner_ds & !3) | if ecn == CE { 1 << 1 } else { ecn }
}

/// Encapsulates the IP packet `inner` (its whole length as given by its own header; trailing
/// bytes are dropped) with the outer header `p` describes.
///
/// # Errors
/// [`TunnelError`]: an inner packet that does not parse, mixed outer families, or a result above
/// 65,535 bytes.
pub fn encapsulate(inner: &[u8], p: &EncapParams) -> Result<Vec<u8>, TunnelError> {
    let mut out = tierlab_wire::pool::take(inner.len() + overhead(p.dst));
    encapsulate_into(inner, p, &mut out)?;
    Ok(out)
}

/// Like [`encapsulate`], into `out` (cleared first), reusing its allocation.
///
/// # Errors
/// As [`encapsulate`].
pub fn encapsulate_into(
    inner: &[u8],
    p: &EncapParams,
    out: &mut Vec<u8>,
) -> Result<(), TunnelError> {
    let (inner_ttl, inner_ds, inner_df, len, proto) = inner_fields(inner)?;
    let inner = &inner[..len];
    // IPv4 limits the total length, IPv6 the payload length, to 65,535 bytes.
    let limited = if p.dst.is_ipv4() {
        len + ipv4::HEADER_LEN
    } else {
        len
    };
    if limited > usize::from(u16::MAX) {
        return Err(TunnelError::TooLong(len + overhead(p.dst)));
    }
    let ttl = match p.ttl {
        TtlMode::Inherit => inner_ttl,
        TtlMode::Fixed(t) => t,
    };
    let ds = match p.ds {
        DsMode::Inherit => ecn_encapsulate(inner_ds),
        DsMode::Fixed(d) => d,
    };
    let header = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpHeader::V4(Ipv4Repr {
            ttl,
            tos: ds,
            ident: p.ident,
            dont_frag: match p.df {
                DfMode::Copy => inner_df,
                DfMode::Set => true,
                DfMode::Clear => false,
            },
            ..Ipv4Repr::new(s, d, proto)
        }),
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeader::V6(Ipv6Repr {
            hop_limit: ttl,
            traffic_class: ds,
            ..Ipv6Repr::new(s, d, proto)
        }),
        (src, dst) => return Err(TunnelError::MixedOuterFamilies { src, dst }),
    };
    PacketBuilder::from_header(header)
        .raw_into(proto, inner, out)
        .map_err(|_| TunnelError::TooLong(len + overhead(p.dst)))
}

/// (TTL, DS field, DF, length, outer protocol number) of an inner packet.
pub(crate) fn inner_fields(inner: &[u8]) -> Result<(u8, u8, bool, usize, IpProto), TunnelError> {
    let v = IpView::new_checked(inner, false).map_err(TunnelError::Inner)?;
    let proto = if v.is_ipv4() {
        IpProto::Ipip
    } else {
        IpProto::Ipv6
    };
    Ok((v.ttl(), v.dsfield(), v.dont_frag(), v.len(), proto))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_wire::{Packet, TcpFlags, TcpRepr, Transport};

    fn syn(src: &str, dst: &str) -> Vec<u8> {
        let t = TcpRepr {
            sport: 40000,
            dport: 80,
            flags: TcpFlags::SYN,
            mss: Some(1460),
            ..TcpRepr::default()
        };
        PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
            .unwrap()
            .ttl(61)
            .dsfield(0x2b) // DSCP 10, ECN CE
            .tcp(&t, &[])
            .unwrap()
    }

    #[test]
    fn four_forms_get_the_right_protocol_numbers() {
        let v4 = syn("203.0.113.7", "198.51.100.1");
        let v6 = syn("2001:db8::cb00:7107", "2001:db8::c633:6401");
        let o4 = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let o6 = (
            "2001:db8:1::1".parse().unwrap(),
            "2001:db8:1::2".parse().unwrap(),
        );
        for (inner, (src, dst), proto) in [
            (&v4, o4, IpProto::Ipip),
            (&v6, o4, IpProto::Ipv6),
            (&v6, o6, IpProto::Ipv6),
            (&v4, o6, IpProto::Ipip),
        ] {
            let out = encapsulate(inner, &EncapParams::ipvs(src, dst, false, 7)).unwrap();
            let p = Packet::parse(&out, true).unwrap();
            assert_eq!(p.transport, Transport::Tunnel(proto));
            assert_eq!(p.payload, inner.as_slice());
            assert_eq!(p.ip.ttl(), 61);
            // ECN CE inside becomes ECT(0) outside; DSCP kept.
            assert_eq!(p.ip.dsfield(), 0x2a);
            assert_eq!(out.len(), inner.len() + overhead(dst));
        }
    }

    #[test]
    fn df_modes() {
        let v4 = syn("203.0.113.7", "198.51.100.1"); // DF set by default
        let (s, d) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let df = |mode| {
            let p = EncapParams {
                df: mode,
                ..EncapParams::ipvs(s, d, false, 0)
            };
            let out = encapsulate(&v4, &p).unwrap();
            match Packet::parse(&out, true).unwrap().ip {
                IpHeader::V4(h) => h.dont_frag,
                IpHeader::V6(_) => unreachable!("outer is IPv4"),
            }
        };
        assert!(df(DfMode::Copy));
        assert!(!df(DfMode::Clear));
        assert!(df(DfMode::Set));
        assert!(!EncapParams::ipvs(s, d, false, 0).df.eq(&DfMode::Copy));
    }

    #[test]
    fn bad_inner_and_mixed_outer_are_errors() {
        let (s4, d6): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let v4 = syn("203.0.113.7", "198.51.100.1");
        assert!(matches!(
            encapsulate(&v4, &EncapParams::ipvs(s4, d6, false, 0)),
            Err(TunnelError::MixedOuterFamilies { .. })
        ));
        assert!(matches!(
            encapsulate(&[0x45, 0], &EncapParams::ipvs(s4, s4, false, 0)),
            Err(TunnelError::Inner(_))
        ));
        assert!(matches!(
            encapsulate(&[], &EncapParams::ipvs(s4, s4, false, 0)),
            Err(TunnelError::Inner(_))
        ));
    }
}
