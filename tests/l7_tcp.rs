//! The TCP endpoints on their own: two hosts on a link with a delay and a switchable
//! blackhole. Retransmission with RFC 6298 backoff, surviving a short blackhole, giving up
//! after `tcp_retries2` / `tcp_syn_retries`, RFC 5961 challenge ACKs, TIME-WAIT, zero-window
//! probing, the same transfer over smoltcp, and a connect refused by an ICMP error (both kinds).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use tierlab::l7::stack::icmp_hard_error;
use tierlab::l7::{
    CloseCause, ConnId, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpEvent, TcpStack,
};
use tierlab::wire::icmp::{IcmpError, build_error};
use tierlab::wire::{
    Duration, Instant, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, Transport,
};

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from(ip), port)
}

/// Two hosts joined by a link of `delay` each way; packets sent while `blackhole` is set
/// vanish.
struct Pair<S: TcpStack> {
    a: S,
    b: S,
    delay: Duration,
    now: Instant,
    wire: VecDeque<(Instant, bool, Vec<u8>)>,
    blackhole: bool,
    /// Every packet sent: (time, sent by a, TCP header, payload length, dropped).
    log: Vec<(Instant, bool, TcpRepr, usize, bool)>,
    ev_a: Vec<TcpEvent>,
    ev_b: Vec<TcpEvent>,
}

impl<S: TcpStack> Pair<S> {
    fn new(mut a: S, mut b: S) -> Self {
        a.add_address(IpAddr::from(A));
        b.add_address(IpAddr::from(B));
        b.listen(sa(B, 80)).unwrap();
        Self {
            a,
            b,
            delay: Duration::from_millis(1),
            now: Instant::ZERO,
            wire: VecDeque::new(),
            blackhole: false,
            log: Vec::new(),
            ev_a: Vec::new(),
            ev_b: Vec::new(),
        }
    }

    fn pump(&mut self) {
        for from_a in [true, false] {
            loop {
                let p = if from_a {
                    self.a.poll_transmit()
                } else {
                    self.b.poll_transmit()
                };
                let Some(p) = p else { break };
                let q = Packet::parse(&p, true).expect("stacks emit valid packets");
                let Transport::Tcp(t) = q.transport else {
                    panic!("not TCP")
                };
                self.log
                    .push((self.now, from_a, t, q.payload.len(), self.blackhole));
                if !self.blackhole {
                    self.wire.push_back((self.now + self.delay, from_a, p));
                }
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.ev_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.ev_b.push(e);
        }
    }

    /// Runs until `until`, delivering in time order.
    fn run(&mut self, until: Instant) {
        loop {
            self.pump();
            let w = self.wire.front().map(|x| x.0);
            let ta = self.a.poll_timeout();
            let tb = self.b.poll_timeout();
            let Some(next) = [w, ta, tb].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if w == Some(next) {
                let (_, from_a, p) = self.wire.pop_front().unwrap();
                if from_a {
                    let _ = self.b.handle_packet(self.now, &p);
                } else {
                    let _ = self.a.handle_packet(self.now, &p);
                }
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

    fn connect(&mut self) -> (ConnId, ConnId) {
        let id = self.a.connect(self.now, sa(A, 40_000), sa(B, 80)).unwrap();
        self.run(self.now + Duration::from_millis(10));
        let bid = self
            .ev_b
            .iter()
            .find_map(|e| match e {
                TcpEvent::Accepted { id, .. } => Some(*id),
                _ => None,
            })
            .expect("accepted");
        assert!(self.ev_a.contains(&TcpEvent::Connected { id }));
        (id, bid)
    }

    fn drain(&mut self, id: ConnId) -> Vec<u8> {
        let mut v = Vec::new();
        let n = self.b.recv_queue(id);
        self.b.recv(self.now, id, &mut v, n).unwrap();
        v
    }
}

fn scripted() -> ScriptedStack {
    ScriptedStack::new(ScriptedConfig::default())
}

fn data_retransmissions(log: &[(Instant, bool, TcpRepr, usize, bool)]) -> Vec<Instant> {
    // Segments from A carrying data whose sequence number was already sent before.
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (t, from_a, h, len, _) in log {
        if *from_a && *len > 0 && !seen.insert(h.seq.0) {
            out.push(*t);
        }
    }
    out
}

#[test]
fn short_blackhole_is_survived_with_exponential_backoff() {
    let mut p = Pair::new(scripted(), scripted());
    let (a, b) = p.connect();
    p.blackhole = true;
    let sent = p.a.send(p.now, a, &[7u8; 3000]).unwrap();
    assert_eq!(sent, 3000);
    p.run(p.now + Duration::from_secs(3));
    let rtx = data_retransmissions(&p.log);
    // RTO after a ~2 ms RTT sample is the 200 ms floor; then 400, 800, 1600 ms.
    assert!(rtx.len() >= 3, "{rtx:?}");
    let gaps: Vec<u64> = rtx.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(&gaps[..2], &[400, 800], "doubling backoff: {rtx:?}");
    p.blackhole = false;
    p.run(p.now + Duration::from_secs(5));
    assert_eq!(
        p.drain(b),
        vec![7u8; 3000],
        "the data survives the blackhole"
    );
    assert!(!p.ev_a.iter().any(|e| matches!(e, TcpEvent::Closed { .. })));
}

#[test]
fn gives_up_after_retries2_without_a_rst() {
    let cfg = ScriptedConfig {
        retries2: 3,
        ..ScriptedConfig::default()
    };
    let mut p = Pair::new(ScriptedStack::new(cfg.clone()), ScriptedStack::new(cfg));
    let (a, _) = p.connect();
    p.blackhole = true;
    p.a.send(p.now, a, b"lost").unwrap();
    p.run(p.now + Duration::from_secs(60));
    assert_eq!(data_retransmissions(&p.log).len(), 3);
    assert!(p.ev_a.contains(&TcpEvent::Closed {
        id: a,
        cause: CloseCause::TimedOut
    }));
    assert!(
        !p.log
            .iter()
            .any(|(_, from_a, h, ..)| *from_a && h.flags.rst()),
        "Linux's tcp_write_err sends no RST"
    );
    assert_eq!(p.a.connections(), 0);
}

#[test]
fn syn_retries_then_timeout() {
    let cfg = ScriptedConfig {
        syn_retries: 2,
        ..ScriptedConfig::default()
    };
    let mut p = Pair::new(ScriptedStack::new(cfg), scripted());
    p.blackhole = true;
    let id =
        p.a.connect(Instant::ZERO, sa(A, 40_001), sa(B, 80))
            .unwrap();
    p.run(Instant::from_secs(30));
    let syns: Vec<u64> = p
        .log
        .iter()
        .filter(|x| x.1 && x.2.flags.syn())
        .map(|x| x.0.as_nanos() / 1_000_000)
        .collect();
    assert_eq!(syns, [0, 1_000, 3_000], "initial RTO 1 s, doubled");
    let closed_at = p.ev_a.iter().position(|e| {
        *e == TcpEvent::Closed {
            id,
            cause: CloseCause::TimedOut,
        }
    });
    assert!(closed_at.is_some());
}

#[test]
fn in_window_rst_draws_a_challenge_ack_exact_rst_resets() {
    let mut p = Pair::new(scripted(), scripted());
    let (a, _) = p.connect();
    // B's view of the sequence space: find A's current RCV.NXT from the last ACK it sent.
    let last_a = p.log.iter().rev().find(|x| x.1).unwrap().2;
    let rcv_nxt = last_a.ack;
    let forge = |seq: TcpSeq| {
        let t = TcpRepr {
            sport: 80,
            dport: 40_000,
            seq,
            flags: TcpFlags::RST,
            ..TcpRepr::default()
        };
        PacketBuilder::new(IpAddr::from(B), IpAddr::from(A))
            .unwrap()
            .tcp(&t, &[])
            .unwrap()
    };
    let before = p.log.len();
    p.a.handle_packet(p.now, &forge(rcv_nxt + 100)).unwrap();
    p.pump();
    let reply = &p.log[before..];
    assert_eq!(reply.len(), 1, "one challenge ACK");
    assert_eq!(reply[0].2.flags, TcpFlags::ACK);
    assert!(!p.ev_a.iter().any(|e| matches!(e, TcpEvent::Closed { .. })));
    p.a.handle_packet(p.now, &forge(rcv_nxt)).unwrap();
    p.pump();
    assert!(p.ev_a.contains(&TcpEvent::Closed {
        id: a,
        cause: CloseCause::Reset
    }));
}

#[test]
fn time_wait_answers_with_ack_and_accepts_a_new_syn() {
    let mut p = Pair::new(scripted(), scripted());
    let (a, b) = p.connect();
    p.a.close(p.now, a).unwrap();
    p.run(p.now + Duration::from_millis(50));
    p.b.close(p.now, b).unwrap();
    p.run(p.now + Duration::from_millis(50));
    assert!(p.ev_a.contains(&TcpEvent::Closed {
        id: a,
        cause: CloseCause::Normal
    }));
    assert!(p.ev_b.contains(&TcpEvent::Closed {
        id: b,
        cause: CloseCause::Normal
    }));
    assert_eq!(
        p.a.state_of(sa(A, 40_000), sa(B, 80)),
        Some(tierlab::l7::scripted::State::TimeWait)
    );
    // A segment of the old connection is answered with an ACK, not a RST.
    let t = TcpRepr {
        sport: 80,
        dport: 40_000,
        seq: TcpSeq(1),
        ack: TcpSeq(1),
        flags: TcpFlags::ACK,
        ..TcpRepr::default()
    };
    let old = PacketBuilder::new(IpAddr::from(B), IpAddr::from(A))
        .unwrap()
        .tcp(&t, &[])
        .unwrap();
    let before = p.log.len();
    p.a.handle_packet(p.now, &old).unwrap();
    p.pump();
    assert_eq!(p.log.len(), before + 1);
    assert_eq!(p.log[before].2.flags, TcpFlags::ACK);
    // The same 4-tuple cannot be reused by A while in TIME-WAIT...
    assert!(p.a.connect(p.now, sa(A, 40_000), sa(B, 80)).is_err());
    // ...and after 60 s the entry is gone.
    p.run(p.now + Duration::from_secs(61));
    assert_eq!(p.a.connections(), 0);
    assert!(p.a.connect(p.now, sa(A, 40_000), sa(B, 80)).is_ok());
}

#[test]
fn zero_window_is_probed_then_reopened() {
    let cfg = ScriptedConfig {
        rcv_buf: 4_000,
        ..ScriptedConfig::default()
    };
    let mut p = Pair::new(scripted(), ScriptedStack::new(cfg));
    let (a, b) = p.connect();
    let sent = p.a.send(p.now, a, &[1u8; 10_000]).unwrap();
    assert_eq!(sent, 10_000);
    p.run(p.now + Duration::from_secs(3));
    assert_eq!(p.b.recv_queue(b), 4_000, "window full");
    let probes = p
        .log
        .iter()
        .filter(|x| {
            x.1 && x.3 == 0 && x.2.flags == TcpFlags::ACK && x.0 > Instant::from_millis(100)
        })
        .count();
    assert!(probes >= 2, "zero-window probes");
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(p.drain(b));
        p.run(p.now + Duration::from_secs(2));
    }
    assert_eq!(got.len(), 10_000);
}

#[test]
fn smoltcp_transfer_and_reset_of_unknown_flow() {
    let mut p = Pair::new(
        SmolStack::new(SmolConfig::default()),
        SmolStack::new(SmolConfig::default()),
    );
    let (a, b) = p.connect();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut off = 0;
    let mut got = Vec::new();
    while got.len() < data.len() && p.now < Instant::from_secs(20) {
        off += p.a.send(p.now, a, &data[off..]).unwrap();
        p.run(p.now + Duration::from_millis(20));
        got.extend(p.drain(b));
    }
    assert_eq!(got, data);
    // A segment for a 4-tuple B does not know: smoltcp answers a RST at SEG.ACK.
    let t = TcpRepr {
        sport: 41_234,
        dport: 80,
        seq: TcpSeq(5),
        ack: TcpSeq(99),
        flags: TcpFlags::ACK,
        window: 100,
        ..TcpRepr::default()
    };
    let stray = PacketBuilder::new(IpAddr::from(A), IpAddr::from(B))
        .unwrap()
        .tcp(&t, b"x")
        .unwrap();
    p.pump(); // the window update the last read queued
    p.b.handle_packet(p.now, &stray).unwrap();
    let out = p.b.poll_transmit().unwrap();
    let r = *Packet::parse(&out, true).unwrap().tcp().unwrap();
    assert_eq!((r.flags, r.seq), (TcpFlags::RST, TcpSeq(99)));
    assert!(matches!(p.b.poll_event(), Some(TcpEvent::ResetSent { .. })));
}

/// A relay on host B: bytes A sends on one connection are spliced by B into a second
/// connection back to A, and arrive intact and in order, whatever the buffers' room; A reads
/// them with `recv` and `recv_with` in turn.
fn splice_relays_a_stream<S: TcpStack>(mut p: Pair<S>) {
    let (a1, b1) = p.connect();
    let a2 = p.a.connect(p.now, sa(A, 40_001), sa(B, 80)).unwrap();
    p.run(p.now + Duration::from_millis(10));
    let b2 = p
        .ev_b
        .iter()
        .find_map(|e| match e {
            TcpEvent::Accepted { id, .. } if *id != b1 => Some(*id),
            _ => None,
        })
        .expect("second connection accepted");
    let data: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut got, mut spliced, mut lent_total) = (0, Vec::new(), 0, 0);
    for round in 0..400 {
        if sent < data.len() {
            sent += p.a.send(p.now, a1, &data[sent..]).unwrap();
        }
        p.run(p.now + Duration::from_millis(5));
        let (queued, room) = (p.b.recv_queue(b1), p.b.send_room(b2));
        let n = p.b.splice(p.now, b1, b2, usize::MAX).unwrap();
        assert_eq!(n, queued.min(room), "moves all it can, no more");
        spliced += n;
        p.run(p.now + Duration::from_millis(5));
        // Read alternately with `recv` and with `recv_with` (bytes lent in place, in one or
        // two pieces): both consume exactly what they report.
        let n = p.a.recv_queue(a2);
        if round % 2 == 0 {
            p.a.recv(p.now, a2, &mut got, n).unwrap();
        } else {
            let mut lent = Vec::new();
            let took =
                p.a.recv_with(p.now, a2, n / 2 + 1, &mut |piece| {
                    lent.extend_from_slice(piece)
                })
                .unwrap();
            assert_eq!(took, lent.len());
            assert_eq!(took, n.min(n / 2 + 1));
            assert_eq!(p.a.recv_queue(a2), n - took);
            lent_total += took;
            got.extend(lent);
        }
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(spliced, data.len());
    assert!(got == data, "relayed bytes differ");
    assert!(lent_total > 0, "recv_with lent bytes");
    // A connection that can no longer send takes nothing.
    p.b.close(p.now, b2).unwrap();
    p.a.send(p.now, a1, b"late").unwrap();
    p.run(p.now + Duration::from_millis(10));
    assert_eq!(p.b.splice(p.now, b1, b2, usize::MAX).unwrap(), 0);
    assert_eq!(p.b.recv_queue(b1), 4);
}

#[test]
fn scripted_splice_relays_a_stream() {
    splice_relays_a_stream(Pair::new(scripted(), scripted()));
}

#[test]
fn smoltcp_splice_relays_a_stream() {
    splice_relays_a_stream(Pair::new(
        SmolStack::new(SmolConfig::default()),
        SmolStack::new(SmolConfig::default()),
    ));
}

/// An ICMP error built the way a director builds its port unreachable: quoting `syn`, the
/// segment a sent, from `from`.
fn unreachable_for(syn: &TcpRepr, from: [u8; 4], err: IcmpError) -> Vec<u8> {
    let seg = PacketBuilder::new(IpAddr::from(A), IpAddr::from(B))
        .unwrap()
        .tcp(syn, &[])
        .unwrap();
    build_error(&seg, IpAddr::from(from), err, 7)
        .unwrap()
        .unwrap()
}

/// Linux's `tcp_v4_err`: a connection in SYN-SENT ends at once on port unreachable, sends no
/// RST and never retransmits its SYN; an established one only takes a soft error.
fn icmp_refuses_a_connect<S: TcpStack>(make: impl Fn() -> S) {
    let mut p = Pair::new(make(), make());
    p.blackhole = true;
    let id = p.a.connect(p.now, sa(A, 40_002), sa(B, 80)).unwrap();
    p.run(Instant::from_millis(10));
    let syn = p.log.iter().find(|x| x.1 && x.2.flags.syn()).unwrap().2;
    // "Too big" is not this path (it lowers the path MTU).
    let too_big = unreachable_for(&syn, [192, 0, 2, 1], IcmpError::TooBig { mtu: 1400 });
    assert_eq!(
        icmp_hard_error(&Packet::parse(&too_big, true).unwrap()),
        None
    );
    let err = unreachable_for(&syn, [192, 0, 2, 1], IcmpError::PortUnreachable);
    let (local, remote, seq) = icmp_hard_error(&Packet::parse(&err, true).unwrap()).unwrap();
    assert_eq!((local, remote, seq), (sa(A, 40_002), sa(B, 80), syn.seq));
    let sent_before = p.log.len();
    assert!(p.a.icmp_unreachable(p.now, local, remote, seq));
    p.pump();
    assert!(
        p.ev_a.contains(&TcpEvent::Closed {
            id,
            cause: CloseCause::Unreachable
        }),
        "{:?}",
        p.ev_a
    );
    p.blackhole = false;
    p.run(Instant::from_secs(10));
    assert_eq!(
        p.log.len(),
        sent_before,
        "no RST, no SYN again: {:?}",
        &p.log[sent_before..]
    );
    assert!(!p.a.knows(local, remote));
    assert!(!p.a.icmp_unreachable(p.now, local, remote, seq), "gone");

    // Established: a soft error, nothing changes.
    let (id, _) = p.connect();
    let last = p.log.iter().rev().find(|x| x.1).unwrap().2;
    let err = unreachable_for(&last, [192, 0, 2, 1], IcmpError::PortUnreachable);
    let (local, remote, seq) = icmp_hard_error(&Packet::parse(&err, true).unwrap()).unwrap();
    assert!(p.a.icmp_unreachable(p.now, local, remote, seq));
    p.pump();
    assert!(
        !p.ev_a
            .iter()
            .any(|e| matches!(e, TcpEvent::Closed { id: i, .. } if *i == id))
    );
    assert!(p.a.knows(local, remote));
}

#[test]
fn scripted_connect_is_refused_by_icmp_port_unreachable() {
    icmp_refuses_a_connect(scripted);
}

#[test]
fn smoltcp_connect_is_refused_by_icmp_port_unreachable() {
    icmp_refuses_a_connect(|| SmolStack::new(SmolConfig::default()));
}

/// The quoted sequence number must lie in SND.UNA..=SND.NXT, or the error is not believed
/// (a stale or forged quote). smoltcp shows no sequence numbers, so this is the scripted
/// stack's alone.
#[test]
fn scripted_ignores_an_error_quoting_another_sequence_number() {
    let mut p = Pair::new(scripted(), scripted());
    p.blackhole = true;
    let id = p.a.connect(p.now, sa(A, 40_003), sa(B, 80)).unwrap();
    p.run(Instant::from_millis(10));
    let mut syn = p.log.iter().find(|x| x.1 && x.2.flags.syn()).unwrap().2;
    syn.seq = syn.seq + 2;
    let err = unreachable_for(&syn, [192, 0, 2, 1], IcmpError::PortUnreachable);
    let (local, remote, seq) = icmp_hard_error(&Packet::parse(&err, true).unwrap()).unwrap();
    assert!(p.a.icmp_unreachable(p.now, local, remote, seq), "known");
    p.pump();
    assert!(p.ev_a.is_empty(), "{:?}", p.ev_a);
    p.blackhole = false;
    p.run(Instant::from_secs(2));
    assert!(
        p.ev_a.contains(&TcpEvent::Connected { id }),
        "the SYN was sent again"
    );
}
