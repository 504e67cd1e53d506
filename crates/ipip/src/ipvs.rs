//! IPVS TUN mode: what a director does to a packet it forwards to a real server.
//!
//! Mirrors `ip_vs_tunnel_xmit`/`ip_vs_tunnel_xmit_v6`, `__ip_vs_get_out_rt[_v6]`,
//! `decrement_ttl`, `ensure_mtu_is_adequate` and `ip_vs_prepare_tunneled_skb` in
//! net/netfilter/ipvs/ip_vs_xmit.c (Linux v6.x), in this order:
//!
//! 1. **TTL**: an inner TTL / hop limit ≤ 1 is answered with ICMP "time exceeded" and dropped;
//!    otherwise it is decremented (and the inner IPv4 checksum fixed).
//! 2. **Tunnel MTU** = route MTU − outer header (20 for IPv4, 40 for IPv6). Below 68 (IPv4
//!    outer) or 1280 (IPv6 outer) the packet is dropped.
//! 3. **MTU check** on the inner packet: IPv6 inner longer than the tunnel MTU → ICMPv6 "packet
//!    too big" (except for ICMP packets and non-first fragments) and drop. IPv4 inner with
//!    `pmtu_disc=0` → accepted whatever its size (the outer packet is fragmented later); with
//!    `pmtu_disc=1`, DF set and longer than the tunnel MTU → ICMP "fragmentation needed" with
//!    the tunnel MTU (except for ICMP packets) and drop.
//! 4. **Encapsulation**: outer TTL = the (decremented) inner TTL; DS inherited with ECN
//!    encapsulated; outer DF copied from the inner only with `pmtu_disc=1` (IPv4 outer); IPv6
//!    outer flow label 0.
//! 5. **Output**: the outer packet is fragmented to the route MTU when longer (the kernel sets
//!    `ignore_df`, so this happens even with DF); IPv6 outer packets get a fragment header.
//!
//! The ICMP errors come from the inner packet's destination (the VIP, a local address of the
//! director, which is what `__icmp_send`/`icmp6_send` pick for a locally addressed packet).
//! Not modelled: GUE and GRE tunnel types, GSO, and `maybe_update_pmtu` for local senders.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tierlab_wire::frag::{fragment_v4, fragment_v6};
use tierlab_wire::icmp::{IcmpError, build_error};
use tierlab_wire::{Packet, Transport, ipv4, ipv6};

use crate::encap::{EncapParams, TunnelError, encapsulate};

/// The director-side knobs of TUN mode.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TunConfig {
    /// `net.ipv4.vs.pmtu_disc` (lab: 0, i.e. false: fragment silently).
    pub pmtu_disc: bool,
    /// MTU of the route from the director to the real server (lab: 1500).
    pub route_mtu: u16,
}

impl Default for TunConfig {
    fn default() -> Self {
        Self {
            pmtu_disc: false,
            route_mtu: 1500,
        }
    }
}

/// What became of a packet handed to [`tun_xmit`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum TunOutput {
    /// Send these to the real server: one outer packet, or its fragments.
    Forward(Vec<Vec<u8>>),
    /// Dropped because it does not fit the tunnel; `icmp` is the error for the inner source
    /// (none for ICMP packets and non-first fragments, as the kernel sends none).
    TooBig {
        /// ICMP "fragmentation needed" / ICMPv6 "packet too big" to send back, if any.
        icmp: Option<Vec<u8>>,
        /// The tunnel MTU announced.
        mtu: u16,
    },
    /// Dropped because its TTL / hop limit expired; `icmp` is the "time exceeded" to send.
    TtlExpired {
        /// ICMP error to send back, if any.
        icmp: Option<Vec<u8>>,
    },
    /// Dropped because the route MTU leaves less than the minimum (68 or 1280) for the tunnel.
    MtuBelowMinimum,
}

/// Forwards `inner` (a packet to a VIP, as received by the director) to the real server `dest`
/// through an IPIP tunnel from `director` (outer source), as IPVS TUN mode does.
/// `ident` is the identification for the outer IPv4 header and for fragment headers.
///
/// # Errors
/// [`TunnelError`] when the inner packet does not parse or the outer families are mixed.
pub fn tun_xmit(
    inner: &[u8],
    director: IpAddr,
    dest: IpAddr,
    cfg: &TunConfig,
    ident: u16,
) -> Result<TunOutput, TunnelError> {
    xmit(
        inner,
        director,
        dest,
        cfg.route_mtu,
        cfg.pmtu_disc,
        true,
        ident,
    )
}

/// The shared transmit path: IPVS forwarding (`forwarding = true`: TTL checked and
/// decremented) or a host sending through its tunnel (`false`).
pub(crate) fn xmit(
    inner: &[u8],
    director: IpAddr,
    dest: IpAddr,
    route_mtu: u16,
    pmtu_disc: bool,
    forwarding: bool,
    ident: u16,
) -> Result<TunOutput, TunnelError> {
    let cfg = TunConfig {
        pmtu_disc,
        route_mtu,
    };
    let parsed = Packet::parse(inner, false).map_err(TunnelError::Inner)?;
    let len = parsed.len;
    let vip = parsed.dst();
    let is_icmp = matches!(
        parsed.transport,
        Transport::Icmpv4(_) | Transport::Icmpv6(_)
    );
    let not_first_fragment = matches!(parsed.transport, Transport::Fragment(_));
    if director.is_ipv4() != dest.is_ipv4() {
        return Err(TunnelError::MixedOuterFamilies {
            src: director,
            dst: dest,
        });
    }

    // 1. TTL check and decrement.
    if forwarding && parsed.ip.ttl() <= 1 {
        let icmp = build_error(&inner[..len], vip, IcmpError::TtlExceeded, ident)
            .ok()
            .flatten();
        return Ok(TunOutput::TtlExpired { icmp });
    }
    let mut inner = inner[..len].to_vec();
    if forwarding {
        // TTL above 1 was checked above.
        tierlab_wire::decrement_ttl(&mut inner);
    }

    // 2. Tunnel MTU.
    let route_mtu = usize::from(cfg.route_mtu);
    let (tun_mtu, min) = if dest.is_ipv4() {
        (route_mtu.saturating_sub(ipv4::HEADER_LEN), 68)
    } else {
        (route_mtu.saturating_sub(ipv6::HEADER_LEN), ipv6::MIN_MTU)
    };
    if tun_mtu < min {
        return Ok(TunOutput::MtuBelowMinimum);
    }

    // 3. MTU check on the inner packet.
    let too_big = len > tun_mtu;
    let refuse = match parsed.ip {
        tierlab_wire::IpHeader::V6(_) => too_big,
        tierlab_wire::IpHeader::V4(h) => cfg.pmtu_disc && h.dont_frag && too_big && !is_icmp,
    };
    if refuse {
        let icmp = if is_icmp || not_first_fragment {
            None
        } else {
            build_error(
                &inner,
                vip,
                IcmpError::TooBig {
                    mtu: tun_mtu as u32,
                },
                ident,
            )
            .ok()
            .flatten()
        };
        return Ok(TunOutput::TooBig {
            icmp,
            mtu: tun_mtu as u16,
        });
    }

    // 4. Encapsulate, 5. fragment the outer packet to the route MTU.
    let outer = encapsulate(
        &inner,
        &EncapParams::ipvs(director, dest, cfg.pmtu_disc, ident),
    )?;
    let pieces = if outer.len() <= route_mtu {
        vec![outer]
    } else if dest.is_ipv4() {
        fragment_v4(&outer, route_mtu, true).map_err(TunnelError::Inner)?
    } else {
        fragment_v6(&outer, route_mtu, u32::from(ident)).map_err(TunnelError::Inner)?
    };
    Ok(TunOutput::Forward(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_wire::{
        Icmpv4Repr, Icmpv6Repr, IpHeader, IpProto, PacketBuilder, TcpFlags, TcpRepr,
    };

    fn seg(src: &str, dst: &str, len: usize, df: bool, ttl: u8) -> Vec<u8> {
        let t = TcpRepr {
            sport: 40000,
            dport: 80,
            flags: TcpFlags::ACK,
            ..TcpRepr::default()
        };
        PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
            .unwrap()
            .ttl(ttl)
            .dont_frag(df)
            .tcp(&t, &vec![1u8; len])
            .unwrap()
    }

    fn addrs4() -> (IpAddr, IpAddr) {
        ("192.0.2.4".parse().unwrap(), "192.0.2.101".parse().unwrap())
    }

    #[test]
    fn ttl_is_decremented_and_inherited() {
        let (d, r) = addrs4();
        let inner = seg("203.0.113.7", "198.51.100.1", 100, true, 63);
        let TunOutput::Forward(out) = tun_xmit(&inner, d, r, &TunConfig::default(), 1).unwrap()
        else {
            panic!("expected forward")
        };
        assert_eq!(out.len(), 1);
        let p = Packet::parse(&out[0], true).unwrap();
        assert_eq!(p.ip.ttl(), 62);
        let IpHeader::V4(outer) = p.ip else {
            panic!("v4 outer")
        };
        assert!(
            !outer.dont_frag,
            "pmtu_disc=0 clears DF on the outer header"
        );
        let inner_p = Packet::parse(p.payload, true).unwrap();
        assert_eq!(inner_p.ip.ttl(), 62);
        assert_eq!(
            inner_p.flow_key(),
            Packet::parse(&inner, true).unwrap().flow_key()
        );
    }

    #[test]
    fn ttl_one_gets_time_exceeded_from_the_vip() {
        let (d, r) = addrs4();
        let inner = seg("203.0.113.7", "198.51.100.1", 10, true, 1);
        let TunOutput::TtlExpired { icmp: Some(e) } =
            tun_xmit(&inner, d, r, &TunConfig::default(), 1).unwrap()
        else {
            panic!("expected time exceeded")
        };
        let p = Packet::parse(&e, true).unwrap();
        assert_eq!(p.src(), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert!(matches!(
            p.transport,
            Transport::Icmpv4(Icmpv4Repr::TimeExceeded { code: 0 })
        ));
    }

    #[test]
    fn pmtu_disc_off_fragments_the_outer_packet() {
        let (d, r) = addrs4();
        let inner = seg("203.0.113.7", "198.51.100.1", 1460, true, 64); // 1500 bytes, DF
        let TunOutput::Forward(out) = tun_xmit(&inner, d, r, &TunConfig::default(), 9).unwrap()
        else {
            panic!("expected forward")
        };
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|f| f.len() <= 1500));
        let mut re = tierlab_wire::frag::Reassembler::new();
        re.push(tierlab_wire::Instant::ZERO, &out[0]).unwrap();
        let tierlab_wire::frag::Reassembly::Complete(whole) =
            re.push(tierlab_wire::Instant::ZERO, &out[1]).unwrap()
        else {
            panic!("expected reassembly")
        };
        let p = Packet::parse(&whole, true).unwrap();
        assert_eq!(p.transport, Transport::Tunnel(IpProto::Ipip));
        assert_eq!(p.payload.len(), 1500);
    }

    #[test]
    fn pmtu_disc_on_answers_frag_needed_with_tunnel_mtu() {
        let (d, r) = addrs4();
        let cfg = TunConfig {
            pmtu_disc: true,
            route_mtu: 1500,
        };
        let inner = seg("203.0.113.7", "198.51.100.1", 1460, true, 64);
        let TunOutput::TooBig {
            icmp: Some(e),
            mtu: 1480,
        } = tun_xmit(&inner, d, r, &cfg, 1).unwrap()
        else {
            panic!("expected frag needed")
        };
        let p = Packet::parse(&e, true).unwrap();
        assert!(matches!(
            p.transport,
            Transport::Icmpv4(Icmpv4Repr::DestUnreachable {
                code: 4,
                next_hop_mtu: 1480
            })
        ));
        assert_eq!(p.dst(), "203.0.113.7".parse::<IpAddr>().unwrap());
        // DF clear: fragmented instead, outer DF copied (clear).
        let inner = seg("203.0.113.7", "198.51.100.1", 1460, false, 64);
        assert!(
            matches!(tun_xmit(&inner, d, r, &cfg, 1).unwrap(), TunOutput::Forward(v) if v.len() == 2)
        );
        // Fits: outer DF copied from the inner (set).
        let inner = seg("203.0.113.7", "198.51.100.1", 1000, true, 64);
        let TunOutput::Forward(out) = tun_xmit(&inner, d, r, &cfg, 1).unwrap() else {
            panic!()
        };
        let IpHeader::V4(h) = Packet::parse(&out[0], true).unwrap().ip else {
            panic!()
        };
        assert!(h.dont_frag);
    }

    #[test]
    fn ipv6_too_big_always_answers_packet_too_big() {
        let d: IpAddr = "2001:db8:4::1".parse().unwrap();
        let r: IpAddr = "2001:db8:7::1".parse().unwrap();
        let inner = seg(
            "2001:db8::cb00:7107",
            "2001:db8::c633:6401",
            1440,
            false,
            64,
        ); // 1500 bytes
        let TunOutput::TooBig {
            icmp: Some(e),
            mtu: 1460,
        } = tun_xmit(&inner, d, r, &TunConfig::default(), 1).unwrap()
        else {
            panic!("expected packet too big")
        };
        let p = Packet::parse(&e, true).unwrap();
        assert!(matches!(
            p.transport,
            Transport::Icmpv6(Icmpv6Repr::PacketTooBig { mtu: 1460 })
        ));
        let small = seg(
            "2001:db8::cb00:7107",
            "2001:db8::c633:6401",
            1000,
            false,
            64,
        );
        assert!(
            matches!(tun_xmit(&small, d, r, &TunConfig::default(), 1).unwrap(), TunOutput::Forward(v) if v.len() == 1)
        );
    }

    #[test]
    fn tiny_route_mtu_is_refused() {
        let (d, r) = addrs4();
        let inner = seg("203.0.113.7", "198.51.100.1", 10, true, 64);
        let cfg = TunConfig {
            pmtu_disc: false,
            route_mtu: 80,
        };
        assert_eq!(
            tun_xmit(&inner, d, r, &cfg, 1).unwrap(),
            TunOutput::MtuBelowMinimum
        );
    }
}
