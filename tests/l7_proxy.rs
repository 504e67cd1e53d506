//! Client → director (IPIP) → proxy → backend, with both TCP kinds: the object arrives intact,
//! the PROXY header carries the client's address, a mid-stream segment delivered to a second
//! proxy is reset and the client records who reset it, drain keeps existing connections while
//! new ones go elsewhere, and `monitor-uri` flips to 503.

use std::net::SocketAddr;

use tierlab::l7::client::{ConnRecord, Outcome};
use tierlab::l7::proxy::{DropReason, ProxyEvent};
use tierlab::l7::{
    ClientConfig, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpStack, Testbed,
};
use tierlab::wire::{Duration, Instant, Packet};

fn scripted() -> ScriptedStack {
    ScriptedStack::new(ScriptedConfig::default())
}

fn smol() -> SmolStack {
    SmolStack::new(SmolConfig::default())
}

fn client(n: u64, size: u64) -> ClientConfig {
    let mut c = ClientConfig::lab();
    c.parallel = n as usize;
    c.max_connections = Some(n);
    c.object_size = size;
    c.stop_probability = 0.0;
    c
}

fn bed<S: TcpStack>(
    proxies: u8,
    backends: u8,
    c: ClientConfig,
    make: impl FnMut() -> S,
) -> Testbed<S> {
    Testbed::new(
        proxies,
        backends,
        c,
        Duration::from_micros(100),
        42,
        make,
        |_| {},
    )
    .unwrap()
}

fn object_arrives_intact<S: TcpStack>(make: impl FnMut() -> S) {
    let mut b = bed(1, 2, client(4, 300_000), make);
    b.start();
    b.run_until(Instant::from_secs(60));
    let recs = b.client.take_records();
    assert_eq!(recs.len(), 4, "{recs:?}");
    for r in &recs {
        assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
        assert_eq!(r.bytes, 300_000);
    }
    // The PROXY header told each backend the real client and the VIP.
    let mut served = Vec::new();
    for be in &mut b.backends {
        served.extend(be.take_served());
    }
    assert_eq!(served.len(), 4);
    let mut clients: Vec<SocketAddr> = served.iter().map(|s| s.client.unwrap()).collect();
    let mut expected: Vec<SocketAddr> = recs.iter().map(|r| r.src).collect();
    clients.sort();
    expected.sort();
    assert_eq!(clients, expected);
    for s in &served {
        let rec = recs.iter().find(|r| Some(r.src) == s.client).unwrap();
        assert_eq!(s.proxied_to, Some(rec.vip));
        assert_eq!(s.peer.ip(), b.proxies[0].config().backend_addr);
        assert_eq!(s.size, 300_000);
    }
    // Round robin over the two backends.
    assert_eq!(
        b.backends[0].stack().connections() > 0,
        b.backends[1].stack().connections() > 0
    );
    assert_eq!(b.stats().unroutable, 0);
    assert_eq!(b.proxies[0].sessions(), 0, "every session ended");
    let mut ends = Vec::new();
    while let Some(e) = b.proxies[0].poll_event() {
        if let ProxyEvent::SessionEnded { end, .. } = e {
            ends.push(end);
        }
    }
    assert_eq!(ends, vec![tierlab::l7::proxy::SessionEnd::Completed; 4]);
}

#[test]
fn object_arrives_intact_scripted() {
    object_arrives_intact(scripted);
}

#[test]
fn object_arrives_intact_smoltcp() {
    object_arrives_intact(smol);
}

fn second_proxy_resets<S: TcpStack>(make: impl FnMut() -> S) {
    let mut b = bed(2, 1, client(1, 5_000_000), make);
    b.active = vec![0]; // the director schedules new flows on proxy 1 only
    b.start();
    b.run_until(Instant::from_millis(1_500));
    assert!(b.client.records().is_empty(), "still reading");
    let (&flow, &p) = b.flows.iter().next().unwrap();
    assert_eq!(p, 0, "the only flow went to proxy 1");
    // The director now sends this flow to proxy 2 (e.g. after an ECMP change to a director
    // without state): its next segment reaches a proxy that does not know it.
    b.flows.insert(flow, 1);
    b.run_until(Instant::from_secs(5));
    let recs = b.client.take_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].outcome,
        Outcome::Reset {
            by: Some(Testbed::<S>::proxy_tag(1))
        }
    );
    let mut resets = Vec::new();
    while let Some(e) = b.proxies[1].poll_event() {
        if let ProxyEvent::ResetSent { local, remote } = e {
            resets.push((local, remote));
        }
    }
    assert!(resets.contains(&(recs[0].vip, recs[0].src)), "{resets:?}");
    assert_eq!(b.proxies[1].sessions(), 0);
}

#[test]
fn mid_stream_segment_at_second_proxy_is_reset_scripted() {
    second_proxy_resets(scripted);
}

#[test]
fn mid_stream_segment_at_second_proxy_is_reset_smoltcp() {
    second_proxy_resets(smol);
}

fn drain_keeps_existing<S: TcpStack>(make: impl FnMut() -> S) {
    // Four long connections spread over two backends, then backend 1 says "drain".
    let mut b = bed(1, 2, client(4, 1_000_000), make);
    b.start();
    b.run_until(Instant::from_millis(500));
    let before: Vec<usize> = b.backends.iter().map(|x| x.open()).collect();
    assert_eq!(before, [2, 2], "roundrobin spread");
    b.backends[0].set_agent_reply("drain");
    b.run_until(Instant::from_millis(2_600)); // one agent-inter later
    assert!(b.proxies[0].pool().servers()[0].drain);
    assert!(!b.proxies[0].pool().servers()[0].usable());
    assert!(b.proxies[0].monitor_ok(), "backend 2 still usable");
    assert_eq!(
        b.backends[0].open(),
        2,
        "drained backend keeps its connections"
    );
    // New connections: all to backend 2.
    let now = b.now();
    let mut rng = tierlab::wire::rng::seeded(9);
    for _ in 0..4 {
        b.client.open_one(now, &mut rng).unwrap();
    }
    b.run_until(Instant::from_secs(120));
    let recs: Vec<ConnRecord> = b.client.take_records();
    assert_eq!(recs.len(), 8);
    assert!(
        recs.iter().all(|r| r.outcome == Outcome::Completed),
        "drain refuses none: {recs:?}"
    );
    let late0 = b.backends[0]
        .take_served()
        .iter()
        .filter(|s| s.at > Instant::from_millis(2_600))
        .count();
    let late1 = b.backends[1]
        .take_served()
        .iter()
        .filter(|s| s.at > Instant::from_millis(2_600))
        .count();
    assert_eq!((late0, late1), (0, 4));
}

#[test]
fn drain_keeps_existing_connections_scripted() {
    drain_keeps_existing(scripted);
}

#[test]
fn drain_keeps_existing_connections_smoltcp() {
    drain_keeps_existing(smol);
}

fn monitor_flips<S: TcpStack>(make: impl FnMut() -> S) {
    let mut b = bed(1, 2, client(0, 1), make);
    b.run_until(Instant::from_millis(100));
    b.probe_monitor(0).unwrap();
    b.run_until(Instant::from_millis(200));
    assert_eq!(b.monitor_results().last().map(|m| m.2), Some(200));
    // Every backend's agent says down: after the next agent round, 503.
    for be in &mut b.backends {
        be.set_agent_reply("down");
    }
    b.run_until(Instant::from_millis(2_200));
    assert_eq!(b.proxies[0].pool().usable(), 0);
    b.probe_monitor(0).unwrap();
    b.run_until(Instant::from_millis(2_300));
    assert_eq!(b.monitor_results().last().map(|m| m.2), Some(503));
    // Back up (agent "up" and the health check never failed), then the local agent file
    // says down: 503 again.
    for be in &mut b.backends {
        be.set_agent_reply("up");
    }
    b.run_until(Instant::from_millis(4_200));
    b.probe_monitor(0).unwrap();
    b.run_until(Instant::from_millis(4_300));
    assert_eq!(b.monitor_results().last().map(|m| m.2), Some(200));
    b.proxies[0].set_agent_up(false);
    b.probe_monitor(0).unwrap();
    b.run_until(Instant::from_millis(4_400));
    assert_eq!(b.monitor_results().last().map(|m| m.2), Some(503));
    assert_eq!(b.monitor_results().len(), 4);
}

#[test]
fn monitor_uri_flips_to_503_scripted() {
    monitor_flips(scripted);
}

#[test]
fn monitor_uri_flips_to_503_smoltcp() {
    monitor_flips(smol);
}

fn health_check_takes_lost_backend_down<S: TcpStack>(make: impl FnMut() -> S) {
    let mut b = bed(1, 2, client(0, 1), make);
    b.run_until(Instant::from_millis(100));
    assert_eq!(b.proxies[0].pool().usable(), 2);
    // Backend 1 disappears: its address no longer routes, checks time out.
    b.backends.remove(0);
    b.run_until(Instant::from_secs(8));
    let s = &b.proxies[0].pool().servers()[0];
    assert!(!s.up, "down after failed checks: {s:?}");
    assert!(b.proxies[0].pool().servers()[1].up);
}

#[test]
fn health_check_takes_lost_backend_down_scripted() {
    health_check_takes_lost_backend_down(scripted);
}

#[test]
fn health_check_takes_lost_backend_down_smoltcp() {
    health_check_takes_lost_backend_down(smol);
}

/// A stray segment straight to the proxy: the RST is exactly Linux's (RFC 9293 §3.10.7.1).
fn stray_segment_rst<S: TcpStack>(make: impl FnMut() -> S) {
    use tierlab::ipip::{EncapParams, encapsulate};
    use tierlab::wire::{PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
    let mut b = bed(1, 1, client(0, 1), make);
    let cl: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let vip: std::net::IpAddr = "198.51.100.2".parse().unwrap();
    let tunnel = b.proxies[0].config().tunnel_addr;
    let p = &mut b.proxies[0];
    let seg = |flags, seq, ack, data: &[u8]| {
        let t = TcpRepr {
            sport: 41_000,
            dport: 80,
            seq: TcpSeq(seq),
            ack: TcpSeq(ack),
            flags,
            window: 502,
            ..TcpRepr::default()
        };
        let inner = PacketBuilder::new(cl, vip).unwrap().tcp(&t, data).unwrap();
        encapsulate(
            &inner,
            &EncapParams::ipvs("192.0.2.4".parse().unwrap(), tunnel, false, 1),
        )
        .unwrap()
    };
    let now = Instant::from_millis(1);
    let mut answers = Vec::new();
    for pkt in [
        seg(TcpFlags::ACK | TcpFlags::PSH, 1_000, 5_555, b"hello"),
        seg(TcpFlags::FIN | TcpFlags::ACK, 7, 9, b""),
        seg(TcpFlags::RST, 7, 0, b""),
        seg(TcpFlags::RST | TcpFlags::ACK, 7, 9, b""),
    ] {
        p.handle_packet(now, &pkt);
        let mut out = Vec::new();
        while let Some(o) = p.poll_transmit() {
            let q = Packet::parse(&o, true).unwrap();
            if q.dst() == cl {
                out.push(*q.tcp().unwrap());
                assert_eq!(q.src(), vip, "direct return from the VIP");
            }
        }
        answers.push(out);
    }
    assert_eq!(answers[0].len(), 1);
    assert_eq!(answers[0][0].flags, TcpFlags::RST);
    assert_eq!(answers[0][0].seq, TcpSeq(5_555));
    assert_eq!((answers[0][0].sport, answers[0][0].dport), (80, 41_000));
    assert_eq!(answers[1][0].flags, TcpFlags::RST);
    assert_eq!(answers[1][0].seq, TcpSeq(9));
    assert!(
        answers[2].is_empty() && answers[3].is_empty(),
        "a RST is never answered"
    );
}

#[test]
fn stray_segment_gets_linux_rst_scripted() {
    stray_segment_rst(scripted);
}

#[test]
fn stray_segment_gets_linux_rst_smoltcp() {
    stray_segment_rst(smol);
}

#[test]
fn scripted_rst_without_ack_acknowledges() {
    use tierlab::ipip::{EncapParams, encapsulate};
    use tierlab::wire::{PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
    let mut b = bed(1, 1, client(0, 1), scripted);
    let t = TcpRepr {
        sport: 41_000,
        dport: 80,
        seq: TcpSeq(100),
        flags: TcpFlags::FIN,
        ..TcpRepr::default()
    };
    let inner = PacketBuilder::new(
        "203.0.113.9".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    )
    .unwrap()
    .tcp(&t, b"abc")
    .unwrap();
    let tunnel = b.proxies[0].config().tunnel_addr;
    let outer = encapsulate(
        &inner,
        &EncapParams::ipvs("192.0.2.4".parse().unwrap(), tunnel, false, 1),
    )
    .unwrap();
    b.proxies[0].handle_packet(Instant::from_millis(1), &outer);
    let o = b.proxies[0].poll_transmit().unwrap();
    let r = *Packet::parse(&o, true).unwrap().tcp().unwrap();
    assert_eq!(r.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(
        (r.seq, r.ack),
        (TcpSeq(0), TcpSeq(104)),
        "SEG.SEQ + 3 bytes + FIN"
    );
}

#[test]
fn icmp_for_known_flow_is_taken_unknown_dropped() {
    use tierlab::ipip::{EncapParams, encapsulate};
    use tierlab::wire::icmp::{IcmpError, build_error};
    let mut b = bed(1, 1, client(1, 5_000_000), scripted);
    b.capture().unwrap();
    b.start();
    b.run_until(Instant::from_millis(300));
    // Find a data packet the proxy sent the client, and have a router answer it with
    // "fragmentation needed" (the error travels to the VIP, so through the director).
    let pcap = b.take_pcap().unwrap().unwrap();
    let recs = tierlab::wire::pcap::read_all(&pcap[..]).unwrap();
    let vip_pkt = recs
        .iter()
        .map(|r| r.data.clone())
        .find(|d| {
            Packet::parse(d, false).is_ok_and(|p| {
                p.tcp().is_some()
                    && p.payload.len() > 1000
                    && b.proxies[0].config().vips.contains(&p.src())
            })
        })
        .expect("a data segment from a VIP");
    let router: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let err = build_error(&vip_pkt, router, IcmpError::TooBig { mtu: 1400 }, 1)
        .unwrap()
        .unwrap();
    let tunnel = b.proxies[0].config().tunnel_addr;
    let wrap = |inner: &[u8]| {
        encapsulate(
            inner,
            &EncapParams::ipvs("192.0.2.4".parse().unwrap(), tunnel, false, 2),
        )
        .unwrap()
    };
    let now = b.now();
    b.proxies[0].handle_packet(now, &wrap(&err));
    let mut pmtu = false;
    while let Some(e) = b.proxies[0].poll_event() {
        pmtu |= matches!(e, ProxyEvent::PathMtu { mtu: 1400, .. });
    }
    assert!(pmtu, "known flow: PMTU lowered");
    // The same error quoting a flow nobody has: dropped with a reason.
    let mut other = vip_pkt.clone();
    other[22] ^= 0x55; // change the quoted destination port
    let err2 = build_error(&other, router, IcmpError::TooBig { mtu: 1400 }, 1)
        .unwrap()
        .unwrap();
    b.proxies[0].handle_packet(now, &wrap(&err2));
    assert_eq!(
        b.proxies[0].drops().get(&DropReason::IcmpUnknownFlow),
        Some(&1)
    );
}

/// Every packet the proxy refuses is dropped with its reason, and the common ones it takes:
/// a tunnelled SYN to a VIP is answered; one to an address that is not a VIP, one whose
/// outer header checksum is wrong, one whose TCP checksum is wrong, one marked CE outside
/// over a packet that is not ECN-capable, a SYN to a VIP that was not tunnelled, and a
/// packet to an address that is not the proxy's are each dropped, once, for their reason.
#[test]
fn refused_packets_are_dropped_with_their_reason() {
    use std::net::IpAddr;
    use tierlab::ipip::{EncapParams, encapsulate};
    use tierlab::l7::{Proxy, ProxyConfig};
    use tierlab::wire::{PacketBuilder, TcpFlags, TcpRepr, TcpSeq, checksum};

    let mut pc = ProxyConfig::lab(1, 1);
    pc.check.enabled = false;
    pc.servers[0].agent_port = None;
    let tunnel = pc.tunnel_addr;
    let mut proxy = Proxy::new(pc, scripted()).unwrap();
    let now = Instant::from_millis(1);
    let client: IpAddr = IpAddr::from([203, 0, 113, 7]);
    let syn = |to: IpAddr, sport: u16| {
        let t = TcpRepr {
            sport,
            dport: 80,
            seq: TcpSeq(1000),
            flags: TcpFlags::SYN,
            window: 65_535,
            mss: Some(1460),
            ..TcpRepr::default()
        };
        PacketBuilder::new(client, to)
            .unwrap()
            .tcp(&t, &[])
            .unwrap()
    };
    let tunnelled = |inner: &[u8]| {
        let director = IpAddr::from([192, 0, 2, 4]);
        encapsulate(inner, &EncapParams::ipvs(director, tunnel, false, 0)).unwrap()
    };
    let vip = IpAddr::from([198, 51, 100, 1]);
    let send = |proxy: &mut Proxy<ScriptedStack>, p: &[u8]| {
        let before = proxy.drops().clone();
        proxy.handle_packet(now, p);
        let mut answered = 0;
        while proxy.poll_transmit().is_some() {
            answered += 1;
        }
        while proxy.poll_event().is_some() {}
        let new: Vec<DropReason> = proxy
            .drops()
            .iter()
            .filter(|(r, n)| before.get(r) != Some(n))
            .map(|(r, _)| *r)
            .collect();
        (new, answered)
    };
    assert_eq!(send(&mut proxy, &tunnelled(&syn(vip, 40_000))), (vec![], 1));
    let not_vip = IpAddr::from([198, 51, 100, 99]);
    assert_eq!(
        send(&mut proxy, &tunnelled(&syn(not_vip, 40_001))),
        (vec![DropReason::NotAcceptedVip], 0)
    );
    let mut bad_outer = tunnelled(&syn(vip, 40_002));
    bad_outer[10] ^= 0x01;
    assert_eq!(
        send(&mut proxy, &bad_outer),
        (vec![DropReason::Malformed], 0)
    );
    let mut bad_tcp = syn(vip, 40_003);
    let last = bad_tcp.len() - 1;
    bad_tcp[last] ^= 0x01;
    assert_eq!(
        send(&mut proxy, &tunnelled(&bad_tcp)),
        (vec![DropReason::Malformed], 0)
    );
    // CE outside (the outer header's ECN bits 11, its checksum made again), Not-ECT inside.
    let mut ce = tunnelled(&syn(vip, 40_004));
    ce[1] |= 0x03;
    ce[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&ce[..20]);
    ce[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(send(&mut proxy, &ce), (vec![DropReason::EcnCe], 0));
    assert_eq!(
        send(&mut proxy, &syn(vip, 40_005)),
        (vec![DropReason::NotTunnel], 0)
    );
    let elsewhere = IpAddr::from([192, 0, 2, 77]);
    assert_eq!(
        send(&mut proxy, &syn(elsewhere, 40_006)),
        (vec![DropReason::NotLocal], 0)
    );
}
