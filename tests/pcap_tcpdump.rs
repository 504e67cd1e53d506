//! The real-tool check: a pcap of every kind of packet tierlab builds is read back by tcpdump,
//! which must decode each one without complaint (no bad checksum, nothing truncated) and show
//! both headers of every IPIP packet.

mod common;

use std::net::IpAddr;

use tierlab::ipip::{EncapParams, encapsulate};
use tierlab::wire::frag::{fragment_v4, fragment_v6};
use tierlab::wire::icmp::{IcmpError, build_error};
use tierlab::wire::pcap::{PcapWriter, read_all};
use tierlab::wire::{Duration, Instant, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, UdpRepr};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn tcp(flags: TcpFlags, seq: u32, ack: u32) -> TcpRepr {
    TcpRepr {
        sport: 40_000,
        dport: 80,
        seq: TcpSeq(seq),
        ack: TcpSeq(ack),
        flags,
        window: 64_240,
        mss: flags.syn().then_some(1460),
        window_scale: flags.syn().then_some(7),
        sack_permitted: flags.syn(),
    }
}

/// Every packet kind of the foundation, with a label for failure messages.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (fam, c, v) in [
        ("v4", "203.0.113.7", "198.51.100.1"),
        ("v6", "2001:db8::cb00:7107", "2001:db8::c633:6401"),
    ] {
        let b = PacketBuilder::new(ip(c), ip(v)).unwrap();
        let r = PacketBuilder::new(ip(v), ip(c)).unwrap();
        let syn = b.tcp(&tcp(TcpFlags::SYN, 1000, 0), &[]).unwrap();
        out.push((fam, syn.clone()));
        out.push((
            fam,
            r.tcp(&tcp(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001), &[])
                .unwrap(),
        ));
        let get = b"GET /1000000 HTTP/1.1\r\nHost: www.example.org\r\n\r\n";
        let data = b
            .tcp(&tcp(TcpFlags::ACK | TcpFlags::PSH, 1001, 5001), get)
            .unwrap();
        out.push((fam, data.clone()));
        out.push((fam, r.tcp(&tcp(TcpFlags::RST, 5001, 0), &[]).unwrap()));
        out.push((
            fam,
            b.tcp(&tcp(TcpFlags::FIN | TcpFlags::ACK, 1049, 5001), &[])
                .unwrap(),
        ));
        out.push((
            fam,
            b.udp(
                &UdpRepr {
                    sport: 5353,
                    dport: 53,
                },
                b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            )
            .unwrap(),
        ));
        let router = if fam == "v4" {
            ip("192.0.2.1")
        } else {
            ip("2001:db8:ff::1")
        };
        out.push((
            fam,
            build_error(&data, router, IcmpError::TooBig { mtu: 1280 }, 7)
                .unwrap()
                .unwrap(),
        ));
        out.push((
            fam,
            build_error(&syn, ip(v), IcmpError::PortUnreachable, 8)
                .unwrap()
                .unwrap(),
        ));
        out.push((
            fam,
            build_error(&data, router, IcmpError::TtlExceeded, 9)
                .unwrap()
                .unwrap(),
        ));
        // IPIP: inner of this family inside each outer family.
        for (o1, o2) in [
            ("192.0.2.4", "192.0.2.101"),
            ("2001:db8:1::4", "2001:db8:1::101"),
        ] {
            out.push((
                "ipip",
                encapsulate(&syn, &EncapParams::ipvs(ip(o1), ip(o2), false, 11)).unwrap(),
            ));
        }
        // Fragments of a large segment.
        let big = b
            .ident(0x77)
            .dont_frag(false)
            .tcp(&tcp(TcpFlags::ACK, 1001, 5001), &[0x5a; 3000])
            .unwrap();
        let frags = if fam == "v4" {
            fragment_v4(&big, 1500, false).unwrap()
        } else {
            fragment_v6(&big, 1280, 0x77).unwrap()
        };
        out.extend(frags.into_iter().map(|f| ("frag", f)));
    }
    out
}

#[test]
fn tcpdump_decodes_every_packet_cleanly() {
    if !common::tcpdump::available() {
        return;
    }
    let packets = corpus();
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut t = Instant::from_secs(1);
    for (_, p) in &packets {
        w.write_packet(t, p).unwrap();
        t += Duration::from_millis(1);
    }
    let bytes = w.finish().unwrap();
    assert_eq!(read_all(bytes.as_slice()).unwrap().len(), packets.len());
    let stdout = common::tcpdump::decode_cleanly(&bytes, packets.len(), "wire");
    if std::env::var_os("TIERLAB_SHOW_TCPDUMP").is_some() {
        eprintln!("{stdout}");
    }
    // IPIP packets show both headers: outer protocol, then the inner addresses.
    let ipip_lines =
        stdout.matches("proto IPIP (4)").count() + stdout.matches("next-header IPIP (4)").count();
    let ip6_lines =
        stdout.matches("proto IPv6 (41)").count() + stdout.matches("next-header IPv6 (41)").count();
    assert_eq!(
        ipip_lines + ip6_lines,
        4,
        "expected 4 IPIP packets:\n{stdout}"
    );
    assert!(
        stdout.contains("192.0.2.4 > 192.0.2.101: IP"),
        "4in4 inner header not decoded:\n{stdout}"
    );
    assert!(
        stdout.contains("2001:db8:1::4 > 2001:db8:1::101: IP6"),
        "6in6 inner header not decoded:\n{stdout}"
    );
    assert!(
        stdout.contains("cksum") && stdout.contains("(correct)"),
        "checksums not verified:\n{stdout}"
    );
    assert!(
        stdout.contains("need to frag (mtu 1280)") && stdout.contains("packet too big"),
        "{stdout}"
    );
}
