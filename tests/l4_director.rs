//! The director node end to end: packets in, IPIP packets or typed drops out, on virtual time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tierlab_l4::{
    DestId, Director, DirectorConfig, DropReason, SchedulerKind, ServiceConfig, ServiceId, Verdict,
};
use tierlab_wire::icmp::{IcmpError, build_error};
use tierlab_wire::{
    Duration, FlowKey, Icmpv4Repr, Instant, IpProto, Packet, PacketBuilder, TcpFlags, TcpRepr,
    TcpSeq, Transport,
};

const DIRECTOR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn proxies() -> Vec<(Ipv4Addr, Ipv6Addr)> {
    (1..=13u8)
        .map(|i| {
            (
                Ipv4Addr::new(192, 0, 2, 100 + i),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(i)),
            )
        })
        .collect()
}

fn lab() -> Director {
    Director::lab(DIRECTOR, "2001:db8:2::11".parse().unwrap(), &proxies()).unwrap()
}

fn svc(d: &Director, vip: IpAddr) -> ServiceId {
    d.find_service(IpProto::Tcp, vip, 80).unwrap()
}

fn seg(src: IpAddr, sport: u16, dst: IpAddr, flags: TcpFlags) -> Vec<u8> {
    let t = TcpRepr {
        sport,
        dport: 80,
        seq: TcpSeq(1000),
        flags,
        window: 64240,
        ..TcpRepr::default()
    };
    PacketBuilder::new(src, dst).unwrap().tcp(&t, b"").unwrap()
}

fn client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, i))
}

fn ack() -> TcpFlags {
    TcpFlags::ACK
}

/// Sends `bytes` and expects a forward; returns (dest, new entry, outer packets).
#[track_caller]
fn forward(d: &mut Director, now: Instant, bytes: &[u8]) -> (DestId, IpAddr, bool, Vec<Vec<u8>>) {
    match d.handle_packet(now, bytes) {
        Verdict::Forward {
            dest,
            dest_addr,
            new_entry,
            packets,
            ..
        } => (dest, dest_addr, new_entry, packets),
        other => panic!("expected a forward, got {other:?}"),
    }
}

#[track_caller]
fn dropped(d: &mut Director, now: Instant, bytes: &[u8]) -> (DropReason, Option<Vec<u8>>) {
    match d.handle_packet(now, bytes) {
        Verdict::Drop { reason, reply } => (reason, reply),
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn syn_is_tunnelled_to_the_proxy_the_scheduler_picks() {
    let mut d = lab();
    let s = svc(&d, VIP.into());
    let syn = seg(client(7), 41000, VIP.into(), TcpFlags::SYN);
    let flow = Packet::parse(&syn, true).unwrap().flow_key();
    let expected = d.service(s).unwrap().schedule(&flow).unwrap();
    let (dest, addr, new, packets) = forward(&mut d, Instant::ZERO, &syn);
    assert_eq!((dest, new), (expected, true));
    assert_eq!(addr, d.service(s).unwrap().dest(dest).unwrap().addr);
    assert_eq!(packets.len(), 1);
    let outer = Packet::parse(&packets[0], true).unwrap();
    assert_eq!((outer.src(), outer.dst()), (IpAddr::V4(DIRECTOR), addr));
    assert_eq!(outer.transport, Transport::Tunnel(IpProto::Ipip));
    let inner = Packet::parse(outer.payload, true).unwrap();
    assert_eq!(inner.flow_key(), flow);
    assert_eq!(inner.ip.ttl(), 63, "IPVS decrements the inner TTL");
}

#[test]
fn a_flow_sticks_to_its_entry_and_counters_add_up() {
    let mut d = lab();
    let s = svc(&d, VIP.into());
    let c = client(9);
    let (dest, _, _, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(c, 40000, VIP.into(), TcpFlags::SYN),
    );
    for i in 1..=5u64 {
        let (again, _, new, _) = forward(
            &mut d,
            Instant::from_millis(i),
            &seg(c, 40000, VIP.into(), ack()),
        );
        assert_eq!((again, new), (dest, false));
    }
    let stats = d.service(s).unwrap().dest(dest).unwrap().stats;
    assert_eq!((stats.flows, stats.packets, stats.entries), (1, 6, 1));
    assert_eq!(d.conns().len(), 1);
}

#[test]
fn sloppy_tcp_schedules_a_mid_flow_ack_but_never_a_rst() {
    let mut d = lab();
    let (_, _, new, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(client(1), 40001, VIP.into(), ack()),
    );
    assert!(new, "sloppy_tcp=1: a bare ACK creates the entry");
    let (reason, _) = dropped(
        &mut d,
        Instant::ZERO,
        &seg(client(1), 40002, VIP.into(), TcpFlags::RST),
    );
    assert_eq!(reason, DropReason::NotSyn);

    let mut strict = Director::new(DirectorConfig {
        tunnel_src_v4: Some(DIRECTOR),
        sloppy_tcp: false,
        ..DirectorConfig::default()
    });
    let s = strict
        .add_service(ServiceConfig::tcp_with_port_flag(
            VIP.into(),
            80,
            SchedulerKind::Mh,
        ))
        .unwrap();
    strict
        .add_dest(s, "192.0.2.101".parse().unwrap(), 80, 1)
        .unwrap();
    let (reason, _) = dropped(
        &mut strict,
        Instant::ZERO,
        &seg(client(1), 40001, VIP.into(), ack()),
    );
    assert_eq!(reason, DropReason::NotSyn);
    assert_eq!(strict.drops().get(&DropReason::NotSyn), Some(&1));
}

#[test]
fn packets_not_for_a_virtual_service_get_typed_reasons() {
    let mut d = lab();
    let other: IpAddr = "198.51.100.9".parse().unwrap();
    assert_eq!(
        dropped(
            &mut d,
            Instant::ZERO,
            &seg(client(1), 1, other, TcpFlags::SYN)
        )
        .0,
        DropReason::NotLocal
    );
    d.add_local_address(other);
    assert_eq!(
        dropped(
            &mut d,
            Instant::ZERO,
            &seg(client(1), 1, other, TcpFlags::SYN)
        )
        .0,
        DropReason::NoService
    );
    let t = TcpRepr {
        sport: 1,
        dport: 81,
        seq: TcpSeq(0),
        flags: TcpFlags::SYN,
        ..TcpRepr::default()
    };
    let port81 = PacketBuilder::new(client(1), VIP.into())
        .unwrap()
        .tcp(&t, b"")
        .unwrap();
    assert_eq!(
        dropped(&mut d, Instant::ZERO, &port81).0,
        DropReason::NoService
    );
    assert_eq!(
        dropped(&mut d, Instant::ZERO, &[0x45, 0, 0]).0,
        DropReason::Malformed
    );
    let echo = PacketBuilder::new(client(1), VIP.into())
        .unwrap()
        .icmpv4(&Icmpv4Repr::EchoRequest { ident: 1, seq: 1 }, b"ping")
        .unwrap();
    assert_eq!(
        dropped(&mut d, Instant::ZERO, &echo).0,
        DropReason::NotVirtualService
    );
}

/// A client port whose new flow from `c` the service cannot schedule (it lands on a drained
/// destination's slots).
fn refused_port(d: &Director, s: ServiceId, c: IpAddr) -> u16 {
    (1024..u16::MAX)
        .find(|p| {
            let f = FlowKey::new(c, VIP.into(), IpProto::Tcp, *p, 80).unwrap();
            d.service(s).unwrap().schedule(&f).is_none()
        })
        .expect("some port hashes onto the drained destination")
}

#[test]
fn a_drained_destination_keeps_its_flows_and_refuses_new_ones_with_port_unreachable() {
    let mut d = lab();
    let s = svc(&d, VIP.into());
    let c = client(20);
    let (dest, addr, _, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(c, 50000, VIP.into(), TcpFlags::SYN),
    );
    let table_before = d.service(s).unwrap().table();
    d.edit_dest(s, addr, 80, 0).unwrap();
    assert_eq!(
        d.service(s).unwrap().table(),
        table_before,
        "mh keeps the drained destination's slots"
    );
    let (again, _, _, _) = forward(
        &mut d,
        Instant::from_secs(1),
        &seg(c, 50000, VIP.into(), ack()),
    );
    assert_eq!(again, dest, "its established flow keeps forwarding");
    let port = refused_port(&d, s, c);
    let (reason, reply) = dropped(
        &mut d,
        Instant::from_secs(1),
        &seg(c, port, VIP.into(), TcpFlags::SYN),
    );
    assert_eq!(reason, DropReason::NoDestination);
    let reply = reply.expect("IPVS answers ICMP port unreachable");
    let icmp = Packet::parse(&reply, true).unwrap();
    assert_eq!((icmp.src(), icmp.dst()), (IpAddr::V4(VIP), c));
    assert!(matches!(
        icmp.transport,
        Transport::Icmpv4(Icmpv4Repr::DestUnreachable { code: 3, .. })
    ));
    // The port unreachable goes through the host's ICMP rate limits (Linux: a burst of 6
    // per peer, then one per `icmp_ratelimit`, 1 s): the same refused SYN sent 10 times at
    // once draws 5 more errors (one was sent above), and one more a second later.
    let answered = (0..10)
        .filter(|_| {
            let (reason, reply) = dropped(
                &mut d,
                Instant::from_secs(1),
                &seg(c, port, VIP.into(), TcpFlags::SYN),
            );
            assert_eq!(reason, DropReason::NoDestination);
            reply.is_some()
        })
        .count();
    assert_eq!(answered, 5);
    let later = dropped(
        &mut d,
        Instant::from_millis(2_000),
        &seg(c, port, VIP.into(), TcpFlags::SYN),
    );
    assert!(later.1.is_some(), "a token a second later");
    // With mh-fallback the same flow finds another destination.
    let mut fb = Director::new(DirectorConfig {
        tunnel_src_v4: Some(DIRECTOR),
        ..DirectorConfig::default()
    });
    let mut cfg = ServiceConfig::tcp_with_port_flag(VIP.into(), 80, SchedulerKind::Mh);
    cfg.flags.fallback = true;
    let fs = fb.add_service(cfg).unwrap();
    for (p4, _) in proxies() {
        fb.add_dest(fs, p4.into(), 80, 1).unwrap();
    }
    fb.edit_dest(fs, addr, 80, 0).unwrap();
    let (other, other_addr, _, _) = forward(
        &mut fb,
        Instant::ZERO,
        &seg(c, port, VIP.into(), TcpFlags::SYN),
    );
    assert_ne!(other_addr, addr);
    assert!(fb.service(fs).unwrap().dest(other).unwrap().weight > 0);
}

#[test]
fn a_deleted_destination_blackholes_its_flows_until_the_entry_expires() {
    let mut d = lab();
    let s = svc(&d, VIP.into());
    let c = client(30);
    let t0 = Instant::from_secs(10);
    forward(&mut d, t0, &seg(c, 50001, VIP.into(), TcpFlags::SYN));
    let (dest, addr, _, _) = forward(&mut d, t0, &seg(c, 50001, VIP.into(), ack())); // ESTABLISHED
    d.del_dest(s, addr, 80).unwrap();
    // Packets keep coming every minute: all dropped, none refreshes the entry.
    let mut t = t0;
    for _ in 0..14 {
        t += Duration::from_secs(60);
        d.handle_timeout(t);
        assert_eq!(
            dropped(&mut d, t, &seg(c, 50001, VIP.into(), ack())).0,
            DropReason::DestUnavailable
        );
    }
    let expiry = t0 + Duration::from_secs(15 * 60);
    assert!(d.poll_timeout().is_some_and(|w| w <= expiry));
    d.handle_timeout(expiry);
    assert_eq!(
        d.conns().len(),
        0,
        "ESTABLISHED timeout (15 min) counted from the last forwarded packet"
    );
    assert_eq!(
        d.service(s)
            .unwrap()
            .dest(dest)
            .unwrap()
            .stats
            .dropped_unavailable,
        14
    );
    // The next packet is scheduled anew (sloppy_tcp) on the table without the deleted proxy.
    let (_, new_addr, new, _) = forward(&mut d, expiry, &seg(c, 50001, VIP.into(), ack()));
    assert!(new);
    assert_ne!(new_addr, addr);
}

#[test]
fn adding_the_destination_back_revives_its_entries() {
    let mut d = lab();
    let s = svc(&d, VIP.into());
    let c = client(31);
    let (dest, addr, _, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(c, 50002, VIP.into(), TcpFlags::SYN),
    );
    d.del_dest(s, addr, 80).unwrap();
    assert_eq!(
        dropped(
            &mut d,
            Instant::from_secs(1),
            &seg(c, 50002, VIP.into(), ack())
        )
        .0,
        DropReason::DestUnavailable
    );
    assert_eq!(
        d.add_dest(s, addr, 80, 1).unwrap(),
        dest,
        "same destination, back from the trash"
    );
    assert_eq!(
        d.service(s).unwrap().list()[0],
        dest,
        "and now at the head of the list"
    );
    let (again, _, new, _) = forward(
        &mut d,
        Instant::from_secs(2),
        &seg(c, 50002, VIP.into(), ack()),
    );
    assert_eq!((again, new), (dest, false));
}

#[test]
fn expire_nodest_conn_reschedules_at_the_next_packet() {
    let mut d = Director::lab(DIRECTOR, "2001:db8:2::11".parse().unwrap(), &proxies()).unwrap();
    let mut cfg = *d.config();
    cfg.expire_nodest_conn = true;
    let mut d2 = Director::new(cfg);
    for (_, svc) in d.services() {
        let id = d2.add_service(*svc.config()).unwrap();
        for dest in svc.list().iter().rev() {
            let x = svc.dest(*dest).unwrap();
            d2.add_dest(id, x.addr, x.port, x.weight).unwrap();
        }
    }
    d = d2;
    let s = svc(&d, VIP.into());
    let c = client(32);
    let (_, addr, _, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(c, 50003, VIP.into(), TcpFlags::SYN),
    );
    d.del_dest(s, addr, 80).unwrap();
    let (_, new_addr, new, _) = forward(
        &mut d,
        Instant::from_secs(1),
        &seg(c, 50003, VIP.into(), ack()),
    );
    assert!(new, "entry expired at once and the packet scheduled anew");
    assert_ne!(new_addr, addr);
}

#[test]
fn icmp_errors_follow_the_entry_of_the_flow_they_quote() {
    let mut d = lab();
    let c = client(40);
    let (dest, addr, _, _) = forward(
        &mut d,
        Instant::ZERO,
        &seg(c, 50004, VIP.into(), TcpFlags::SYN),
    );
    // The proxy answers the client directly (from the VIP); a router on the way sends
    // "fragmentation needed" about that reply, addressed to the VIP, which ECMP brings here.
    let reply = {
        let t = TcpRepr {
            sport: 80,
            dport: 50004,
            seq: TcpSeq(1),
            flags: TcpFlags::SYN | ack(),
            ..TcpRepr::default()
        };
        PacketBuilder::new(VIP.into(), c)
            .unwrap()
            .tcp(&t, &[0u8; 1400])
            .unwrap()
    };
    let router: IpAddr = "203.0.113.254".parse().unwrap();
    let err = build_error(&reply, router, IcmpError::TooBig { mtu: 1400 }, 9)
        .unwrap()
        .unwrap();
    let (icmp_dest, icmp_addr, new, packets) = forward(&mut d, Instant::from_secs(1), &err);
    assert_eq!((icmp_dest, icmp_addr, new), (dest, addr, false));
    let inner = Packet::parse(Packet::parse(&packets[0], true).unwrap().payload, true).unwrap();
    assert!(matches!(
        inner.transport,
        Transport::Icmpv4(Icmpv4Repr::DestUnreachable { code: 4, .. })
    ));
    let s = svc(&d, VIP.into());
    assert_eq!(
        d.service(s).unwrap().dest(dest).unwrap().stats.icmp_errors,
        1
    );
    // The same error about a flow this director has no entry for is dropped.
    let stranger = {
        let t = TcpRepr {
            sport: 80,
            dport: 9,
            seq: TcpSeq(1),
            flags: ack(),
            ..TcpRepr::default()
        };
        PacketBuilder::new(VIP.into(), c)
            .unwrap()
            .tcp(&t, &[0u8; 1400])
            .unwrap()
    };
    let err = build_error(&stranger, router, IcmpError::TooBig { mtu: 1400 }, 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        dropped(&mut d, Instant::from_secs(1), &err).0,
        DropReason::IcmpNoEntry
    );
}

#[test]
fn tcp_states_set_the_timeouts() {
    let mut d = lab();
    let c = client(50);
    forward(&mut d, Instant::ZERO, &seg(c, 1, VIP.into(), TcpFlags::SYN)); // SYN_RECV, 60 s
    d.handle_timeout(Instant::from_secs(59));
    assert_eq!(d.conns().len(), 1);
    d.handle_timeout(Instant::from_secs(60));
    assert_eq!(d.conns().len(), 0);
    assert_eq!(d.expired(), 1);

    forward(
        &mut d,
        Instant::from_secs(100),
        &seg(c, 2, VIP.into(), TcpFlags::SYN),
    );
    forward(
        &mut d,
        Instant::from_secs(100),
        &seg(c, 2, VIP.into(), ack()),
    ); // ESTABLISHED
    forward(
        &mut d,
        Instant::from_secs(200),
        &seg(c, 2, VIP.into(), TcpFlags::FIN | ack()),
    ); // FIN_WAIT 120 s
    d.handle_timeout(Instant::from_secs(319));
    assert_eq!(d.conns().len(), 1);
    d.handle_timeout(Instant::from_secs(320));
    assert_eq!(d.conns().len(), 0);
}

#[test]
fn a_syn_on_a_closed_entry_is_scheduled_anew() {
    let mut d = lab();
    let c = client(60);
    forward(&mut d, Instant::ZERO, &seg(c, 3, VIP.into(), TcpFlags::SYN));
    forward(&mut d, Instant::ZERO, &seg(c, 3, VIP.into(), TcpFlags::RST)); // SYN_RECV stays (kernel table)
    let (_, _, new, _) = forward(&mut d, Instant::ZERO, &seg(c, 3, VIP.into(), TcpFlags::SYN));
    assert!(!new, "a SYN on a SYN_RECV entry keeps it");
    forward(&mut d, Instant::ZERO, &seg(c, 3, VIP.into(), ack())); // ESTABLISHED
    forward(&mut d, Instant::ZERO, &seg(c, 3, VIP.into(), TcpFlags::RST)); // CLOSE
    let (_, _, new, _) = forward(
        &mut d,
        Instant::from_secs(1),
        &seg(c, 3, VIP.into(), TcpFlags::SYN),
    );
    assert!(
        new,
        "conn_reuse_mode=1: a SYN on a CLOSE entry expires it and reschedules"
    );
    // On an ESTABLISHED entry a SYN stays on the entry.
    forward(&mut d, Instant::from_secs(2), &seg(c, 3, VIP.into(), ack()));
    let (_, _, new, _) = forward(
        &mut d,
        Instant::from_secs(3),
        &seg(c, 3, VIP.into(), TcpFlags::SYN),
    );
    assert!(!new);
}

#[test]
fn ipv6_vips_are_tunnelled_6in6() {
    let mut d = lab();
    let vip6: IpAddr = "2001:db8::c633:6401".parse().unwrap();
    let c: IpAddr = "2001:db8::cb00:7107".parse().unwrap();
    let (_, addr, _, packets) = forward(&mut d, Instant::ZERO, &seg(c, 4000, vip6, TcpFlags::SYN));
    let outer = Packet::parse(&packets[0], true).unwrap();
    assert_eq!(outer.transport, Transport::Tunnel(IpProto::Ipv6));
    assert_eq!(outer.dst(), addr);
    assert!(addr.is_ipv6());
}

#[test]
fn directors_with_different_histories_disagree_on_some_new_flows() {
    let mut a = lab();
    let mut b = lab();
    let s = svc(&b, VIP.into());
    let p3: IpAddr = "192.0.2.103".parse().unwrap();
    b.del_dest(s, p3, 80).unwrap();
    b.add_dest(s, p3, 80, 1).unwrap();
    let mut differ = 0;
    for port in 20000..22000u16 {
        let f = FlowKey::new(client(70), VIP.into(), IpProto::Tcp, port, 80).unwrap();
        let da = a
            .service(s)
            .unwrap()
            .schedule(&f)
            .map(|x| a.service(s).unwrap().dest(x).unwrap().addr);
        let db = b
            .service(s)
            .unwrap()
            .schedule(&f)
            .map(|x| b.service(s).unwrap().dest(x).unwrap().addr);
        differ += usize::from(da != db);
    }
    assert!(differ > 0 && differ < 400, "{differ} of 2000 flows differ");
    // Same inputs, same bytes.
    let syn = seg(client(71), 5555, VIP.into(), TcpFlags::SYN);
    let mut a2 = lab();
    assert_eq!(
        a.handle_packet(Instant::ZERO, &syn),
        a2.handle_packet(Instant::ZERO, &syn)
    );
}

#[test]
fn the_lab_defaults() {
    let d = lab();
    let c = d.config();
    assert!(c.sloppy_tcp && !c.pmtu_disc && !c.expire_nodest_conn && !c.expire_quiescent_template);
    assert_eq!(d.services().count(), 8);
    for last in 1..=4u8 {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last));
        let v6 = IpAddr::V6(format!("2001:db8::198.51.100.{last}").parse().unwrap());
        for vip in [v4, v6] {
            let s = d.service(svc(&d, vip)).unwrap();
            let want = if last <= 2 {
                SchedulerKind::Mh
            } else {
                SchedulerKind::Sh
            };
            assert_eq!(s.config().scheduler, want);
            assert!(s.config().flags.port && !s.config().flags.fallback);
            assert_eq!(s.list().len(), 13);
            assert_eq!(
                s.scheduler().table_size(),
                if last <= 2 { 4093 } else { 256 }
            );
            // Proxies were added in order, so the first one is at the tail of the list.
            let tail = s.dest(*s.list().last().unwrap()).unwrap().addr;
            assert_eq!(tail.is_ipv4(), vip.is_ipv4());
        }
    }
}

#[test]
fn icmpv6_packet_too_big_follows_the_entry_too() {
    let mut d = lab();
    let vip6: IpAddr = "2001:db8::c633:6401".parse().unwrap();
    let c: IpAddr = "2001:db8::cb00:7109".parse().unwrap();
    let (dest, addr, _, _) = forward(&mut d, Instant::ZERO, &seg(c, 4100, vip6, TcpFlags::SYN));
    let t = TcpRepr {
        sport: 80,
        dport: 4100,
        seq: TcpSeq(1),
        flags: TcpFlags::SYN | ack(),
        ..TcpRepr::default()
    };
    let reply = PacketBuilder::new(vip6, c)
        .unwrap()
        .tcp(&t, &[0u8; 1400])
        .unwrap();
    let router: IpAddr = "2001:db8::fe".parse().unwrap();
    let err = build_error(&reply, router, IcmpError::TooBig { mtu: 1280 }, 0)
        .unwrap()
        .unwrap();
    let (icmp_dest, icmp_addr, new, _) = forward(&mut d, Instant::from_secs(1), &err);
    assert_eq!((icmp_dest, icmp_addr, new), (dest, addr, false));
}
