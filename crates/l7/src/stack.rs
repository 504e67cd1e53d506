//! The one interface both endpoint kinds implement ([`TcpStack`]), its events, errors, and the
//! TCP rules both kinds share (the reset answered to a segment of an unknown connection, the
//! initial sequence number).
//!
//! A stack is one host's TCP: every packet addressed to the host goes in through
//! [`TcpStack::handle_packet`], every packet it sends comes out of [`TcpStack::poll_transmit`],
//! timers fire through [`TcpStack::handle_timeout`] at the instant
//! [`TcpStack::poll_timeout`] names, and what the application must know comes out of
//! [`TcpStack::poll_event`].
//!
//! Call order and time rule: `now` never goes backwards from one call to the next; after any
//! call that takes `now`, drain `poll_transmit` and `poll_event` and ask `poll_timeout` again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;

use thiserror::Error;
use tierlab_wire::icmp::quoted_tcp;
use tierlab_wire::{
    Icmpv4Repr, Icmpv6Repr, Instant, IpView, Packet, TcpFlags, TcpRepr, TcpSeq, Transport,
    WireError,
};

/// A connection handle, valid from the event that announces it ([`TcpEvent::Accepted`], or the
/// return of [`TcpStack::connect`]) until its [`TcpEvent::Closed`].
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId {
    /// Slot in the stack's connection table.
    pub slot: u32,
    /// Generation of the slot, so that a stale handle never names a newer connection.
    pub generation: u32,
}

/// Why a connection ended, as its application sees it.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, serde::Serialize)]
pub enum CloseCause {
    /// Both sides exchanged FINs (the connection reached TIME-WAIT or CLOSED).
    Normal,
    /// A RST from the peer ended it (including a refused connection attempt).
    Reset,
    /// Retransmissions were exhausted (`tcp_retries2`, `tcp_syn_retries`...).
    TimedOut,
    /// The local application aborted it (a RST was sent).
    Aborted,
    /// An ICMP error (destination unreachable, time exceeded, parameter problem) ended the
    /// connection attempt: the application's connect fails (ECONNREFUSED for port
    /// unreachable); no RST is sent.
    Unreachable,
}

/// What a stack tells its application.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum TcpEvent {
    /// A passive open completed the three-way handshake (what `accept()` returns).
    Accepted {
        /// The new connection.
        id: ConnId,
        /// Local address and port (a VIP for the proxy's client side).
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
    /// An active open completed.
    Connected {
        /// The connection.
        id: ConnId,
    },
    /// New in-order bytes can be read.
    Readable {
        /// The connection.
        id: ConnId,
    },
    /// Room opened in a send buffer that was full (or a send was refused for lack of room).
    Writable {
        /// The connection.
        id: ConnId,
    },
    /// The peer sent its FIN: no more bytes will arrive after those already readable.
    PeerClosed {
        /// The connection.
        id: ConnId,
    },
    /// The connection ended; its handle is no longer valid. Exactly one per connection.
    Closed {
        /// The connection.
        id: ConnId,
        /// Why.
        cause: CloseCause,
    },
    /// A RST was sent in answer to a segment of a connection this host does not know.
    ResetSent {
        /// The local end the segment was addressed to.
        local: SocketAddr,
        /// The sender of the segment.
        remote: SocketAddr,
    },
}

/// Errors of a stack operation.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum StackError {
    /// The packet does not parse.
    #[error("packet refused by the stack: {0}")]
    Wire(#[from] WireError),
    /// The packet is not TCP (the stacks only carry TCP; ICMP is the node's business).
    #[error("packet is not TCP (protocol {0})")]
    NotTcp(u8),
    /// The packet's destination is not an address of this stack.
    #[error("destination {0} is not an address of this host")]
    NotLocal(std::net::IpAddr),
    /// The handle names no open connection (closed, or from another stack).
    #[error("connection {0:?} is not open")]
    UnknownConn(ConnId),
    /// The 4-tuple is in use (an open connection or TIME-WAIT).
    #[error("address {local} -> {remote} already in use")]
    AddrInUse {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
    },
    /// The local and remote addresses are of different families.
    #[error("local {local} and remote {remote} are of different families")]
    MixedFamilies {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
    },
    /// The operation is not possible in the connection's state (e.g. send after close).
    #[error("connection {id:?}: {what} not possible in its state")]
    InvalidState {
        /// Connection.
        id: ConnId,
        /// Operation.
        what: &'static str,
    },
    /// The embedded stack (smoltcp) refused an operation.
    #[error("smoltcp: {0}")]
    Smoltcp(&'static str),
    /// The client's destination chooser (e.g. its resolver) gave no address.
    #[error("no destination to connect to")]
    NoDestination,
}

/// One host's TCP, whichever the implementation (scripted or smoltcp).
pub trait TcpStack {
    /// Makes `addr` an address of this host (a VIP bound on a tunnel, a service address).
    fn add_address(&mut self, addr: std::net::IpAddr);

    /// Accepts connections to `local` (address and port; the address must have been added).
    ///
    /// # Errors
    /// [`StackError::NotLocal`] when the address is not one of the host's.
    fn listen(&mut self, local: SocketAddr) -> Result<(), StackError>;

    /// Opens a connection from `local` to `remote` (sends the SYN).
    ///
    /// # Errors
    /// The 4-tuple is in use, the families differ, or the local address is not the host's.
    fn connect(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnId, StackError>;

    /// Queues bytes to send; returns how many were taken (limited by the send buffer). A send
    /// that leaves the buffer full (an empty one included) asks for a [`TcpEvent::Writable`]
    /// when room opens.
    ///
    /// # Errors
    /// Unknown handle, or the connection can no longer send.
    fn send(&mut self, now: Instant, id: ConnId, data: &[u8]) -> Result<usize, StackError>;

    /// Moves up to `max` received bytes to the end of `out`; returns how many.
    ///
    /// # Errors
    /// Unknown handle.
    fn recv(
        &mut self,
        now: Instant,
        id: ConnId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, StackError>;

    /// Reads up to `max` received bytes in place: `f` sees them in order (in one or more
    /// pieces), then they are consumed as by [`TcpStack::recv`]; returns how many. The
    /// default reads into a buffer; a stack may lend its own.
    ///
    /// # Errors
    /// Unknown handle.
    fn recv_with(
        &mut self,
        now: Instant,
        id: ConnId,
        max: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, StackError> {
        let mut buf = Vec::new();
        let n = self.recv(now, id, &mut buf, max)?;
        f(&buf);
        Ok(n)
    }

    /// Moves up to `max` received bytes of `from` to the send queue of `to`, as a proxy's
    /// relay does, and returns how many moved: at most what `from` holds and what `to` has
    /// room for (zero when `to` can no longer send). The default reads into a buffer and
    /// sends it; a stack may move the bytes directly.
    ///
    /// # Errors
    /// Unknown handle.
    fn splice(
        &mut self,
        now: Instant,
        from: ConnId,
        to: ConnId,
        max: usize,
    ) -> Result<usize, StackError> {
        splice_through(self, &mut Vec::new(), now, from, to, max)
    }

    /// [`TcpStack::handle_packet`] for a packet its caller has already checked: `ip` is
    /// `IpView::new_checked(packet, true)` of it (its lengths and IPv4 header checksum
    /// verified, as the stack would). The default hands the bytes to `handle_packet`; a
    /// stack that reads packets through the view goes on from it without checking again.
    ///
    /// # Errors
    /// As [`TcpStack::handle_packet`].
    fn handle_ip(&mut self, now: Instant, ip: &IpView<'_>) -> Result<(), StackError> {
        self.handle_packet(now, ip.bytes())
    }

    /// Lets the stack do a relay's splices itself. For an application whose answer to a
    /// [`TcpEvent::Readable`] on `from`, when `to` holds no bytes to be read, is to
    /// [`splice`](TcpStack::splice) everything `from` holds to `to` (a proxy's relay): when a
    /// segment brings `from` in-order bytes while neither connection holds bytes to be read
    /// and `to` has room for all of them, the stack moves them to `to` and sends them as
    /// that splice would, at once, and raises no `Readable` for them. Anything else (a FIN,
    /// bytes that do not fit, a closing `to`) goes the usual way, so the packets sent are
    /// the ones the application's splices would have sent. The binding lasts as long as
    /// both connections; binding `from` again replaces it. Returns whether the stack relays
    /// by itself (the default does not, and the application's splices do the work).
    fn relay(&mut self, from: ConnId, to: ConnId) -> bool {
        let _ = (from, to);
        false
    }

    /// Bytes received and not yet read.
    fn recv_queue(&self, id: ConnId) -> usize;

    /// Room left in the send buffer.
    fn send_room(&self, id: ConnId) -> usize;

    /// Whether the peer's FIN has been received.
    fn peer_closed(&self, id: ConnId) -> bool;

    /// Closes the sending direction after the queued bytes (sends FIN). The handle stays valid
    /// until [`TcpEvent::Closed`].
    ///
    /// # Errors
    /// Unknown handle.
    fn close(&mut self, now: Instant, id: ConnId) -> Result<(), StackError>;

    /// Aborts the connection: sends a RST and forgets it ([`TcpEvent::Closed`] with
    /// [`CloseCause::Aborted`] follows).
    ///
    /// # Errors
    /// Unknown handle.
    fn abort(&mut self, now: Instant, id: ConnId) -> Result<(), StackError>;

    /// Whether a connection with this 4-tuple is known (in any state, TIME-WAIT included).
    fn knows(&self, local: SocketAddr, remote: SocketAddr) -> bool;

    /// Lowers the path MTU of a known connection (an ICMP "fragmentation needed" or "packet too
    /// big" quoting one of its packets); returns whether the connection is known.
    fn lower_path_mtu(&mut self, local: SocketAddr, remote: SocketAddr, mtu: u16) -> bool;

    /// What a host does when an ICMP error other than "too big" (destination unreachable,
    /// time exceeded, parameter problem) quoting one of its segments arrives: Linux
    /// (`tcp_v4_err`, `tcp_v6_err`) believes it only if the quoted sequence number `seq` lies
    /// in SND.UNA..=SND.NXT; it then ends a connection still in SYN-SENT at once, without a
    /// RST ([`TcpEvent::Closed`] with [`CloseCause::Unreachable`] follows), and in any other
    /// state only records a soft error (nothing changes). Returns whether the connection is
    /// known.
    fn icmp_unreachable(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        seq: TcpSeq,
    ) -> bool;

    /// What a host does when a "fragmentation needed" / "packet too big" quoting one of its
    /// connections arrives at `now`: lowers that connection's path MTU and, when its segments
    /// shrink, resends at once what was in flight (Linux `tcp_v4_mtu_reduced` /
    /// `tcp_v6_mtu_reduced`: `tcp_sync_mss`, then `tcp_simple_retransmit`: the segments were
    /// dropped, no timer needs to say so). Returns whether the connection is known.
    ///
    /// The default only lowers the path MTU ([`TcpStack::lower_path_mtu`]); the lost segments
    /// are then resent by the retransmission timer.
    fn path_mtu_reduced(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        mtu: u16,
    ) -> bool {
        let _ = now;
        self.lower_path_mtu(local, remote, mtu)
    }

    /// Takes an IP packet addressed to this host.
    ///
    /// # Errors
    /// The packet does not parse, is not TCP, or is not for this host; nothing changed.
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), StackError>;

    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next instant [`TcpStack::handle_timeout`] must be called, if any.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next packet to send.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<TcpEvent>;

    /// Connections in the table (TIME-WAIT included).
    fn connections(&self) -> usize;

    /// Estimated heap and inline bytes held by the connection table (structure sizes plus buffer
    /// capacities), for the memory-per-connection figure.
    fn memory_bytes(&self) -> usize;
}

/// For an ICMP or ICMPv6 error that a host's TCP acts on, other than "too big": destination
/// unreachable (any code but fragmentation needed), time exceeded, parameter problem (Linux
/// `tcp_v4_err` and `tcp_v6_err`; they ignore source quench and redirects). Returns the
/// connection the error quotes, from this host's side, and the quoted sequence number:
/// `(local, remote, seq)`, for [`TcpStack::icmp_unreachable`]. `None` for anything else,
/// including a quote that is not TCP or is cut before the sequence number.
pub fn icmp_hard_error(p: &Packet<'_>) -> Option<(SocketAddr, SocketAddr, TcpSeq)> {
    let acted_on = match p.transport {
        Transport::Icmpv4(m) => match m {
            // Codes beyond NR_ICMP_UNREACH (15) are ignored; 4 is the PMTU error.
            Icmpv4Repr::DestUnreachable { code, .. } => code != 4 && code <= 15,
            Icmpv4Repr::TimeExceeded { .. } => true,
            Icmpv4Repr::Other { kind, .. } => kind == 12,
            _ => false,
        },
        Transport::Icmpv6(m) => match m {
            Icmpv6Repr::DestUnreachable { .. } | Icmpv6Repr::TimeExceeded { .. } => true,
            Icmpv6Repr::Other { kind, .. } => kind == 4,
            _ => false,
        },
        _ => false,
    };
    if !acted_on {
        return None;
    }
    let (q, seq) = quoted_tcp(p.payload).ok()??;
    Some((
        SocketAddr::new(q.src(), q.sport()),
        SocketAddr::new(q.dst(), q.dport()),
        seq,
    ))
}

/// The connections' deadlines, earliest first: (time in ns, slot, generation of the slot
/// when it was set). A connection that changes its deadline pushes a new entry; stale ones
/// are skipped by whoever pops them (the slot's generation or its current deadline
/// differs), so nothing is ever searched or removed in the middle.
///
/// Two stores, one order: an entry not earlier than the last one queued in `run` joins it
/// (so `run` stays sorted and costs nothing to keep), any other goes to the heap, and a pop
/// takes the smaller of the two fronts. Entries come out exactly as from one heap. The
/// long deadlines (TIME-WAIT and FIN-WAIT-2's 60 s, set in time order) gather in `run`,
/// and the heap the short ones sift through stays small.
#[derive(Debug, Default)]
pub struct SlotTimers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    run: VecDeque<(u64, u32, u32)>,
}

impl SlotTimers {
    /// Queues a deadline `at` (ns) for `slot` in its generation `generation`.
    pub fn push(&mut self, at: u64, slot: u32, generation: u32) {
        let entry = (at, slot, generation);
        if self.run.back().is_none_or(|last| entry >= *last) {
            self.run.push_back(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    /// Takes the earliest entry due at `now` or before: (deadline, slot, generation).
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, u32, u32)> {
        let (entry, from_heap) = match (self.heap.peek().map(|r| r.0), self.run.front()) {
            (Some(h), Some(&r)) if h < r => (h, true),
            (_, Some(&r)) => (r, false),
            (Some(h), None) => (h, true),
            (None, None) => return None,
        };
        if entry.0 > now.as_nanos() {
            return None;
        }
        if from_heap {
            self.heap.pop();
        } else {
            self.run.pop_front();
        }
        Some(entry)
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len() + self.run.len()
    }

    /// Whether no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the entries `(deadline, slot, generation)` that `live` says are live and drops
    /// the others, in one pass (the heap rebuilt once): for a queue that has grown mostly
    /// stale, where popping each stale entry would cost a sift through the heap. The live
    /// entries come out in the same order as before.
    pub fn retain(&mut self, mut live: impl FnMut(u64, u32, u32) -> bool) {
        self.heap
            .retain(|Reverse((at, slot, g))| live(*at, *slot, *g));
        self.run.retain(|&(at, slot, g)| live(at, slot, g));
    }

    /// The earliest deadline queued (stale or not: waking early costs a skipped entry).
    pub fn next(&self) -> Option<Instant> {
        let h = self.heap.peek().map(|Reverse((at, _, _))| *at);
        let r = self.run.front().map(|(at, _, _)| *at);
        h.into_iter().chain(r).min().map(Instant::from_nanos)
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.heap.capacity() * size_of::<Reverse<(u64, u32, u32)>>()
            + self.run.capacity() * size_of::<(u64, u32, u32)>()
    }
}

/// [`TcpStack::splice`] done with `recv` then `send` through `buf` (cleared first; a stack
/// that keeps one avoids an allocation per call).
///
/// # Errors
/// Unknown handle.
pub fn splice_through<S: TcpStack + ?Sized>(
    stack: &mut S,
    buf: &mut Vec<u8>,
    now: Instant,
    from: ConnId,
    to: ConnId,
    max: usize,
) -> Result<usize, StackError> {
    let n = max.min(stack.recv_queue(from)).min(stack.send_room(to));
    if n == 0 {
        return Ok(0);
    }
    buf.clear();
    stack.recv(now, from, buf, n)?;
    stack.send(now, to, buf)
}

/// The answer a host without a matching connection gives to `seg` (which carried
/// `payload_len` bytes): `None` for a RST (never answered), otherwise the RST.
///
/// RFC 9293 §3.10.7.1 (CLOSED state): "If the ACK bit is off, sequence number zero is used,
/// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; if the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>".
/// Linux: `tcp_v4_send_reset` / `tcp_v6_send_reset` (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c,
/// v6.12): with ACK set, `seq = th->ack_seq` and no ACK; otherwise ACK set with
/// `ack_seq = seq + syn + fin + payload length`; window 0, no options.
pub fn rst_for_unknown(seg: &TcpRepr, payload_len: usize) -> Option<TcpRepr> {
    if seg.flags.rst() {
        return None;
    }
    let mut rst = TcpRepr {
        sport: seg.dport,
        dport: seg.sport,
        window: 0,
        ..TcpRepr::default()
    };
    if seg.flags.ack() {
        rst.seq = seg.ack;
        rst.flags = TcpFlags::RST;
    } else {
        let len = payload_len as u32 + u32::from(seg.flags.syn()) + u32::from(seg.flags.fin());
        rst.seq = TcpSeq(0);
        rst.ack = seg.seq + len;
        rst.flags = TcpFlags::RST | TcpFlags::ACK;
    }
    Some(rst)
}

/// The initial sequence number of a connection, as Linux computes it: a keyed hash of the
/// 4-tuple plus a clock ticking every 64 ns.
///
/// Linux: `secure_tcp_seq` (net/core/secure_seq.c, v6.12) = `siphash(saddr, daddr, sport,
/// dport; net_secret)` + `ktime_get_real_ns() >> 6` (`seq_scale`). tierlab keys the hash with
/// the caller's `secret` (foldhash instead of SipHash: only unpredictability across tuples
/// matters, not the exact value) and takes the virtual time, so the result is deterministic.
pub fn initial_seq(secret: u64, local: SocketAddr, remote: SocketAddr, now: Instant) -> TcpSeq {
    use std::hash::BuildHasher;
    let h = foldhash::fast::FixedState::with_seed(secret).hash_one((local, remote));
    TcpSeq((h as u32).wrapping_add((now.as_nanos() >> 6) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_timers_come_due_earliest_first_and_not_before_their_time() {
        let mut t = SlotTimers::default();
        assert_eq!(t.next(), None);
        t.push(3_000, 7, 1);
        t.push(1_000, 2, 0);
        t.push(2_000, 2, 1);
        assert_eq!(t.next(), Some(Instant::from_nanos(1_000)));
        assert_eq!(t.pop_due(Instant::from_nanos(999)), None, "not yet");
        assert_eq!(t.pop_due(Instant::from_nanos(2_500)), Some((1_000, 2, 0)));
        assert_eq!(t.pop_due(Instant::from_nanos(2_500)), Some((2_000, 2, 1)));
        assert_eq!(t.pop_due(Instant::from_nanos(2_500)), None);
        assert_eq!(t.next(), Some(Instant::from_nanos(3_000)));
        assert!(t.memory_bytes() >= 3 * 16);
    }

    /// Pops in the same order as one binary heap, whatever the order of pushes (sorted runs,
    /// reversed runs, ties on the deadline, interleaved pops).
    #[test]
    fn slot_timers_pop_as_one_heap_would() {
        let mut t = SlotTimers::default();
        let mut reference: BinaryHeap<Reverse<(u64, u32, u32)>> = BinaryHeap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut now = 0u64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Short deadlines (delayed ACK, RTO) mixed with long ones set in time order.
            let at = match x % 4 {
                0 => now + 60_000,
                1 => now + x % 40,
                2 => now + (x >> 8) % 200,
                _ => now + 200,
            };
            let entry = (at, (x >> 20) as u32 % 16, (x >> 40) as u32 % 3);
            t.push(entry.0, entry.1, entry.2);
            reference.push(Reverse(entry));
            if step % 3 == 0 {
                now += x % 50;
                let due = Instant::from_nanos(now);
                loop {
                    let want = reference
                        .peek()
                        .filter(|Reverse(e)| e.0 <= now)
                        .map(|r| r.0);
                    assert_eq!(t.pop_due(due), want);
                    if want.is_none() {
                        break;
                    }
                    reference.pop();
                }
                assert_eq!(
                    t.next(),
                    reference.peek().map(|Reverse(e)| Instant::from_nanos(e.0))
                );
            }
        }
        assert!(!t.run.is_empty() && !t.heap.is_empty(), "both stores used");
    }

    /// `retain` drops exactly the entries its predicate calls stale, from both stores, and
    /// the others still pop in heap order.
    #[test]
    fn slot_timers_retain_drops_stale_entries_and_keeps_the_order() {
        let mut t = SlotTimers::default();
        let mut reference: BinaryHeap<Reverse<(u64, u32, u32)>> = BinaryHeap::new();
        let live =
            |at: u64, slot: u32, g: u32| !(at + u64::from(slot) + u64::from(g)).is_multiple_of(3);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for k in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every other entry in time order (the run), the rest anywhere (the heap).
            let at = if k % 2 == 0 { 10 * k } else { x % 50_000 };
            let entry = (at, (x >> 20) as u32 % 64, (x >> 40) as u32 % 4);
            t.push(entry.0, entry.1, entry.2);
            if live(entry.0, entry.1, entry.2) {
                reference.push(Reverse(entry));
            }
        }
        assert!(!t.run.is_empty() && !t.heap.is_empty(), "both stores used");
        t.retain(live);
        assert_eq!(t.len(), reference.len());
        let end = Instant::from_nanos(u64::MAX);
        while let Some(Reverse(want)) = reference.pop() {
            assert_eq!(t.pop_due(end), Some(want));
        }
        assert!(t.is_empty());
    }

    fn seg(flags: TcpFlags, seq: u32, ack: u32) -> TcpRepr {
        TcpRepr {
            sport: 40000,
            dport: 80,
            seq: TcpSeq(seq),
            ack: TcpSeq(ack),
            flags,
            window: 64240,
            ..TcpRepr::default()
        }
    }

    #[test]
    fn rst_with_ack_takes_the_ack_as_sequence() {
        let r = rst_for_unknown(&seg(TcpFlags::ACK | TcpFlags::PSH, 1000, 77_777), 100).unwrap();
        assert_eq!(r.flags, TcpFlags::RST);
        assert_eq!(r.seq, TcpSeq(77_777));
        assert_eq!((r.sport, r.dport, r.window), (80, 40000, 0));
    }

    #[test]
    fn rst_without_ack_acknowledges_the_segment() {
        let r = rst_for_unknown(&seg(TcpFlags::SYN, 1000, 0), 0).unwrap();
        assert_eq!(r.flags, TcpFlags::RST | TcpFlags::ACK);
        assert_eq!((r.seq, r.ack), (TcpSeq(0), TcpSeq(1001)));
        let r = rst_for_unknown(&seg(TcpFlags::FIN, u32::MAX, 0), 10).unwrap();
        assert_eq!(r.ack, TcpSeq(10), "SEG.SEQ + 10 bytes + FIN wraps");
        assert_eq!(rst_for_unknown(&seg(TcpFlags::RST, 1, 0), 0), None);
        assert_eq!(
            rst_for_unknown(&seg(TcpFlags::RST | TcpFlags::ACK, 1, 2), 0),
            None
        );
    }

    #[test]
    fn iss_depends_on_tuple_secret_and_time() {
        let a: SocketAddr = "198.51.100.1:80".parse().unwrap();
        let b: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let c: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        let t = Instant::from_secs(1);
        assert_eq!(initial_seq(1, a, b, t), initial_seq(1, a, b, t));
        assert_ne!(initial_seq(1, a, b, t), initial_seq(1, a, c, t));
        assert_ne!(initial_seq(1, a, b, t), initial_seq(2, a, b, t));
        let later = initial_seq(1, a, b, Instant::from_nanos(1_000_000_640));
        assert_eq!(later.diff(initial_seq(1, a, b, t)), 10);
    }
}
