//! The running Linux kernel as the oracle for what tierlab assumes about ICMP rate limits.
//!
//! tierlab's routers send a "too big" error (ICMP fragmentation needed, ICMPv6 packet too big)
//! for every packet that does not fit the next link, however many arrive at once. Linux limits
//! most ICMP errors (per peer: `icmp_ratelimit`, a burst of 6 then one per interval; globally:
//! `icmp_msgs_per_sec`), but not these: `icmpv4_mask_allow` exempts PMTU discovery, and the
//! default ICMPv6 `ratemask` (0-1,3-127) leaves type 2 out. This test checks that on the
//! running kernel, and checks that the limit it does apply is there (port unreachable), so
//! that a count of N errors for N packets means "not limited", not "limit not reached"; the
//! directors' model of that limit must give the kernel's count.
//!
//! Three namespaces: A sends, R routes, B is behind R's 1,300-byte link. A sends N UDP
//! datagrams of 1,400 bytes (IPv4 with DF) towards B through R, then N small datagrams to a
//! closed port on R, per family, from a raw socket, and counts the ICMP errors that come back
//! on its link with a packet socket. Namespaces are deleted in every exit path (see
//! `common/netns.rs`). Without root (no namespaces), the test fails when `CI` is set and says
//! it skipped otherwise.

#[path = "common/netns.rs"]
mod netns;

use std::os::fd::AsRawFd;

use netns::{Netns, PACKET_OUTGOING, capture_socket, raw_sockets, send_raw};
use nix::sys::socket::{LinkAddr, recvfrom};
use tierlab::l4::icmp_limit::{IcmpLimiter, IcmpRateLimit};
use tierlab::wire::{Icmpv4Repr, Icmpv6Repr, Instant, Packet, PacketBuilder, Transport, UdpRepr};

/// Datagrams sent per family and kind.
const N: usize = 100;

/// A sends, R routes, B sits behind R's small link.
struct Bed {
    a: Netns,
    _r: Netns,
    _b: Netns,
}

fn bed() -> Result<Bed, String> {
    let a = Netns::create("tlicmp-a")?;
    let r = Netns::create("tlicmp-r")?;
    let b = Netns::create("tlicmp-b")?;
    for ns in [&a, &r, &b] {
        ns.ip("link set lo up")?;
    }
    r.ip(&format!(
        "link add r0 address 02:00:00:00:01:01 type veth peer name a0 address 02:00:00:00:01:02 netns {}",
        a.name
    ))?;
    r.ip(&format!(
        "link add r1 mtu 1300 type veth peer name b1 mtu 1300 netns {}",
        b.name
    ))?;
    r.ip("addr add 10.1.0.1/24 dev r0")?;
    r.ip("-6 addr add fd00:1::1/64 dev r0 nodad")?;
    r.ip("addr add 10.2.0.1/24 dev r1")?;
    r.ip("-6 addr add fd00:2::1/64 dev r1 nodad")?;
    a.ip("addr add 10.1.0.2/24 dev a0")?;
    a.ip("-6 addr add fd00:1::2/64 dev a0 nodad")?;
    b.ip("addr add 10.2.0.2/24 dev b1")?;
    b.ip("-6 addr add fd00:2::2/64 dev b1 nodad")?;
    for (ns, dev) in [(&r, "r0"), (&r, "r1"), (&a, "a0"), (&b, "b1")] {
        ns.ip(&format!("link set {dev} up"))?;
    }
    // Static neighbours: no datagram waits on ARP or neighbour discovery.
    a.ip("neigh replace 10.1.0.1 lladdr 02:00:00:00:01:01 dev a0 nud permanent")?;
    a.ip("-6 neigh replace fd00:1::1 lladdr 02:00:00:00:01:01 dev a0 nud permanent")?;
    r.ip("neigh replace 10.1.0.2 lladdr 02:00:00:00:01:02 dev r0 nud permanent")?;
    r.ip("-6 neigh replace fd00:1::2 lladdr 02:00:00:00:01:02 dev r0 nud permanent")?;
    a.ip("route add default via 10.1.0.1 dev a0")?;
    a.ip("-6 route add default via fd00:1::1 dev a0")?;
    r.sysctl(&[
        "net.ipv4.ip_forward=1".into(),
        "net.ipv6.conf.all.forwarding=1".into(),
    ])?;
    Ok(Bed { a, _r: r, _b: b })
}

/// ICMP errors A received, by kind.
#[derive(Debug, Default, PartialEq)]
struct Errors {
    too_big_v4: usize,
    too_big_v6: usize,
    port_v4: usize,
    port_v6: usize,
}

fn datagram(src: &str, dst: &str, len: usize) -> Vec<u8> {
    PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
        .unwrap()
        .dont_frag(true)
        .udp(
            &UdpRepr {
                sport: 40_000,
                dport: 9,
            },
            &vec![0x5a; len],
        )
        .unwrap()
}

/// Sends every datagram from A as fast as a loop can, then counts the errors that arrive on
/// A's link until none has come for 300 ms.
fn exchange(bed: &Bed, datagrams: &[Vec<u8>]) -> Result<Errors, String> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Errors, String> {
            bed.a.enter()?;
            let cap = capture_socket(300_000)?;
            let (raw4, raw6) = raw_sockets()?;
            for d in datagrams {
                send_raw(&raw4, &raw6, d)?;
            }
            let mut errors = Errors::default();
            let mut buf = vec![0u8; 4096];
            loop {
                match recvfrom::<LinkAddr>(cap.as_raw_fd(), &mut buf) {
                    Ok((n, Some(addr))) if addr.pkttype() != PACKET_OUTGOING => {
                        let Ok(p) = Packet::parse(&buf[..n], true) else {
                            continue;
                        };
                        match p.transport {
                            Transport::Icmpv4(Icmpv4Repr::DestUnreachable { code: 4, .. }) => {
                                errors.too_big_v4 += 1;
                            }
                            Transport::Icmpv4(Icmpv4Repr::DestUnreachable { code: 3, .. }) => {
                                errors.port_v4 += 1;
                            }
                            Transport::Icmpv6(Icmpv6Repr::PacketTooBig { .. }) => {
                                errors.too_big_v6 += 1;
                            }
                            Transport::Icmpv6(Icmpv6Repr::DestUnreachable { code: 4 }) => {
                                errors.port_v6 += 1;
                            }
                            _ => {}
                        }
                    }
                    Ok(_) => {}
                    Err(nix::errno::Errno::EAGAIN) => return Ok(errors),
                    Err(e) => return Err(format!("capture: {e}")),
                }
            }
        })
        .join()
        .map_err(|_| "sending thread panicked".to_string())?
    })
}

/// Creates the namespaces, or says why the test cannot run here.
fn bed_or_skip() -> Option<Bed> {
    match bed() {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but network namespaces cannot be used (run as root): {e}")
        }
        Err(e) => {
            eprintln!(
                "linux_icmp_ratelimit: skipped, network namespaces unavailable (not root?): {e}"
            );
            None
        }
    }
}

#[test]
fn linux_sends_every_too_big_error_and_limits_port_unreachable() {
    let Some(bed) = bed_or_skip() else {
        return;
    };
    // Too big: 1,400 bytes towards B do not fit R's 1,300-byte link.
    let mut too_big = Vec::new();
    for _ in 0..N {
        too_big.push(datagram("10.1.0.2", "10.2.0.2", 1400));
        too_big.push(datagram("fd00:1::2", "fd00:2::2", 1400));
    }
    let got = exchange(&bed, &too_big).unwrap();
    eprintln!("too big, {N} datagrams per family: {got:?}");
    assert_eq!(
        (got.too_big_v4, got.too_big_v6),
        (N, N),
        "one too-big error per packet, none held back: {got:?}"
    );
    // Port unreachable from R itself: limited per peer (a burst of 6, then one per
    // `icmp_ratelimit`; IPv6 scales its interval down by the route's prefix length).
    let mut closed = Vec::new();
    for _ in 0..N {
        closed.push(datagram("10.1.0.2", "10.1.0.1", 100));
        closed.push(datagram("fd00:1::2", "fd00:1::1", 100));
    }
    let got = exchange(&bed, &closed).unwrap();
    eprintln!("closed port, {N} datagrams per family: {got:?}");
    // The directors' model of the limit (`tierlab::l4::icmp_limit`) gives the kernel's count
    // for IPv4, whose one-second interval no send loop comes near; IPv6's 25 ms (100 ms on
    // a /64 route) could let a slow loop earn one more, so it is only bounded below.
    let mut model = IcmpLimiter::new(IcmpRateLimit {
        v6_route_prefix_len: 64,
        ..IcmpRateLimit::default()
    });
    let at = Instant::from_secs(100);
    let model_v4 = (0..N)
        .filter(|_| model.allow(at, "10.1.0.2".parse().unwrap()))
        .count();
    let model_v6 = (0..N)
        .filter(|_| model.allow(at, "fd00:1::2".parse().unwrap()))
        .count();
    assert_eq!(got.port_v4, model_v4, "{got:?}");
    assert!(
        got.port_v6 >= model_v6,
        "{got:?} against the model's {model_v6}"
    );
    for (family, n) in [("IPv4", got.port_v4), ("IPv6", got.port_v6)] {
        assert!(
            (1..=N / 4).contains(&n),
            "{family}: {n} port-unreachable errors for {N} datagrams: the limit should hold most back ({got:?})"
        );
    }
}
