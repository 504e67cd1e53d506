//! Property tests of the packet layer: no parser panics on arbitrary or mutated bytes, and every
//! packet kind round-trips (build → parse → same fields; fragment → reassemble → same bytes;
//! encapsulate → decapsulate → same inner packet).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[path = "common/props.rs"]
mod props;

use proptest::prelude::*;
use tierlab::ipip::{EncapParams, TunnelEndpoint, encapsulate, ipvs};
use tierlab::wire::frag::{Reassembler, Reassembly, fragment_v4, fragment_v6};
use tierlab::wire::icmp::{self, IcmpError};
use tierlab::wire::{
    Icmpv4Repr, Icmpv6Repr, Instant, IpHeader, Ipv4Repr, Ipv6Repr, Packet, PacketBuilder, TcpFlags,
    TcpRepr, TcpSeq, Transport, UdpRepr, pcap,
};

fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into())),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into())),
    ]
}

fn tcp_repr() -> impl Strategy<Value = TcpRepr> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(0u8..15),
        any::<bool>(),
    )
        .prop_map(
            |(sport, dport, seq, ack, flags, window, mss, window_scale, sack_permitted)| TcpRepr {
                sport,
                dport,
                seq: TcpSeq(seq),
                ack: TcpSeq(ack),
                flags: TcpFlags(flags),
                window,
                mss,
                window_scale,
                sack_permitted,
            },
        )
}

/// A valid packet of some kind, with its builder's header.
fn any_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        addr_pair(),
        tcp_repr(),
        proptest::collection::vec(any::<u8>(), 0..1600),
        1u8..=255,
        0u8..4,
        any::<u16>(),
    )
        .prop_map(|((s, d), tcp, payload, ttl, kind, ident)| {
            let b = PacketBuilder::new(s, d)
                .unwrap()
                .ttl(ttl)
                .ident(ident)
                .dont_frag(ident % 2 == 0);
            match kind {
                0 => b.tcp(&tcp, &payload).unwrap(),
                1 => b
                    .udp(
                        &UdpRepr {
                            sport: tcp.sport,
                            dport: tcp.dport,
                        },
                        &payload,
                    )
                    .unwrap(),
                2 if s.is_ipv4() => b
                    .icmpv4(
                        &Icmpv4Repr::EchoRequest {
                            ident,
                            seq: tcp.sport,
                        },
                        &payload,
                    )
                    .unwrap(),
                2 => b
                    .icmpv6(
                        &Icmpv6Repr::EchoRequest {
                            ident,
                            seq: tcp.sport,
                        },
                        &payload,
                    )
                    .unwrap(),
                _ => {
                    let inner = PacketBuilder::new(s, d)
                        .unwrap()
                        .tcp(&tcp, &payload)
                        .unwrap();
                    encapsulate(&inner, &EncapParams::ipvs(s, d, false, ident)).unwrap()
                }
            }
        })
}

/// Every parser in the crate, fed the same bytes; none may panic.
fn feed_every_parser(bytes: &[u8]) {
    for verify in [false, true] {
        if let Ok(p) = Packet::parse(bytes, verify) {
            let _ = p.flow_key();
            let _ = p.icmp_quoted_flow();
        }
        let _ = Ipv4Repr::parse(bytes, verify);
    }
    let v4: (IpAddr, IpAddr) = (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::BROADCAST.into());
    let _ = Ipv6Repr::parse(bytes);
    let _ = TcpRepr::parse(bytes, 0, None);
    let _ = TcpRepr::parse(bytes, 0, Some(v4));
    let _ = UdpRepr::parse(bytes, 0, Some(v4));
    let _ = Icmpv4Repr::parse(bytes, 0, true);
    let _ = Icmpv6Repr::parse(bytes, 0, Some((Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED)));
    let _ = icmp::quoted_flow(bytes);
    let _ = icmp::build_error(bytes, v4.0, IcmpError::TooBig { mtu: 1400 }, 1);
    let _ = icmp::build_error(
        bytes,
        Ipv6Addr::LOCALHOST.into(),
        IcmpError::PortUnreachable,
        1,
    );
    let _ = Reassembler::new().push(Instant::ZERO, bytes);
    let _ = fragment_v4(bytes, 576, true);
    let _ = fragment_v6(bytes, 1280, 1);
    let _ = pcap::read_all(bytes);
    let ep = TunnelEndpoint::new(v4.1, [v4.0], 1500, false);
    let _ = ep.decap(bytes);
    let _ = ep.send(bytes, v4.0, 1);
    let _ = ipvs::tun_xmit(
        bytes,
        v4.0,
        v4.1,
        &ipvs::TunConfig {
            pmtu_disc: true,
            route_mtu: 600,
        },
        1,
    );
}

proptest! {
    #![proptest_config(props::config(2000))]

    #[test]
    fn no_parser_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        feed_every_parser(&bytes);
    }

    #[test]
    fn no_parser_panics_on_random_bytes_after_a_valid_version(
        v6 in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![if v6 { 0x60 } else { 0x45 }];
        bytes.extend(rest);
        feed_every_parser(&bytes);
    }
}

proptest! {
    #![proptest_config(props::config(600))]

    #[test]
    fn no_parser_panics_on_mutated_packets(
        packet in any_packet(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut m = packet.clone();
        for (at, x) in flips {
            let i = at % m.len();
            m[i] ^= x;
        }
        feed_every_parser(&m);
        feed_every_parser(&packet[..cut % (packet.len() + 1)]);
    }

    #[test]
    fn tcp_round_trips((s, d) in addr_pair(), tcp in tcp_repr(),
                       payload in proptest::collection::vec(any::<u8>(), 0..1400), ttl in any::<u8>()) {
        let bytes = PacketBuilder::new(s, d).unwrap().ttl(ttl).tcp(&tcp, &payload).unwrap();
        let p = Packet::parse(&bytes, true).unwrap();
        prop_assert_eq!(p.tcp(), Some(&tcp));
        prop_assert_eq!(p.payload, payload.as_slice());
        prop_assert_eq!((p.src(), p.dst(), p.ip.ttl()), (s, d, ttl));
        let k = p.flow_key();
        prop_assert_eq!((k.sport(), k.dport()), (tcp.sport, tcp.dport));
    }

    #[test]
    fn udp_and_icmp_round_trip((s, d) in addr_pair(), sport in any::<u16>(), dport in any::<u16>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let b = PacketBuilder::new(s, d).unwrap();
        let u = b.udp(&UdpRepr { sport, dport }, &payload).unwrap();
        let p = Packet::parse(&u, true).unwrap();
        prop_assert_eq!(p.transport, Transport::Udp(UdpRepr { sport, dport }));
        prop_assert_eq!(p.payload, payload.as_slice());
        let e = match s {
            IpAddr::V4(_) => b.icmpv4(&Icmpv4Repr::DestUnreachable { code: 4, next_hop_mtu: dport }, &payload),
            IpAddr::V6(_) => b.icmpv6(&Icmpv6Repr::PacketTooBig { mtu: u32::from(dport) }, &payload),
        }.unwrap();
        let p = Packet::parse(&e, true).unwrap();
        prop_assert_eq!(p.payload, payload.as_slice());
        match p.transport {
            Transport::Icmpv4(Icmpv4Repr::DestUnreachable { code: 4, next_hop_mtu }) => prop_assert_eq!(next_hop_mtu, dport),
            Transport::Icmpv6(Icmpv6Repr::PacketTooBig { mtu }) => prop_assert_eq!(mtu, u32::from(dport)),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn icmp_errors_point_back_to_the_flow(packet in any_packet()) {
        let p = Packet::parse(&packet, true).unwrap();
        let from: IpAddr = if p.src().is_ipv4() { Ipv4Addr::new(10, 0, 0, 1).into() } else { Ipv6Addr::LOCALHOST.into() };
        if let Some(err) = icmp::build_error(&packet, from, IcmpError::TooBig { mtu: 1280 }, 3).unwrap() {
            let e = Packet::parse(&err, true).unwrap();
            prop_assert_eq!(e.dst(), p.src());
            let limit = if from.is_ipv4() { 576 } else { 1280 };
            prop_assert!(err.len() <= limit);
            prop_assert_eq!(e.icmp_quoted_flow().unwrap(), Some(p.flow_key()));
        }
    }

    #[test]
    fn fragments_reassemble_in_any_order(packet in any_packet(), mtu in 68usize..1500, order in any::<u64>()) {
        let frags = match packet[0] >> 4 {
            4 => fragment_v4(&packet, mtu.max(88), true).unwrap(),
            _ => fragment_v6(&packet, mtu.max(1280), 77).unwrap(),
        };
        let mut idx: Vec<usize> = (0..frags.len()).collect();
        // A deterministic shuffle from `order`.
        for i in (1..idx.len()).rev() {
            idx.swap(i, (order as usize).wrapping_mul(i + 7) % (i + 1));
        }
        if frags.len() == 1 {
            prop_assert_eq!(&frags[0], &packet);
            return Ok(());
        }
        let mut r = Reassembler::new();
        let mut done = None;
        for i in idx {
            match r.push(Instant::ZERO, &frags[i]).unwrap() {
                Reassembly::Complete(w) => done = Some(w),
                Reassembly::Pending => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        let whole = done.expect("all fragments given");
        // Same packet apart from the IPv4 header flags the first fragment carried.
        let (a, b) = (Packet::parse(&whole, true).unwrap(), Packet::parse(&packet, true).unwrap());
        prop_assert_eq!(a.payload, b.payload);
        prop_assert_eq!(a.transport, b.transport);
        prop_assert_eq!(a.src(), b.src());
    }

    #[test]
    fn encap_decap_round_trip(packet in any_packet(), outer_v6 in any::<bool>(), ident in any::<u16>()) {
        let p = Packet::parse(&packet, true).unwrap();
        let (o1, o2): (IpAddr, IpAddr) = if outer_v6 {
            ("2001:db8:1::4".parse().unwrap(), "2001:db8:1::101".parse().unwrap())
        } else {
            ("192.0.2.4".parse().unwrap(), "192.0.2.101".parse().unwrap())
        };
        let out = encapsulate(&packet, &EncapParams::ipvs(o1, o2, false, ident)).unwrap();
        let ep = TunnelEndpoint::new(o2, [p.dst()], 1500, false);
        let d = ep.decap(&out).unwrap();
        prop_assert_eq!(d.inner.as_ref(), packet.as_slice());
        prop_assert_eq!(d.outer.dst(), o2);
        if let IpHeader::V4(h) = Packet::parse(d.outer.bytes(), true).unwrap().ip {
            prop_assert_eq!(h.ident, ident);
        }
    }
}
