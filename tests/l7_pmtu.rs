//! Path MTU discovery at the TCP endpoints: both endpoint kinds send IPv4 segments with DF
//! (Linux's default, `ip_no_pmtu_disc=0`), and when a router on the path answers a too-big
//! segment with "fragmentation needed" / "packet too big", the sender lowers that connection's
//! MSS and the data gets through in smaller segments.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use tierlab::l7::{
    ConnId, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpEvent, TcpStack,
};
use tierlab::wire::{Duration, Instant, IpHeader, Packet};

/// A client `a` and a server `b` (port 80) joined by a path whose MTU toward the client is
/// `mtu`: a larger packet from `b` is dropped and, as a router would, answered with an error
/// to `b` (delivered straight to its stack, as the proxy does, after one link delay).
struct Path<S: TcpStack> {
    a: S,
    b: S,
    local: SocketAddr,
    remote: SocketAddr,
    mtu: usize,
    now: Instant,
    wire: VecDeque<(Instant, Vec<u8>)>,
    /// Errors in flight to `b`: (when, MTU).
    errors: VecDeque<(Instant, u16)>,
    /// Sizes of the packets `b` sent, with when and whether each had DF (IPv4) set.
    sent_by_b: Vec<(Instant, usize, bool)>,
    /// When each error reached `b`.
    errors_at: Vec<Instant>,
    /// The connections `b` accepted.
    accepted: Vec<ConnId>,
}

const DELAY: Duration = Duration::from_millis(1);

impl<S: TcpStack> Path<S> {
    fn new(mut a: S, mut b: S, client: IpAddr, server: IpAddr, mtu: usize) -> Self {
        a.add_address(client);
        b.add_address(server);
        let remote = SocketAddr::new(server, 80);
        b.listen(remote).unwrap();
        Self {
            a,
            b,
            local: SocketAddr::new(client, 40_000),
            remote,
            mtu,
            now: Instant::ZERO,
            wire: VecDeque::new(),
            errors: VecDeque::new(),
            sent_by_b: Vec::new(),
            errors_at: Vec::new(),
            accepted: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(p) = self.a.poll_transmit() {
            self.wire.push_back((self.now + DELAY, p));
        }
        while let Some(p) = self.b.poll_transmit() {
            let df = match Packet::parse(&p, true).unwrap().ip {
                IpHeader::V4(h) => h.dont_frag,
                IpHeader::V6(_) => true,
            };
            self.sent_by_b.push((self.now, p.len(), df));
            if p.len() > self.mtu {
                self.errors
                    .push_back((self.now + DELAY + DELAY, self.mtu as u16));
            } else {
                self.wire.push_back((self.now + DELAY, p));
            }
        }
        while self.a.poll_event().is_some() {}
        while let Some(e) = self.b.poll_event() {
            if let TcpEvent::Accepted { id, .. } = e {
                self.accepted.push(id);
            }
        }
    }

    fn run(&mut self, until: Instant) {
        loop {
            self.pump();
            let w = self.wire.front().map(|x| x.0);
            let e = self.errors.front().map(|x| x.0);
            let (ta, tb) = (self.a.poll_timeout(), self.b.poll_timeout());
            let Some(next) = [w, e, ta, tb].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if e == Some(next) {
                let (_, mtu) = self.errors.pop_front().unwrap();
                self.errors_at.push(self.now);
                assert!(
                    self.b
                        .path_mtu_reduced(self.now, self.remote, self.local, mtu)
                );
                continue;
            }
            if w == Some(next) {
                let (_, p) = self.wire.pop_front().unwrap();
                let to_b = Packet::parse(&p, false).unwrap().dst() == self.remote.ip();
                let _ = if to_b {
                    self.b.handle_packet(self.now, &p)
                } else {
                    self.a.handle_packet(self.now, &p)
                };
                continue;
            }
            if ta.is_some_and(|t| t <= self.now) {
                self.a.handle_timeout(self.now);
            }
            if tb.is_some_and(|t| t <= self.now) {
                self.b.handle_timeout(self.now);
            }
        }
        self.now = self.now.max(until);
    }

    /// Connects, has `b` send `n` bytes, reads them at `a`; returns them.
    fn transfer(&mut self, n: usize) -> Vec<u8> {
        let a = self.a.connect(self.now, self.local, self.remote).unwrap();
        self.run(self.now + Duration::from_millis(10));
        let b = *self
            .accepted
            .last()
            .expect("the server accepted the connection");
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let (mut off, mut got) = (0, Vec::new());
        while got.len() < n && self.now < Instant::from_secs(30) {
            off += self.b.send(self.now, b, &data[off..]).unwrap();
            self.run(self.now + Duration::from_millis(20));
            let q = self.a.recv_queue(a);
            self.a.recv(self.now, a, &mut got, q).unwrap();
        }
        got
    }
}

fn expected(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn check<S: TcpStack>(mut p: Path<S>, v4: bool, immediate: bool) {
    let got = p.transfer(60_000);
    assert_eq!(got, expected(60_000), "the data gets through");
    let big: Vec<_> = p.sent_by_b.iter().filter(|s| s.1 > p.mtu).collect();
    assert!(!big.is_empty(), "full-size segments were tried first");
    assert!(!p.errors_at.is_empty());
    if v4 {
        assert!(
            p.sent_by_b.iter().all(|s| s.2),
            "every IPv4 segment carries DF"
        );
    }
    // After the first error reached the sender, nothing it sends is too big any more.
    let first = p.errors_at[0];
    assert!(
        p.sent_by_b
            .iter()
            .filter(|s| s.0 > first)
            .all(|s| s.1 <= p.mtu),
        "{:?}",
        p.sent_by_b
    );
    // The lost segments are resent: at once by the scripted stack (Linux's
    // tcp_simple_retransmit), by the retransmission timer with smoltcp.
    let resent_at = p
        .sent_by_b
        .iter()
        .find(|s| s.0 >= first && s.1 > 1000)
        .map(|s| s.0)
        .unwrap();
    let delay = (resent_at - first).as_nanos() / 1000;
    eprintln!(
        "{} errors, first at {first:?}, resent {delay} µs later",
        p.errors_at.len()
    );
    if immediate {
        assert_eq!(delay, 0, "resent when the error arrived");
    } else {
        assert!(delay <= 1_100_000, "resent within an RTO: {delay} µs");
    }
}

/// The same check over IPv4 and IPv6, between two fresh stacks of one kind.
fn check_both_families<S: TcpStack>(make: impl Fn() -> S, immediate: bool) {
    for (client, server, v4) in [
        ("203.0.113.7", "198.51.100.1", true),
        ("2001:db8::cb00:7107", "2001:db8::c633:6401", false),
    ] {
        let path = Path::new(
            make(),
            make(),
            client.parse().unwrap(),
            server.parse().unwrap(),
            1400,
        );
        check(path, v4, immediate);
    }
}

#[test]
fn scripted_sender_lowers_its_mss_and_resends_at_once() {
    check_both_families(|| ScriptedStack::new(ScriptedConfig::default()), true);
}

#[test]
fn smoltcp_sender_lowers_its_mss_and_resends_on_its_timer() {
    check_both_families(|| SmolStack::new(SmolConfig::default()), false);
}

/// An error that does not lower the MTU (a second error for the same window) changes
/// nothing, and an error for an unknown connection is refused.
#[test]
fn repeated_and_unknown_errors() {
    let mut p = Path::new(
        ScriptedStack::new(ScriptedConfig::default()),
        ScriptedStack::new(ScriptedConfig::default()),
        "203.0.113.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
        1400,
    );
    let got = p.transfer(30_000);
    assert_eq!(got.len(), 30_000);
    // Every segment of the first window was too big: one error each, one resend only.
    assert!(p.errors_at.len() > 5, "{}", p.errors_at.len());
    let first = p.errors_at[0];
    let resent = p
        .sent_by_b
        .iter()
        .filter(|s| s.0 == first && s.1 > 1000)
        .count();
    let window: usize = 65_535usize.div_ceil(1360);
    assert!(resent <= window, "one window resent, not one per error");
    let stranger = SocketAddr::new("203.0.113.8".parse().unwrap(), 40_000);
    assert!(!p.b.path_mtu_reduced(p.now, p.remote, stranger, 1280));
}
