//! Scripted TCP: a light, standards-correct TCP endpoint for runs of a million connections.
//!
//! What it does (RFC 9293 unless said otherwise): three-way handshake with the MSS option,
//! sequence and acknowledgement numbers, in-order data with the receive window as flow control,
//! FIN in both directions (half-close, TIME-WAIT), RST sent and received (RFC 5961 §3 checks:
//! a RST exactly at RCV.NXT resets, one elsewhere in the window draws a challenge ACK), the
//! RST a host gives to a segment of an unknown connection ([`rst_for_unknown`]),
//! retransmission on an RFC 6298 timer with exponential backoff and Linux's limits
//! (`tcp_syn_retries`, `tcp_synack_retries`, `tcp_retries2`), delayed ACKs (every second
//! full segment or after 40 ms), zero-window probes, and TIME-WAIT handling of a new SYN.
//!
//! What it leaves out, on purpose: congestion control (a sender fills the peer's window at
//! once), SACK, timestamps, window scaling (windows top at 65,535 bytes), an out-of-order
//! queue (a segment beyond RCV.NXT is dropped and answered with a duplicate ACK; the sender
//! goes back to SND.UNA on timeout), fast retransmit, Nagle.
//!
//! After a retransmission timeout the sender keeps at most one segment in flight until an ACK
//! advances SND.UNA (as Linux's congestion window of one after RTO), so a blackhole costs one
//! packet per backoff, not a window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use foldhash::fast::FixedState;
use tierlab_wire::checksum::BytesSum;
use tierlab_wire::view::IpView;
use tierlab_wire::{
    Duration, Instant, IpProto, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, Transport, Verify,
};

use crate::stack::{
    CloseCause, ConnId, SlotTimers, StackError, TcpEvent, TcpStack, initial_seq, rst_for_unknown,
};

/// Parameters of a scripted stack, with Linux's defaults and their sysctl names.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptedConfig {
    /// Link MTU the MSS is derived from (MSS = MTU − 40 for IPv4, − 60 for IPv6).
    pub mtu: u16,
    /// Receive buffer in bytes (also the largest window advertised; at most 65,535 since
    /// window scaling is not offered).
    pub rcv_buf: u32,
    /// Send buffer in bytes.
    pub snd_buf: u32,
    /// Initial retransmission timeout (RFC 6298 §2.1; Linux `TCP_TIMEOUT_INIT`, 1 s).
    pub rto_initial: Duration,
    /// Lower bound of the RTO (Linux `TCP_RTO_MIN`, 200 ms; RFC 6298 says 1 s).
    pub rto_min: Duration,
    /// Upper bound of the RTO (Linux `TCP_RTO_MAX`, 120 s).
    pub rto_max: Duration,
    /// SYN retransmissions before giving up (`net.ipv4.tcp_syn_retries`, 6).
    pub syn_retries: u8,
    /// SYN-ACK retransmissions before dropping a half-open connection
    /// (`net.ipv4.tcp_synack_retries`, 5).
    pub synack_retries: u8,
    /// Data retransmissions (or zero-window probes) before the connection times out
    /// (`net.ipv4.tcp_retries2`, 15). Counted, not converted to a time budget as Linux's
    /// `tcp_model_timeout` does.
    pub retries2: u8,
    /// TIME-WAIT duration (Linux `TCP_TIMEWAIT_LEN`, 60 s).
    pub time_wait: Duration,
    /// How long a FIN-WAIT-2 connection whose application closed waits for the peer's FIN
    /// (`net.ipv4.tcp_fin_timeout`, 60 s).
    pub fin_timeout: Duration,
    /// Delayed-ACK timer (Linux `TCP_DELACK_MIN`, 40 ms).
    pub delayed_ack: Duration,
    /// Key of the initial-sequence-number hash (Linux's boot-time `net_secret`).
    pub iss_secret: u64,
    /// Verify TCP checksums of received segments (a real stack does; a run that corrupts
    /// nothing may turn it off for speed).
    pub verify_checksums: bool,
}

impl Default for ScriptedConfig {
    fn default() -> Self {
        Self {
            mtu: 1500,
            rcv_buf: 65_535,
            snd_buf: 65_536,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            syn_retries: 6,
            synack_retries: 5,
            retries2: 15,
            time_wait: Duration::from_secs(60),
            fin_timeout: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            iss_secret: 0x0074_6965_726c_6162,
            verify_checksums: true,
        }
    }
}

/// TCP states a scripted connection goes through (RFC 9293 §3.3.2; LISTEN lives in the
/// listener table, CLOSED is the absence of an entry).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u8)]
pub enum State {
    /// SYN sent, waiting for SYN-ACK.
    SynSent,
    /// SYN received, SYN-ACK sent.
    SynReceived,
    /// Open.
    Established,
    /// FIN sent, not yet acknowledged.
    FinWait1,
    /// FIN acknowledged, waiting for the peer's.
    FinWait2,
    /// Peer's FIN received, ours not sent.
    CloseWait,
    /// Both FINs sent, ours not yet acknowledged.
    Closing,
    /// Peer's FIN received, ours sent and not yet acknowledged.
    LastAck,
    /// Waiting 2 MSL.
    TimeWait,
}

const NONE: u64 = u64::MAX;

const F_FIN_QUEUED: u16 = 1;
const F_FIN_SENT: u16 = 1 << 1;
const F_PEER_FIN: u16 = 1 << 2;
const F_WANT_WRITE: u16 = 1 << 3;
const F_RTO_PROBE: u16 = 1 << 4;
const F_RTT: u16 = 1 << 5;
const F_RELEASED: u16 = 1 << 6;
const F_PASSIVE: u16 = 1 << 7;
const F_PERSIST: u16 = 1 << 8;
const F_RETRANSMITTED: u16 = 1 << 9;
/// `Tcb::rcv_sum` is the sum of all of the receive buffer.
const F_RCV_SUM: u16 = 1 << 10;

/// A connection's 4-tuple packed for the connection map: hashing two `SocketAddr`s field by
/// field (enum tags, then addresses, ports, IPv6 flow information and scope) cost more than
/// the rest of a lookup. Both ends are of one family (`connect` checks). Eight-byte words
/// (a map entry is 48 bytes; with `u128` fields it was 64), hashed as two words.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct ConnKey {
    /// IPv4: local address << 32 | remote address, then zeros. IPv6: the local address's
    /// two halves, then the remote's.
    addrs: [u64; 4],
    /// Local port << 16 | remote port.
    ports: u32,
    v6: bool,
}

impl ConnKey {
    /// The key of an IPv4 connection (addresses as 32-bit numbers, ports packed).
    fn v4(local: u32, remote: u32, ports: u32) -> Self {
        Self {
            addrs: [u64::from(local) << 32 | u64::from(remote), 0, 0, 0],
            ports,
            v6: false,
        }
    }

    /// The key of an IPv6 connection (addresses as 128-bit numbers, ports packed).
    fn v6(local: u128, remote: u128, ports: u32) -> Self {
        Self {
            addrs: [
                (local >> 64) as u64,
                local as u64,
                (remote >> 64) as u64,
                remote as u64,
            ],
            ports,
            v6: true,
        }
    }

    fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        let ports = u32::from(local.port()) << 16 | u32::from(remote.port());
        match (local.ip(), remote.ip()) {
            (IpAddr::V4(l), IpAddr::V4(r)) => Self::v4(l.to_bits(), r.to_bits(), ports),
            (l, r) => Self::v6(v6_bits(l), v6_bits(r), ports),
        }
    }

    /// The key of the connection a whole (unfragmented) TCP packet belongs to, as the
    /// receiver sees it (local = the packet's destination), read straight from the header
    /// bytes: the same key as [`ConnKey::new`] of the addresses and ports.
    fn of_packet(ip: &IpView<'_>, sport: u16, dport: u16) -> Self {
        let ports = u32::from(dport) << 16 | u32::from(sport);
        // One bounds check per family (a checked view holds a whole fixed header).
        if ip.is_ipv4() {
            let a: &[u8; 8] = ip.bytes()[12..20].try_into().expect("checked header");
            let src = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
            let dst = u32::from_be_bytes([a[4], a[5], a[6], a[7]]);
            Self::v4(dst, src, ports)
        } else {
            let a: &[u8; 32] = ip.bytes()[8..40].try_into().expect("checked header");
            let (src, dst) = a.split_at(16);
            let addr = |b: &[u8]| u128::from_be_bytes(b.try_into().expect("16 bytes"));
            Self::v6(addr(dst), addr(src), ports)
        }
    }
}

impl std::hash::Hash for ConnKey {
    /// Two words that depend on every field (equal keys hash equally; the hasher mixes).
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let a = self.addrs;
        h.write_u64(a[0] ^ a[2].rotate_left(23));
        h.write_u64(
            a[1] ^ a[3].rotate_left(41) ^ (u64::from(self.ports) << 1 | u64::from(self.v6)),
        );
    }
}

/// An address as 128 bits (IPv4 as its IPv4-mapped IPv6 form; only used for a mixed pair,
/// which no connection has).
fn v6_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// A run of bytes in a send buffer whose sum is known: bytes relayed from a received
/// segment whose checksum was verified. When a segment goes out with exactly these bytes
/// (the common case for a relay: each received segment is sent on as it came), its
/// checksum is made from the sum, and the payload is not read again (what a NIC's checksum
/// offload does for Linux). The run's offset follows the buffer's front as acknowledged
/// bytes are dropped; `len == 0` is no run.
#[derive(Clone, Copy, Debug, Default)]
struct SumRun {
    /// Offset of the run's first byte in the send buffer.
    off: u32,
    /// Its length (a run is only worth keeping when a segment can carry all of it).
    len: u16,
    sum: BytesSum,
}

impl SumRun {
    /// The run's sum when it is exactly the `len` bytes at `off`.
    fn covering(&self, off: usize, len: usize) -> Option<BytesSum> {
        (len > 0 && self.off as usize == off && self.len as usize == len).then_some(self.sum)
    }

    /// `len` bytes summing to `sum` were appended at `at` (the buffer's old length): they
    /// become the run (the run before them was sent, or will be sent in other segments).
    /// Bytes more than a segment can carry make no run.
    fn appended(&mut self, at: usize, len: usize, sum: BytesSum) {
        *self = match u16::try_from(len) {
            Ok(len) => Self {
                off: at as u32,
                len,
                sum,
            },
            Err(_) => Self::default(),
        };
    }

    /// The buffer's first `n` bytes were dropped (acknowledged).
    fn drained(&mut self, n: usize) {
        let n = n as u32;
        if self.off >= n {
            self.off -= n;
        } else {
            *self = Self::default();
        }
    }
}

/// One connection's transmission control block.
#[derive(Debug)]
struct Tcb {
    local: SocketAddr,
    remote: SocketAddr,
    snd_buf: VecDeque<u8>,
    rcv_buf: VecDeque<u8>,
    /// The sum of all of `rcv_buf` while every byte in it came with a verified segment's
    /// sum (flag `F_RCV_SUM`; see [`SumRun`]).
    rcv_sum: BytesSum,
    /// A run of `snd_buf` whose sum is known.
    snd_run: SumRun,
    /// Retransmission / persist / TIME-WAIT / FIN-WAIT-2 deadline (ns, `NONE` if unset).
    rto_at: u64,
    /// Delayed-ACK deadline.
    ack_at: u64,
    /// Earliest deadline queued in the timer heap for this slot.
    heap_at: u64,
    rtt_start: u64,
    iss: TcpSeq,
    snd_una: TcpSeq,
    snd_nxt: TcpSeq,
    snd_max: TcpSeq,
    snd_wnd: u32,
    rcv_nxt: TcpSeq,
    rcv_adv: TcpSeq,
    rtt_seq: TcpSeq,
    /// Smoothed RTT, RTT variance and RTO, in microseconds (0 = no sample yet).
    srtt: u32,
    rttvar: u32,
    rto: u32,
    rcv_unacked: u32,
    /// The connection this one's bytes are relayed to by the stack ([`TcpStack::relay`];
    /// `NO_RELAY` for none).
    relay_to: ConnId,
    flags: u16,
    mss: u16,
    state: State,
    retries: u8,
}

/// No relay binding.
const NO_RELAY: ConnId = ConnId {
    slot: u32::MAX,
    generation: 0,
};

impl Tcb {
    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Bytes sent and not acknowledged, counting data only.
    fn in_flight(&self) -> u32 {
        self.snd_nxt.diff(self.snd_una).max(0) as u32
    }

    /// Sequence number of our FIN (just past the last data byte).
    fn fin_seq(&self) -> TcpSeq {
        self.snd_una + self.snd_buf.len() as u32
    }

    fn rcv_wnd(&self, cap: u32) -> u32 {
        cap.saturating_sub(self.rcv_buf.len() as u32).min(65_535)
    }

    /// The sum of the receive buffer's bytes, when known.
    fn rcv_sum(&self) -> Option<BytesSum> {
        self.has(F_RCV_SUM).then_some(self.rcv_sum)
    }

    fn set_rcv_sum(&mut self, sum: Option<BytesSum>) {
        match sum {
            Some(s) => {
                self.rcv_sum = s;
                self.flags |= F_RCV_SUM;
            }
            None => self.flags &= !F_RCV_SUM,
        }
    }

    /// After bytes were taken from the receive buffer: an empty buffer's sum is known (zero),
    /// a partly read one's is not.
    fn emptied_or_read(&mut self) {
        let empty = self.rcv_buf.is_empty();
        self.set_rcv_sum(empty.then_some(BytesSum::default()));
    }

    /// After the application read (the receive buffer holding what is left): whether the
    /// window has grown, against what was advertised, by min(RCV.BUFF/2, MSS), so that a
    /// window update is due (RFC 1122 §4.2.3.3).
    fn read_reopens_window(&self, cap: u32) -> bool {
        let adv = self.rcv_adv.diff(self.rcv_nxt).max(0) as u32;
        self.rcv_wnd(cap).saturating_sub(adv) >= (cap / 2).min(u32::from(self.mss))
    }

    fn can_send_data(&self) -> bool {
        matches!(self.state, State::Established | State::CloseWait)
    }
}

/// A host's scripted TCP (see the module documentation).
#[derive(Debug)]
pub struct ScriptedStack {
    cfg: ScriptedConfig,
    addrs: Vec<IpAddr>,
    listeners: HashSet<SocketAddr, FixedState>,
    slots: Vec<Option<Tcb>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    map: HashMap<ConnKey, u32, FixedState>,
    timers: SlotTimers,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<TcpEvent>,
    scratch: Vec<u8>,
    spare: Vec<VecDeque<u8>>,
    /// Header prediction on (`header_prediction`); tests turn it off to compare.
    predict: bool,
    /// Segments header prediction took (tests read it).
    #[cfg(test)]
    predicted: usize,
}

impl ScriptedStack {
    /// An empty stack (no address, no listener).
    pub fn new(cfg: ScriptedConfig) -> Self {
        Self {
            cfg,
            addrs: Vec::new(),
            listeners: HashSet::default(),
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            map: HashMap::default(),
            timers: SlotTimers::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            spare: Vec::new(),
            predict: true,
            #[cfg(test)]
            predicted: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ScriptedConfig {
        &self.cfg
    }

    /// The state of a connection still in the table (TIME-WAIT included), by 4-tuple.
    pub fn state_of(&self, local: SocketAddr, remote: SocketAddr) -> Option<State> {
        let slot = *self.map.get(&ConnKey::new(local, remote))?;
        self.slots[slot as usize].as_ref().map(|t| t.state)
    }

    fn tcb(&self, id: ConnId) -> Option<&Tcb> {
        let t = self.slots.get(id.slot as usize)?.as_ref()?;
        (self.generations[id.slot as usize] == id.generation && !t.has(F_RELEASED)).then_some(t)
    }

    /// Like `tcb`, but also a connection already announced closed that waits in TIME-WAIT:
    /// the bytes that arrived with the peer's FIN can still be read.
    fn tcb_read(&self, id: ConnId) -> Option<&Tcb> {
        let t = self.slots.get(id.slot as usize)?.as_ref()?;
        (self.generations[id.slot as usize] == id.generation
            && (!t.has(F_RELEASED) || t.state == State::TimeWait))
            .then_some(t)
    }

    /// The slot of a connection whose bytes can still be read (see `tcb_read`).
    fn read_slot(&self, id: ConnId) -> Result<u32, StackError> {
        self.tcb_read(id)
            .map(|_| id.slot)
            .ok_or(StackError::UnknownConn(id))
    }

    fn id_of(&self, slot: u32) -> ConnId {
        ConnId {
            slot,
            generation: self.generations[slot as usize],
        }
    }

    fn slot_of(&self, id: ConnId) -> Result<u32, StackError> {
        self.tcb(id)
            .map(|_| id.slot)
            .ok_or(StackError::UnknownConn(id))
    }

    fn mss_for(&self, addr: IpAddr) -> u16 {
        let hdr = if addr.is_ipv4() { 40 } else { 60 };
        self.cfg.mtu.saturating_sub(hdr).max(64)
    }

    fn alloc(&mut self, tcb: Tcb) -> u32 {
        let key = ConnKey::new(tcb.local, tcb.remote);
        let slot = if let Some(s) = self.free.pop() {
            self.slots[s as usize] = Some(tcb);
            s
        } else {
            self.slots.push(Some(tcb));
            self.generations.push(0);
            (self.slots.len() - 1) as u32
        };
        self.map.insert(key, slot);
        slot
    }

    fn release(&mut self, slot: u32) {
        if let Some(mut t) = self.slots[slot as usize].take() {
            t.snd_buf.clear();
            t.rcv_buf.clear();
            recycle(&mut self.spare, &mut t.snd_buf);
            recycle(&mut self.spare, &mut t.rcv_buf);
            self.map.remove(&ConnKey::new(t.local, t.remote));
            let g = &mut self.generations[slot as usize];
            *g = g.wrapping_add(1);
            self.free.push(slot);
        }
    }

    /// Ends a connection for its application (one `Closed` event) and, unless it stays in
    /// TIME-WAIT, frees it.
    fn finish(&mut self, slot: u32, cause: CloseCause, keep: bool) {
        let id = self.id_of(slot);
        if let Some(t) = self.slots[slot as usize].as_mut() {
            let announced = !t.has(F_PASSIVE) || t.state != State::SynReceived;
            if !t.has(F_RELEASED) && announced {
                self.events.push_back(TcpEvent::Closed { id, cause });
            }
            t.flags |= F_RELEASED;
            if keep {
                // TIME-WAIT holds no data to send, and often none left to read: its empty
                // buffers go (a run keeps a minute of such connections).
                for buf in [&mut t.snd_buf, &mut t.rcv_buf] {
                    if buf.is_empty() {
                        recycle(&mut self.spare, buf);
                        *buf = VecDeque::new();
                    }
                }
            }
        }
        if !keep {
            self.release(slot);
        }
    }

    fn schedule(&mut self, slot: u32) {
        let gen_ = self.generations[slot as usize];
        if let Some(t) = self.slots[slot as usize].as_mut() {
            let at = t.rto_at.min(t.ack_at);
            if at < t.heap_at {
                t.heap_at = at;
                self.timers.push(at, slot, gen_);
            }
        }
    }

    fn emit(&mut self, slot: u32, flags: TcpFlags, seq: TcpSeq, data: (usize, usize), syn: bool) {
        let cap = self.cfg.rcv_buf;
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let mut repr = TcpRepr {
            sport: t.local.port(),
            dport: t.remote.port(),
            seq,
            flags,
            ..TcpRepr::default()
        };
        if flags.ack() {
            let wnd = t.rcv_wnd(cap);
            repr.ack = t.rcv_nxt;
            repr.window = wnd as u16;
            t.rcv_adv = t.rcv_nxt + wnd;
            t.rcv_unacked = 0;
            t.ack_at = NONE;
        } else {
            repr.window = t.rcv_wnd(cap) as u16;
        }
        if syn {
            repr.mss = Some(
                self.cfg
                    .mtu
                    .saturating_sub(if t.local.is_ipv4() { 40 } else { 60 }),
            );
        }
        let (from, len) = data;
        let (a, b) = t.snd_buf.as_slices();
        let end = from + len;
        // The payload is borrowed when it lies in one piece of the ring, copied otherwise.
        let payload: &[u8] = if len == 0 {
            &[]
        } else if end <= a.len() {
            &a[from..end]
        } else if from >= a.len() {
            &b[from - a.len()..end - a.len()]
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(&a[from..]);
            self.scratch.extend_from_slice(&b[..end - a.len()]);
            &self.scratch
        };
        let sum = t.snd_run.covering(from, len);
        let mut pkt = tierlab_wire::pool::take(payload.len() + 80);
        // Families were checked when the connection was created: this cannot fail.
        let (src, dst) = (t.local.ip(), t.remote.ip());
        if PacketBuilder::tcp_segment_into(src, dst, &repr, payload, sum, &mut pkt).is_ok() {
            self.out.push_back(pkt);
        }
    }

    fn send_ack(&mut self, slot: u32) {
        if let Some(t) = self.slots[slot as usize].as_ref() {
            let seq = t.snd_nxt;
            self.emit(slot, TcpFlags::ACK, seq, (0, 0), false);
        }
    }

    fn send_syn(&mut self, slot: u32) {
        if let Some(t) = self.slots[slot as usize].as_ref() {
            let (iss, state) = (t.iss, t.state);
            let flags = if state == State::SynSent {
                TcpFlags::SYN
            } else {
                TcpFlags::SYN | TcpFlags::ACK
            };
            self.emit(slot, flags, iss, (0, 0), true);
        }
    }

    fn arm_rto(&mut self, slot: u32, now: Instant) {
        if let Some(t) = self.slots[slot as usize].as_mut() {
            t.rto_at = now.as_nanos() + u64::from(t.rto) * 1000;
        }
    }

    /// Sends whatever the window allows: new data, then the FIN when all data is out.
    fn flush(&mut self, slot: u32, now: Instant) {
        loop {
            let Some(t) = self.slots[slot as usize].as_mut() else {
                return;
            };
            let sending_ok = t.can_send_data()
                || (matches!(t.state, State::FinWait1 | State::LastAck | State::Closing)
                    && (t.snd_nxt.diff(t.fin_seq()) < 0 || !t.has(F_FIN_SENT)));
            if !sending_ok {
                return;
            }
            let offset = t.snd_nxt.diff(t.snd_una).max(0) as usize;
            let unsent = t.snd_buf.len().saturating_sub(offset);
            let wnd_left = t.snd_wnd.saturating_sub(t.in_flight()) as usize;
            if t.has(F_RTO_PROBE) && t.in_flight() > 0 {
                return;
            }
            let want_fin = t.has(F_FIN_QUEUED) && !t.has(F_FIN_SENT);
            if unsent == 0 && !want_fin {
                return;
            }
            if unsent > 0 && wnd_left == 0 {
                // Zero window: the persist timer probes it (RFC 9293 §3.8.6.1).
                if t.in_flight() == 0 && t.rto_at == NONE {
                    t.flags |= F_PERSIST;
                    t.rto_at = now.as_nanos() + u64::from(t.rto) * 1000;
                    self.schedule(slot);
                }
                return;
            }
            let n = unsent.min(wnd_left).min(usize::from(t.mss));
            let last = n == unsent;
            let mut flags = TcpFlags::ACK;
            if n > 0 && last {
                flags = flags | TcpFlags::PSH;
            }
            let fin = want_fin && last;
            if fin {
                flags = flags | TcpFlags::FIN;
                t.flags |= F_FIN_SENT;
            }
            let seq = t.snd_nxt;
            t.snd_nxt = t.snd_nxt + n as u32 + u32::from(fin);
            if t.snd_max.diff(t.snd_nxt) < 0 {
                t.snd_max = t.snd_nxt;
            }
            if !t.has(F_RTT) && n > 0 && !t.has(F_RETRANSMITTED) {
                t.flags |= F_RTT;
                t.rtt_seq = seq + n as u32;
                t.rtt_start = now.as_nanos();
            }
            t.flags &= !F_PERSIST;
            if t.rto_at == NONE {
                t.rto_at = now.as_nanos() + u64::from(t.rto) * 1000;
            }
            self.emit(slot, flags, seq, (offset, n), false);
            self.schedule(slot);
            if n == 0 {
                return;
            }
        }
    }

    /// RFC 6298 §2.2–2.4: the first sample sets SRTT = R, RTTVAR = R/2; later ones
    /// RTTVAR = 3/4 RTTVAR + 1/4 |SRTT − R|, SRTT = 7/8 SRTT + 1/8 R; RTO = SRTT + 4 RTTVAR,
    /// clamped to [`ScriptedConfig::rto_min`, `ScriptedConfig::rto_max`].
    fn rtt_sample(t: &mut Tcb, r_us: u32, min_us: u32, max_us: u32) {
        if t.srtt == 0 {
            t.srtt = r_us.max(1);
            t.rttvar = r_us / 2;
        } else {
            let delta = t.srtt.abs_diff(r_us);
            t.rttvar = (3 * (t.rttvar / 4)).saturating_add(delta / 4);
            t.srtt = (7 * (t.srtt / 8)).saturating_add(r_us / 8).max(1);
        }
        t.rto = t
            .srtt
            .saturating_add(4 * t.rttvar.max(1))
            .clamp(min_us, max_us);
    }

    fn no_conn(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr,
        payload: &[u8],
    ) {
        if seg.flags.syn()
            && !seg.flags.ack()
            && !seg.flags.rst()
            && self.listeners.contains(&local)
        {
            self.passive_open(now, local, remote, seg);
            return;
        }
        // RFC 9293 §3.10.7.1; a RST is never answered.
        if let Some(rst) = rst_for_unknown(seg, payload.len())
            && let Ok(b) = PacketBuilder::new(local.ip(), remote.ip())
            && let Ok(p) = b.tcp(&rst, &[])
        {
            self.out.push_back(p);
            self.events.push_back(TcpEvent::ResetSent { local, remote });
        }
    }

    fn new_tcb(&self, local: SocketAddr, remote: SocketAddr, now: Instant, state: State) -> Tcb {
        let iss = initial_seq(self.cfg.iss_secret, local, remote, now);
        Tcb {
            local,
            remote,
            snd_buf: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            rcv_sum: BytesSum::default(),
            snd_run: SumRun::default(),
            rto_at: NONE,
            ack_at: NONE,
            heap_at: NONE,
            rtt_start: 0,
            iss,
            snd_una: iss,
            snd_nxt: iss + 1,
            snd_max: iss + 1,
            snd_wnd: 0,
            rcv_nxt: TcpSeq(0),
            rcv_adv: TcpSeq(0),
            rtt_seq: TcpSeq(0),
            srtt: 0,
            rttvar: 0,
            rto: (self.cfg.rto_initial.as_nanos() / 1000) as u32,
            rcv_unacked: 0,
            relay_to: NO_RELAY,
            flags: F_RCV_SUM,
            mss: self.mss_for(local.ip()),
            state,
            retries: 0,
        }
    }

    fn passive_open(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, seg: &TcpRepr) {
        let mut t = self.new_tcb(local, remote, now, State::SynReceived);
        t.flags |= F_PASSIVE;
        t.rcv_nxt = seg.seq + 1;
        t.snd_wnd = u32::from(seg.window);
        // RFC 9293 §3.7.1: without the option the peer's MSS is 536 (IPv4) / 1220 (IPv6).
        let peer_mss = seg
            .mss
            .unwrap_or_else(|| if local.is_ipv4() { 536 } else { 1220 });
        t.mss = t.mss.min(peer_mss).max(64);
        let slot = self.alloc(t);
        self.send_syn(slot);
        self.arm_rto(slot, now);
        self.schedule(slot);
    }

    /// Segment arrival for a known connection (RFC 9293 §3.10.7.3–4).
    fn segment(
        &mut self,
        now: Instant,
        slot: u32,
        seg: &TcpRepr,
        payload: &[u8],
        sum: Option<BytesSum>,
    ) {
        let cap = self.cfg.rcv_buf;
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return;
        };
        match t.state {
            State::SynSent => return self.syn_sent(now, slot, seg),
            State::TimeWait => return self.time_wait(now, slot, seg),
            _ => {}
        }
        // A retransmitted SYN in SYN-RECEIVED: answer the SYN-ACK again.
        if t.state == State::SynReceived && seg.flags.syn() && !seg.flags.ack() {
            if seg.seq + 1 == t.rcv_nxt {
                self.send_syn(slot);
            }
            return;
        }
        // Sequence acceptability (RFC 9293 §3.10.7.4, first check).
        let wnd = (t.rcv_adv.diff(t.rcv_nxt).max(0) as u32).max(t.rcv_wnd(cap));
        let seg_len = payload.len() as u32 + u32::from(seg.flags.fin());
        let off = seg.seq.diff(t.rcv_nxt);
        let in_wnd = |o: i32| o >= 0 && (o as u32) < wnd;
        let acceptable = if seg_len == 0 {
            if wnd == 0 { off == 0 } else { in_wnd(off) }
        } else {
            wnd > 0 && (in_wnd(off) || in_wnd(off + seg_len as i32 - 1))
        };
        if !acceptable {
            if !seg.flags.rst() {
                self.send_ack(slot);
            }
            return;
        }
        // RST (RFC 5961 §3.2): exactly at RCV.NXT resets, elsewhere in the window draws a
        // challenge ACK. Linux: `tcp_validate_incoming` (net/ipv4/tcp_input.c, v6.12).
        if seg.flags.rst() {
            if off == 0 {
                self.finish(slot, CloseCause::Reset, false);
            } else {
                self.send_ack(slot);
            }
            return;
        }
        // SYN in a synchronized state (RFC 5961 §4): challenge ACK.
        if seg.flags.syn() {
            self.send_ack(slot);
            return;
        }
        if !seg.flags.ack() {
            return;
        }
        let t = self.slots[slot as usize].as_mut().expect("checked above");
        if t.state == State::SynReceived {
            if seg.ack.diff(t.snd_una) > 0 && seg.ack.diff(t.snd_nxt) <= 0 {
                t.state = State::Established;
                t.snd_una = seg.ack;
                t.snd_wnd = u32::from(seg.window);
                t.retries = 0;
                t.rto_at = NONE;
                let (local, remote) = (t.local, t.remote);
                let id = self.id_of(slot);
                self.events
                    .push_back(TcpEvent::Accepted { id, local, remote });
            } else {
                if let Some(rst) = rst_for_unknown(seg, payload.len())
                    && let Ok(b) = PacketBuilder::new(t.local.ip(), t.remote.ip())
                    && let Ok(p) = b.tcp(&rst, &[])
                {
                    self.out.push_back(p);
                }
                return;
            }
        }
        if !self.process_ack(now, slot, seg.ack, seg.window) {
            return;
        }
        self.process_data(now, slot, (seg.seq, seg.flags.fin()), (payload, sum), off);
    }

    /// ACK processing; returns false when the connection is gone.
    fn process_ack(&mut self, now: Instant, slot: u32, ack: TcpSeq, window: u16) -> bool {
        let (min_us, max_us) = (
            (self.cfg.rto_min.as_nanos() / 1000) as u32,
            (self.cfg.rto_max.as_nanos() / 1000) as u32,
        );
        let t = self.slots[slot as usize].as_mut().expect("caller checked");
        if ack.diff(t.snd_max) > 0 {
            // ACK of something never sent: answer with an ACK and drop (RFC 9293 §3.10.7.4).
            self.send_ack(slot);
            return false;
        }
        let advanced = ack.diff(t.snd_una);
        if advanced >= 0 {
            t.snd_wnd = u32::from(window);
        }
        let mut freed = false;
        if advanced > 0 {
            let fin_seq = t.fin_seq();
            let data_acked = (advanced as usize).min(t.snd_buf.len());
            t.snd_buf.drain(..data_acked);
            t.snd_run.drained(data_acked);
            recycle(&mut self.spare, &mut t.snd_buf);
            freed = data_acked > 0;
            t.snd_una = ack;
            if t.snd_nxt.diff(t.snd_una) < 0 {
                t.snd_nxt = t.snd_una;
            }
            if t.has(F_RTT) && ack.diff(t.rtt_seq) >= 0 {
                let r = ((now.as_nanos().saturating_sub(t.rtt_start)) / 1000) as u32;
                Self::rtt_sample(t, r, min_us, max_us);
                t.flags &= !F_RTT;
            }
            t.retries = 0;
            t.flags &= !(F_RTO_PROBE | F_RETRANSMITTED | F_PERSIST);
            t.rto_at = if t.snd_nxt.diff(t.snd_una) > 0 {
                now.as_nanos() + u64::from(t.rto) * 1000
            } else {
                NONE
            };
            let fin_acked = t.has(F_FIN_SENT) && ack.diff(fin_seq) > 0;
            if fin_acked {
                match t.state {
                    State::FinWait1 => {
                        t.state = State::FinWait2;
                        t.rto_at = now.as_nanos() + self.cfg.fin_timeout.as_nanos();
                    }
                    State::Closing => {
                        t.state = State::TimeWait;
                        t.rto_at = now.as_nanos() + self.cfg.time_wait.as_nanos();
                        self.schedule(slot);
                        self.finish(slot, CloseCause::Normal, true);
                        return false;
                    }
                    State::LastAck => {
                        self.finish(slot, CloseCause::Normal, false);
                        return false;
                    }
                    _ => {}
                }
            }
        } else if advanced == 0 && t.has(F_PERSIST) && t.snd_wnd > 0 {
            t.flags &= !F_PERSIST;
            t.rto_at = NONE;
        }
        let t = self.slots[slot as usize].as_mut().expect("still open");
        if freed && t.has(F_WANT_WRITE) {
            t.flags &= !F_WANT_WRITE;
            let id = self.id_of(slot);
            if !self.slots[slot as usize]
                .as_ref()
                .is_some_and(|t| t.has(F_RELEASED))
            {
                self.events.push_back(TcpEvent::Writable { id });
            }
        }
        self.flush(slot, now);
        self.schedule(slot);
        true
    }

    /// Data and FIN processing; `payload` comes with its sum when the checksum was verified.
    fn process_data(
        &mut self,
        now: Instant,
        slot: u32,
        (seq, fin): (TcpSeq, bool),
        (payload, sum): (&[u8], Option<BytesSum>),
        off: i32,
    ) {
        let cap = self.cfg.rcv_buf;
        let full = 2 * u32::from(self.slots[slot as usize].as_ref().map_or(536, |t| t.mss));
        let delack = self.cfg.delayed_ack.as_nanos();
        let time_wait = self.cfg.time_wait.as_nanos();
        let fin_timeout = self.cfg.fin_timeout.as_nanos();
        if off == 0 && self.relay_in(now, slot, fin, payload, sum) {
            return;
        }
        let id = self.id_of(slot);
        let t = self.slots[slot as usize].as_mut().expect("caller checked");
        let receiving = matches!(
            t.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        let mut ack_now = false;
        let mut got = 0usize;
        if !payload.is_empty() && receiving {
            if off > 0 {
                // Out of order: no queue, answer a duplicate ACK at once.
                ack_now = true;
            } else {
                let skip = (-off) as usize;
                let room = t.rcv_wnd(cap) as usize;
                let take = payload.len().saturating_sub(skip).min(room);
                if take > 0 {
                    if t.rcv_buf.capacity() == 0
                        && let Some(b) = self.spare.pop()
                    {
                        t.rcv_buf = b;
                    }
                    reserve(&mut t.rcv_buf, take, cap as usize);
                    // The buffer's sum stays known while whole verified segments arrive.
                    let held = t.rcv_sum();
                    t.set_rcv_sum(match (held, sum) {
                        (Some(held), Some(s)) if skip == 0 && take == payload.len() => {
                            Some(held.then(t.rcv_buf.len(), s))
                        }
                        _ => None,
                    });
                    t.rcv_buf.extend(&payload[skip..skip + take]);
                    t.rcv_nxt = t.rcv_nxt + take as u32;
                    t.rcv_unacked += take as u32;
                    got = take;
                }
                if skip + take < payload.len() {
                    ack_now = true; // trimmed at the window edge, or a duplicate
                }
                if t.state == State::FinWait2 && t.rto_at != NONE {
                    t.rto_at = now.as_nanos() + fin_timeout;
                }
            }
        }
        let fin_here = fin && seq + payload.len() as u32 == t.rcv_nxt;
        let mut peer_fin = false;
        if fin_here && !t.has(F_PEER_FIN) && t.state != State::CloseWait {
            t.rcv_nxt = t.rcv_nxt + 1;
            t.flags |= F_PEER_FIN;
            peer_fin = true;
            ack_now = true;
        } else if fin && t.has(F_PEER_FIN) {
            ack_now = true; // retransmitted FIN
        }
        if got > 0 && !t.has(F_RELEASED) {
            self.events.push_back(TcpEvent::Readable { id });
        }
        let t = self.slots[slot as usize].as_mut().expect("still open");
        if peer_fin {
            if !t.has(F_RELEASED) {
                self.events.push_back(TcpEvent::PeerClosed { id });
            }
            let t = self.slots[slot as usize].as_mut().expect("still open");
            match t.state {
                State::Established => t.state = State::CloseWait,
                State::FinWait1 => t.state = State::Closing,
                State::FinWait2 => {
                    t.state = State::TimeWait;
                    t.rto_at = now.as_nanos() + time_wait;
                    self.send_ack(slot);
                    self.schedule(slot);
                    self.finish(slot, CloseCause::Normal, true);
                    return;
                }
                _ => {}
            }
        }
        let t = self.slots[slot as usize].as_mut().expect("still open");
        if ack_now || t.rcv_unacked >= full {
            self.send_ack(slot);
        } else if t.rcv_unacked > 0 && t.ack_at == NONE {
            t.ack_at = now.as_nanos() + delack;
            self.schedule(slot);
        }
    }

    /// Header prediction (Van Jacobson's, as Linux `tcp_rcv_established` does it): the
    /// common segment, an ACK with or without data (or a FIN) at exactly RCV.NXT on a
    /// synchronized connection (Linux predicts in ESTABLISHED only; here the closing states
    /// too, whose processing is the same past `segment`'s checks), with no option, flag or
    /// sequence number that asks for more, is read straight from the packet's bytes and
    /// goes to the ACK and data processing at once, past the checks of `segment` that it
    /// passes by construction. Returns false, with nothing done, for any other segment (the
    /// general path then takes it, and reports what is wrong with it, a bad checksum
    /// included).
    fn header_prediction(&mut self, now: Instant, ip: &IpView<'_>, verify: bool) -> bool {
        if ip.is_fragment() || ip.proto() != IpProto::Tcp {
            return false;
        }
        let body = ip.payload();
        // A 20-byte header (data offset 5), flags ACK with PSH or FIN or both, or alone,
        // and nothing else.
        let Some(&[.., h12, h13]) = body.get(..14) else {
            return false;
        };
        if h12 != 0x50 || h13 & !(0x08 | 0x01) != 0x10 || body.len() < 20 {
            return false;
        }
        let fin = h13 & 0x01 != 0;
        let (head, payload) = body.split_at(20);
        let sum = if verify {
            let sum = BytesSum::of(payload);
            let expected = tierlab_wire::checksum::transport_split_pseudo(
                head,
                16,
                sum,
                ip.pseudo_header_sum(),
            );
            if expected != u16::from_be_bytes([head[16], head[17]]) {
                return false;
            }
            Some(sum)
        } else {
            None
        };
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (ports, seq, ack) = (word(0), TcpSeq(word(4)), TcpSeq(word(8)));
        let window = u16::from_be_bytes([head[14], head[15]]);
        let key = ConnKey::of_packet(ip, (ports >> 16) as u16, ports as u16);
        let Some(&slot) = self.map.get(&key) else {
            return false;
        };
        let cap = self.cfg.rcv_buf;
        let Some(t) = self.slots[slot as usize].as_ref() else {
            return false;
        };
        // RFC 9293 §3.10.7.4: at RCV.NXT a segment is acceptable when it occupies no
        // sequence space or the window is open; its ACK is of something sent. (SYN-SENT,
        // SYN-RECEIVED and TIME-WAIT have their own rules: the general path.)
        let wnd = (t.rcv_adv.diff(t.rcv_nxt).max(0) as u32).max(t.rcv_wnd(cap));
        if matches!(
            t.state,
            State::SynSent | State::SynReceived | State::TimeWait
        ) || seq != t.rcv_nxt
            || ((!payload.is_empty() || fin) && wnd == 0)
            || ack.diff(t.snd_max) > 0
        {
            return false;
        }
        if self.process_ack(now, slot, ack, window) {
            self.process_data(now, slot, (seq, fin), (payload, sum), 0);
        }
        true
    }

    /// The relay's common case ([`TcpStack::relay`]): a segment's in-order bytes go straight
    /// to the bound connection's send buffer, and out, when the application's splice right
    /// after the arrival would have moved all of them. The packets sent are the ones of
    /// that path: the same receive-side ACK decisions (the window update the read would
    /// trigger, or the delayed ACK), then the bound connection's flush. Returns false, with
    /// nothing done, when the segment must go the usual way.
    fn relay_in(
        &mut self,
        now: Instant,
        slot: u32,
        fin: bool,
        payload: &[u8],
        sum: Option<BytesSum>,
    ) -> bool {
        let cap = self.cfg.rcv_buf;
        let Some(t) = self.slots[slot as usize].as_ref() else {
            return false;
        };
        let n = payload.len();
        let full = 2 * u32::from(t.mss);
        // Left to the usual path: a segment it would answer at once (a FIN, a second full
        // segment unacknowledged), so that its ACK carries the window it would carry, and
        // one that arrives after events the application has yet to answer (its answers
        // come first).
        if t.relay_to == NO_RELAY
            || n == 0
            || !self.events.is_empty()
            || fin
            || t.state != State::Established
            || t.has(F_RELEASED)
            || !t.rcv_buf.is_empty()
            || n > t.rcv_wnd(cap) as usize
            || t.rcv_unacked + n as u32 >= full
        {
            return false;
        }
        let to = t.relay_to;
        // The held sum a whole verified segment keeps (see `process_data`).
        let sum = sum.filter(|_| t.has(F_RCV_SUM));
        let Some(d) = self.tcb(to) else {
            return false;
        };
        if to.slot == slot
            || d.has(F_FIN_QUEUED)
            || !d.can_send_data()
            || !d.rcv_buf.is_empty()
            || (self.cfg.snd_buf as usize).saturating_sub(d.snd_buf.len()) < n
        {
            return false;
        }
        let dst = to.slot;
        self.queue(dst, [payload, &[]], n, sum);
        let delack = self.cfg.delayed_ack.as_nanos();
        let t = self.slots[slot as usize].as_mut().expect("checked");
        t.rcv_nxt = t.rcv_nxt + n as u32;
        t.rcv_unacked += n as u32;
        // What `after_read` decides after the application's read.
        if t.read_reopens_window(cap) {
            self.send_ack(slot);
        } else if t.ack_at == NONE {
            t.ack_at = now.as_nanos() + delack;
            self.schedule(slot);
        }
        self.flush(dst, now);
        true
    }

    fn syn_sent(&mut self, now: Instant, slot: u32, seg: &TcpRepr) {
        let t = self.slots[slot as usize].as_mut().expect("caller checked");
        if seg.flags.ack() && (seg.ack.diff(t.iss) <= 0 || seg.ack.diff(t.snd_nxt) > 0) {
            if !seg.flags.rst()
                && let Some(rst) = rst_for_unknown(seg, 0)
                && let Ok(b) = PacketBuilder::new(t.local.ip(), t.remote.ip())
                && let Ok(p) = b.tcp(&rst, &[])
            {
                self.out.push_back(p);
            }
            return;
        }
        if seg.flags.rst() {
            if seg.flags.ack() {
                self.finish(slot, CloseCause::Reset, false);
            }
            return;
        }
        if !(seg.flags.syn() && seg.flags.ack()) {
            return;
        }
        t.rcv_nxt = seg.seq + 1;
        t.snd_una = seg.ack;
        t.snd_wnd = u32::from(seg.window);
        let peer_mss = seg
            .mss
            .unwrap_or_else(|| if t.local.is_ipv4() { 536 } else { 1220 });
        t.mss = t.mss.min(peer_mss).max(64);
        t.state = State::Established;
        if t.retries == 0 {
            let (min_us, max_us) = (
                (self.cfg.rto_min.as_nanos() / 1000) as u32,
                (self.cfg.rto_max.as_nanos() / 1000) as u32,
            );
            let r = ((now.as_nanos().saturating_sub(t.rtt_start)) / 1000) as u32;
            Self::rtt_sample(t, r, min_us, max_us);
        }
        t.retries = 0;
        t.rto_at = NONE;
        let id = self.id_of(slot);
        self.events.push_back(TcpEvent::Connected { id });
        let before = self.out.len();
        self.flush(slot, now);
        if self.out.len() == before {
            self.send_ack(slot);
        }
        self.schedule(slot);
    }

    /// TIME-WAIT (Linux `tcp_timewait_state_process`, net/ipv4/tcp_minisocks.c, v6.12): a RST
    /// kills the entry (`tcp_rfc1337=0`); a SYN with a sequence number beyond RCV.NXT opens a
    /// new connection; anything else is answered with an ACK.
    fn time_wait(&mut self, now: Instant, slot: u32, seg: &TcpRepr) {
        let t = self.slots[slot as usize].as_ref().expect("caller checked");
        if seg.flags.rst() {
            self.release(slot);
        } else if seg.flags.syn() && !seg.flags.ack() && seg.seq.diff(t.rcv_nxt) > 0 {
            let (local, remote) = (t.local, t.remote);
            self.release(slot);
            if self.listeners.contains(&local) {
                self.passive_open(now, local, remote, seg);
            }
        } else {
            self.send_ack(slot);
        }
    }

    fn on_timer(&mut self, now: Instant, slot: u32) {
        let n = now.as_nanos();
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if t.ack_at <= n {
            t.ack_at = NONE;
            self.send_ack(slot);
        }
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if t.rto_at > n {
            return;
        }
        t.rto_at = NONE;
        match t.state {
            State::TimeWait => return self.release(slot),
            State::FinWait2 => return self.finish(slot, CloseCause::Normal, false),
            _ => {}
        }
        let limit = match t.state {
            State::SynSent => self.cfg.syn_retries,
            State::SynReceived => self.cfg.synack_retries,
            _ => self.cfg.retries2,
        };
        if t.retries >= limit {
            // Linux `tcp_write_err` (net/ipv4/tcp_timer.c): the connection dies without a RST.
            return self.finish(slot, CloseCause::TimedOut, false);
        }
        t.retries += 1;
        // RFC 6298 §5.5: back off the timer.
        t.rto = t
            .rto
            .saturating_mul(2)
            .min((self.cfg.rto_max.as_nanos() / 1000) as u32);
        t.flags &= !F_RTT;
        t.flags |= F_RETRANSMITTED;
        match t.state {
            State::SynSent | State::SynReceived => self.send_syn(slot),
            _ if t.has(F_PERSIST) => {
                // Zero-window probe: Linux `tcp_xmit_probe_skb` sends SND.UNA − 1.
                let seq = t.snd_una - 1;
                self.emit(slot, TcpFlags::ACK, seq, (0, 0), false);
                let t = self.slots[slot as usize].as_mut().expect("open");
                t.flags |= F_PERSIST;
            }
            _ => {
                // Go back to SND.UNA and send one segment (RFC 6298 §5.4).
                t.snd_nxt = t.snd_una;
                t.flags &= !F_FIN_SENT;
                t.flags |= F_RTO_PROBE;
                self.flush(slot, now);
            }
        }
        self.arm_rto(slot, now);
    }
    /// Refuses a send on a connection that has queued its FIN or is past sending.
    fn check_can_send(&self, slot: u32, id: ConnId) -> Result<(), StackError> {
        let t = self.slots[slot as usize].as_ref().expect("caller checked");
        if t.has(F_FIN_QUEUED)
            || !matches!(
                t.state,
                State::SynSent | State::Established | State::CloseWait
            )
        {
            return Err(StackError::InvalidState { id, what: "send" });
        }
        Ok(())
    }

    /// Appends up to `max` bytes of `parts` (in order) to the send buffer, as far as it has
    /// room; returns how many. A write that leaves the buffer full (or could not take
    /// everything) asks for a `Writable` event.
    ///
    /// `sum`, when known, is the sum of all of `parts`; it is kept (as the buffer's
    /// [`SumRun`]) when every byte of `parts` was taken.
    fn queue(&mut self, slot: u32, parts: [&[u8]; 2], max: usize, sum: Option<BytesSum>) -> usize {
        let cap = self.cfg.snd_buf as usize;
        let t = self.slots[slot as usize].as_mut().expect("caller checked");
        let total = (parts[0].len() + parts[1].len()).min(max);
        let n = total.min(cap.saturating_sub(t.snd_buf.len()));
        if t.snd_buf.capacity() == 0
            && n > 0
            && let Some(b) = self.spare.pop()
        {
            t.snd_buf = b;
        }
        let first = n.min(parts[0].len());
        if let Some(sum) = sum
            && n > 0
            && n == parts[0].len() + parts[1].len()
        {
            t.snd_run.appended(t.snd_buf.len(), n, sum);
        }
        reserve(&mut t.snd_buf, n, cap);
        t.snd_buf.extend(&parts[0][..first]);
        t.snd_buf.extend(&parts[1][..n - first]);
        if n < total || t.snd_buf.len() >= cap {
            t.flags |= F_WANT_WRITE;
        }
        n
    }

    /// After the application read `n` bytes: an emptied buffer goes back to the spares, and
    /// a window update is sent when the window grew by min(RCV.BUFF/2, MSS) (RFC 1122
    /// §4.2.3.3).
    fn after_read(&mut self, slot: u32, n: usize) {
        let cap = self.cfg.rcv_buf;
        let t = self.slots[slot as usize].as_mut().expect("caller checked");
        recycle(&mut self.spare, &mut t.rcv_buf);
        if n > 0
            && matches!(
                t.state,
                State::Established | State::FinWait1 | State::FinWait2
            )
            && t.read_reopens_window(cap)
        {
            self.send_ack(slot);
        }
    }
}

/// Makes room in `buf` for `add` more bytes. A buffer's first allocation is what it is
/// asked for when that is small (a request, a header: under 1 KiB); a first write of a
/// segment or more, or any growth after the first allocation, goes straight to the limit
/// `limit` (the socket buffer size): a stream then costs one allocation and no copy of the
/// bytes already queued, where doubling would reallocate and copy five times and end past
/// the limit (1,460 → 93,440 bytes for a 64 KiB buffer).
fn reserve(buf: &mut VecDeque<u8>, add: usize, limit: usize) {
    let need = buf.len() + add;
    if need > buf.capacity() {
        let target = if buf.capacity() == 0 && need < 1024 {
            need
        } else {
            need.max(limit)
        };
        buf.reserve_exact(target - buf.len());
    }
}

/// Stale timer entries tolerated beyond two per connection before they are dropped in one
/// pass (`handle_timeout`).
const STALE_TIMERS: usize = 1024;

/// Most empty buffers kept for reuse (avoids a malloc/free and page faults per connection).
const SPARE_BUFFERS: usize = 256;

/// Moves an emptied large buffer to the spare list (idle connections then hold none).
fn recycle(spare: &mut Vec<VecDeque<u8>>, buf: &mut VecDeque<u8>) {
    if buf.is_empty() && buf.capacity() > 4096 {
        let b = std::mem::take(buf);
        if spare.len() < SPARE_BUFFERS {
            spare.push(b);
        }
    }
}

impl TcpStack for ScriptedStack {
    fn add_address(&mut self, addr: IpAddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    fn listen(&mut self, local: SocketAddr) -> Result<(), StackError> {
        if !self.addrs.contains(&local.ip()) {
            return Err(StackError::NotLocal(local.ip()));
        }
        self.listeners.insert(local);
        Ok(())
    }

    fn connect(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnId, StackError> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(StackError::MixedFamilies { local, remote });
        }
        if !self.addrs.contains(&local.ip()) {
            return Err(StackError::NotLocal(local.ip()));
        }
        if self.map.contains_key(&ConnKey::new(local, remote)) {
            return Err(StackError::AddrInUse { local, remote });
        }
        let mut t = self.new_tcb(local, remote, now, State::SynSent);
        t.rtt_start = now.as_nanos();
        let slot = self.alloc(t);
        self.send_syn(slot);
        self.arm_rto(slot, now);
        self.schedule(slot);
        Ok(self.id_of(slot))
    }

    fn send(&mut self, now: Instant, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        let slot = self.slot_of(id)?;
        self.check_can_send(slot, id)?;
        let n = self.queue(slot, [data, &[]], data.len(), None);
        self.flush(slot, now);
        Ok(n)
    }

    fn splice(
        &mut self,
        now: Instant,
        from: ConnId,
        to: ConnId,
        max: usize,
    ) -> Result<usize, StackError> {
        let src = self.read_slot(from)?;
        let dst = self.slot_of(to)?;
        let n = max.min(self.recv_queue(from)).min(self.send_room(to));
        if n == 0 || src == dst || self.check_can_send(dst, to).is_err() {
            return Ok(0);
        }
        let s = self.slots[src as usize].as_mut().expect("checked");
        let mut bytes = std::mem::take(&mut s.rcv_buf);
        // The received bytes' sum goes with them when all of them move.
        let sum = s.rcv_sum().filter(|_| n == bytes.len());
        let t = self.slots[dst as usize].as_mut().expect("checked");
        let moved = if n == bytes.len() && t.snd_buf.is_empty() {
            // Everything received goes out: the buffers change hands, no byte is copied.
            std::mem::swap(&mut bytes, &mut t.snd_buf);
            t.snd_run = SumRun::default();
            if let Some(sum) = sum {
                t.snd_run.appended(0, n, sum);
            }
            if t.snd_buf.len() >= self.cfg.snd_buf as usize {
                t.flags |= F_WANT_WRITE;
            }
            n
        } else {
            let (a, b) = bytes.as_slices();
            let moved = self.queue(dst, [a, b], n, sum);
            bytes.drain(..moved);
            moved
        };
        let s = self.slots[src as usize].as_mut().expect("checked");
        s.rcv_buf = bytes;
        s.emptied_or_read();
        self.after_read(src, moved);
        self.flush(dst, now);
        Ok(moved)
    }

    fn recv(
        &mut self,
        now: Instant,
        id: ConnId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, StackError> {
        self.recv_with(now, id, max, &mut |piece| out.extend_from_slice(piece))
    }

    fn recv_with(
        &mut self,
        now: Instant,
        id: ConnId,
        max: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, StackError> {
        let slot = self.read_slot(id)?;
        let t = self.slots[slot as usize].as_mut().expect("checked");
        let n = max.min(t.rcv_buf.len());
        let (a, b) = t.rcv_buf.as_slices();
        let from_a = n.min(a.len());
        f(&a[..from_a]);
        if n > from_a {
            f(&b[..n - from_a]);
        }
        t.rcv_buf.drain(..n);
        t.emptied_or_read();
        self.after_read(slot, n);
        let _ = now;
        Ok(n)
    }

    fn relay(&mut self, from: ConnId, to: ConnId) -> bool {
        if self.tcb(to).is_none() {
            return false;
        }
        match self.slot_of(from) {
            Ok(slot) => {
                if let Some(t) = self.slots[slot as usize].as_mut() {
                    t.relay_to = to;
                }
                true
            }
            Err(_) => false,
        }
    }

    fn recv_queue(&self, id: ConnId) -> usize {
        self.tcb_read(id).map_or(0, |t| t.rcv_buf.len())
    }

    fn send_room(&self, id: ConnId) -> usize {
        self.tcb(id).map_or(0, |t| {
            if t.has(F_FIN_QUEUED) {
                0
            } else {
                (self.cfg.snd_buf as usize).saturating_sub(t.snd_buf.len())
            }
        })
    }

    fn peer_closed(&self, id: ConnId) -> bool {
        self.tcb_read(id).is_some_and(|t| t.has(F_PEER_FIN))
    }

    fn close(&mut self, now: Instant, id: ConnId) -> Result<(), StackError> {
        let slot = self.slot_of(id)?;
        let t = self.slots[slot as usize].as_mut().expect("checked");
        if t.has(F_FIN_QUEUED) {
            return Ok(());
        }
        match t.state {
            State::SynSent | State::SynReceived => {
                self.finish(slot, CloseCause::Aborted, false);
                return Ok(());
            }
            State::Established => t.state = State::FinWait1,
            State::CloseWait => t.state = State::LastAck,
            _ => return Ok(()),
        }
        t.flags |= F_FIN_QUEUED;
        self.flush(slot, now);
        Ok(())
    }

    fn abort(&mut self, now: Instant, id: ConnId) -> Result<(), StackError> {
        let slot = self.slot_of(id)?;
        let t = self.slots[slot as usize].as_ref().expect("checked");
        // Linux `tcp_send_active_reset` (net/ipv4/tcp_output.c): RST|ACK at SND.NXT.
        if t.state != State::SynSent {
            let seq = t.snd_max;
            self.emit(slot, TcpFlags::RST | TcpFlags::ACK, seq, (0, 0), false);
        }
        let _ = now;
        self.finish(slot, CloseCause::Aborted, false);
        Ok(())
    }

    fn knows(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        self.map.contains_key(&ConnKey::new(local, remote))
    }

    fn icmp_unreachable(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        seq: TcpSeq,
    ) -> bool {
        let _ = now;
        let Some(&slot) = self.map.get(&ConnKey::new(local, remote)) else {
            return false;
        };
        let Some(t) = self.slots[slot as usize].as_ref() else {
            return false;
        };
        // `between(seq, snd_una, snd_nxt)`: both ends included.
        let believed = seq.diff(t.snd_una) >= 0 && t.snd_nxt.diff(seq) >= 0;
        if believed && t.state == State::SynSent && !t.has(F_RELEASED) {
            self.finish(slot, CloseCause::Unreachable, false);
        }
        true
    }

    fn lower_path_mtu(&mut self, local: SocketAddr, remote: SocketAddr, mtu: u16) -> bool {
        let Some(&slot) = self.map.get(&ConnKey::new(local, remote)) else {
            return false;
        };
        if let Some(t) = self.slots[slot as usize].as_mut() {
            let hdr = if local.is_ipv4() { 40 } else { 60 };
            // Linux never goes below `tcp_min_snd_mss` (48) nor an IPv4 MTU of 552 here.
            let mss = mtu.saturating_sub(hdr).max(48);
            t.mss = t.mss.min(mss);
        }
        true
    }

    /// Linux `tcp_v4_mtu_reduced`: when the MSS shrinks, `tcp_simple_retransmit` resends at
    /// once (no backoff, no retry counted) what was in flight. Here that is going back to
    /// SND.UNA: the receiver keeps no out-of-order segment, so everything after the first lost
    /// segment was lost as well.
    fn path_mtu_reduced(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        mtu: u16,
    ) -> bool {
        let Some(&slot) = self.map.get(&ConnKey::new(local, remote)) else {
            return false;
        };
        let before = self.slots[slot as usize].as_ref().map_or(0, |t| t.mss);
        self.lower_path_mtu(local, remote, mtu);
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return true;
        };
        let resend = t.mss < before
            && t.in_flight() > 0
            && !t.has(F_PERSIST)
            && !matches!(
                t.state,
                State::SynSent | State::SynReceived | State::TimeWait
            );
        if resend {
            t.snd_nxt = t.snd_una;
            t.flags &= !(F_FIN_SENT | F_RTT);
            t.flags |= F_RETRANSMITTED;
            self.flush(slot, now);
            self.schedule(slot);
        }
        true
    }

    fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), StackError> {
        // The IP header is always checked (`Verify::IpHeader` at least).
        let ip = IpView::new_checked(packet, true)?;
        self.handle_ip(now, &ip)
    }

    fn handle_ip(&mut self, now: Instant, ip: &IpView<'_>) -> Result<(), StackError> {
        let ip = *ip;
        let packet = ip.bytes();
        let verify = if self.cfg.verify_checksums {
            Verify::All
        } else {
            Verify::IpHeader
        };
        // The common case, a whole packet, is read through the checked views (no header
        // copied out); a fragment goes through the full parser, which knows what to make of
        // one.
        if self.predict && self.header_prediction(now, &ip, verify == Verify::All) {
            #[cfg(test)]
            {
                self.predicted += 1;
            }
            return Ok(());
        }
        let (src, dst, seg, payload, sum) = if ip.is_fragment() {
            let p = Packet::parse_with(packet, verify)?;
            let Transport::Tcp(seg) = p.transport else {
                return Err(StackError::NotTcp(p.proto().into()));
            };
            (p.src(), p.dst(), seg, p.payload, None)
        } else {
            if ip.proto() != IpProto::Tcp {
                return Err(StackError::NotTcp(ip.proto().into()));
            }
            let (src, dst) = (ip.src(), ip.dst());
            let body = ip.payload();
            let (seg, hlen, sum) = if verify == Verify::All {
                let (seg, hlen, sum) =
                    TcpRepr::parse_summed(body, ip.transport_offset(), src, dst)?;
                (seg, hlen, Some(sum))
            } else {
                let (seg, hlen) = TcpRepr::parse(body, ip.transport_offset(), None)?;
                (seg, hlen, None)
            };
            (src, dst, seg, &body[hlen..], sum)
        };
        // A known connection's local address is the host's (connections are only made from
        // and to its addresses), so the address list (hundreds on the clients' host) is
        // scanned only for segments of no connection.
        match self.map.get(&ConnKey::of_packet(&ip, seg.sport, seg.dport)) {
            Some(&slot) => self.segment(now, slot, &seg, payload, sum),
            None if !self.addrs.contains(&dst) => return Err(StackError::NotLocal(dst)),
            None => {
                let local = SocketAddr::new(dst, seg.dport);
                let remote = SocketAddr::new(src, seg.sport);
                self.no_conn(now, local, remote, &seg, payload);
            }
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        // A deadline moved earlier, or a connection gone, leaves a stale entry that is only
        // skipped when it comes due. When they far outnumber the connections, one pass
        // drops them all (popping each would cost a sift through the heap).
        if self.timers.len() > 2 * self.map.len() + STALE_TIMERS {
            let (slots, generations) = (&self.slots, &self.generations);
            self.timers.retain(|at, slot, g| {
                generations[slot as usize] == g
                    && slots[slot as usize]
                        .as_ref()
                        .is_some_and(|t| t.heap_at == at)
            });
        }
        while let Some((at, slot, gen_)) = self.timers.pop_due(now) {
            if self.generations[slot as usize] != gen_ {
                continue;
            }
            let Some(t) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            if t.heap_at != at {
                continue;
            }
            t.heap_at = NONE;
            self.on_timer(now, slot);
            if self.generations[slot as usize] == gen_ {
                self.schedule(slot);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<TcpEvent> {
        self.events.pop_front()
    }

    fn connections(&self) -> usize {
        self.map.len()
    }

    fn memory_bytes(&self) -> usize {
        let per_slot = size_of::<Option<Tcb>>() + size_of::<u32>();
        let bufs: usize = self
            .slots
            .iter()
            .flatten()
            .map(|t| t.snd_buf.capacity() + t.rcv_buf.capacity())
            .sum::<usize>()
            + self.spare.iter().map(VecDeque::capacity).sum::<usize>();
        // hashbrown: one control byte per bucket plus the entry, at a 7/8 load factor.
        let map = self.map.capacity() * (size_of::<(ConnKey, u32)>() + 1) * 8 / 7;
        self.slots.capacity() * per_slot
            + self.free.capacity() * 4
            + map
            + bufs
            + self.timers.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_keys_tell_every_field_and_family_apart() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let base = (sa("10.0.0.1:80"), sa("203.0.113.7:33000"));
        let others = [
            (sa("10.0.0.2:80"), sa("203.0.113.7:33000")),
            (sa("10.0.0.1:81"), sa("203.0.113.7:33000")),
            (sa("10.0.0.1:80"), sa("203.0.113.8:33000")),
            (sa("10.0.0.1:80"), sa("203.0.113.7:33001")),
            // The reverse direction, and the same tuple in IPv4-mapped IPv6 form.
            (sa("203.0.113.7:33000"), sa("10.0.0.1:80")),
            (sa("[::ffff:10.0.0.1]:80"), sa("[::ffff:203.0.113.7]:33000")),
        ];
        let k = ConnKey::new(base.0, base.1);
        assert_eq!(k, ConnKey::new(base.0, base.1));
        for (l, r) in others {
            assert_ne!(k, ConnKey::new(l, r), "{l} {r}");
        }
        let v6 = (sa("[2001:db8::1]:80"), sa("[2001:db8::2:3]:40000"));
        let k6 = ConnKey::new(v6.0, v6.1);
        assert_eq!(k6, ConnKey::new(v6.0, v6.1));
        assert_ne!(k6, ConnKey::new(v6.1, v6.0));
        assert_ne!(
            k6,
            ConnKey::new(sa("[2001:db8::1]:80"), sa("[2001:db8::2:4]:40000"))
        );
        // Equal keys hash equally (the map's contract), with the map's own hasher.
        use std::hash::BuildHasher;
        let h = FixedState::default();
        assert_eq!(h.hash_one(k6), h.hash_one(ConnKey::new(v6.0, v6.1)));
        assert_eq!(size_of::<(ConnKey, u32)>(), 48);
    }

    #[test]
    fn a_packets_key_read_from_its_header_bytes_is_its_connections_key() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (local, remote) in [
            (sa("10.0.0.1:80"), sa("203.0.113.7:33000")),
            (sa("198.51.100.1:443"), sa("10.255.0.254:65535")),
            (sa("[2001:db8::1]:80"), sa("[2001:db8:ffff::7]:33000")),
            (sa("[fd00::2:1]:8080"), sa("[::1]:1")),
        ] {
            let seg = TcpRepr {
                sport: remote.port(),
                dport: local.port(),
                flags: TcpFlags::ACK,
                ..TcpRepr::default()
            };
            let p = PacketBuilder::new(remote.ip(), local.ip())
                .unwrap()
                .tcp(&seg, b"data")
                .unwrap();
            let ip = IpView::new_checked(&p, true).unwrap();
            assert_eq!(
                ConnKey::of_packet(&ip, seg.sport, seg.dport),
                ConnKey::new(local, remote),
                "{local} <- {remote}"
            );
        }
    }

    #[test]
    fn a_small_buffer_is_first_sized_to_its_bytes_then_grows_once_to_its_limit() {
        let mut b = VecDeque::new();
        reserve(&mut b, 60, 65_536);
        assert!((60..65_536).contains(&b.capacity()), "first: what is asked");
        b.extend(&[1u8; 50]);
        reserve(&mut b, 10, 65_536);
        assert!(b.capacity() < 65_536, "room left: no growth");
        b.extend(&[1u8; 10]);
        let first = b.capacity();
        reserve(&mut b, first, 65_536);
        assert_eq!(b.capacity(), 65_536, "second: straight to the limit");
        let ptr = b.as_slices().0.as_ptr();
        b.extend(std::iter::repeat_n(2u8, 65_536 - b.len()));
        reserve(&mut b, 0, 65_536);
        assert_eq!(
            b.as_slices().0.as_ptr(),
            ptr,
            "a full buffer is not reallocated"
        );
        // Asked past the limit (a caller that knows better): what is asked.
        reserve(&mut b, 100, 65_536);
        assert!(b.capacity() >= 65_636);
        // A first write of a segment: straight to the limit.
        let mut s = VecDeque::new();
        reserve(&mut s, 1_460, 65_536);
        assert_eq!(s.capacity(), 65_536);
    }

    #[test]
    fn a_sum_run_follows_the_buffer_front_and_matches_only_its_own_bytes() {
        let sum = BytesSum::of(b"abcde");
        let mut r = SumRun::default();
        assert_eq!(r.covering(0, 0), None, "no run, and never for no bytes");
        r.appended(100, 5, sum);
        assert_eq!(r.covering(100, 5), Some(sum));
        assert_eq!(r.covering(100, 4), None, "a part of the run");
        assert_eq!(r.covering(99, 5), None, "other bytes");
        r.drained(60);
        assert_eq!(
            r.covering(40, 5),
            Some(sum),
            "acknowledged bytes dropped before it"
        );
        assert_eq!(r.covering(100, 5), None);
        r.drained(41);
        assert_eq!(r.covering(0, 4), None, "its first byte dropped: no run");
        assert_eq!(r.len, 0);
        r.appended(0, 70_000, sum);
        assert_eq!(r.len, 0, "longer than a segment: no run");
        // Kept small: the connection block is counted in the memory per connection.
        assert_eq!(size_of::<SumRun>(), 8);
    }

    /// Delivers packets among `hosts` (by destination address, no delay) until none is left;
    /// returns how many of them carried data.
    fn settle(hosts: &mut [&mut ScriptedStack], now: Instant) -> usize {
        let mut data = 0;
        loop {
            let mut moved = Vec::new();
            for h in hosts.iter_mut() {
                while let Some(p) = h.poll_transmit() {
                    moved.push(p);
                }
            }
            if moved.is_empty() {
                return data;
            }
            for p in moved {
                let parsed = Packet::parse(&p, true).expect("every segment sent checks out");
                data += usize::from(!parsed.payload.is_empty());
                let to = hosts
                    .iter_mut()
                    .find(|h| h.addrs.contains(&parsed.dst()))
                    .expect("a host owns the destination");
                to.handle_packet(now, &p).expect("accepted");
            }
        }
    }

    /// The relay tests' hosts: a client (IPv4), a relay host listening on a VIP with an
    /// IPv6 source for its side, and a server (IPv6) listening; the client's connection to
    /// the relay and the relay's to the server opened (`c`, `out`), header prediction as
    /// `predict` says; the time.
    fn relay_trio(
        predict: bool,
    ) -> (
        ScriptedStack,
        ScriptedStack,
        ScriptedStack,
        ConnId,
        ConnId,
        Instant,
    ) {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (c_addr, r_in, r_out, s_addr) = (
            sa("203.0.113.7:40000"),
            sa("198.51.100.1:80"),
            sa("[2001:db8::1]:50000"),
            sa("[2001:db8::2]:8080"),
        );
        let cfg = ScriptedConfig::default();
        let mut client = ScriptedStack::new(cfg.clone());
        let mut relay = ScriptedStack::new(cfg.clone());
        let mut server = ScriptedStack::new(cfg);
        for h in [&mut client, &mut relay, &mut server] {
            h.predict = predict;
        }
        client.add_address(c_addr.ip());
        relay.add_address(r_in.ip());
        relay.add_address(r_out.ip());
        server.add_address(s_addr.ip());
        relay.listen(r_in).unwrap();
        server.listen(s_addr).unwrap();
        let now = Instant::from_millis(1);
        let c = client.connect(now, c_addr, r_in).unwrap();
        let out = relay.connect(now, r_out, s_addr).unwrap();
        (client, relay, server, c, out, now)
    }

    /// A relay moves a client's bytes (IPv4) to a server (IPv6) with `splice`, whole and in
    /// parts, in runs of odd and even lengths: the server gets every byte in order, every
    /// segment's checksum verifies (debug builds also check each reused sum against the
    /// bytes), and a run received whole is sent on under its received sum.
    #[test]
    fn relayed_bytes_go_out_under_their_received_sums() {
        let (mut client, mut relay, mut server, c, out, now) = relay_trio(true);
        settle(&mut [&mut client, &mut relay, &mut server], now);
        let accepted = |h: &mut ScriptedStack| loop {
            match h.poll_event() {
                Some(TcpEvent::Accepted { id, .. }) => return id,
                Some(_) => {}
                None => panic!("no connection accepted"),
            }
        };
        let inbound = accepted(&mut relay);
        let at_server = accepted(&mut server);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        // (the client's writes, each its own segment, read by the relay as one run; bytes
        // spliced at a time: everything, or a few)
        let runs: [(&[usize], usize); 9] = [
            (&[1], usize::MAX),
            (&[3, 5], usize::MAX),
            (&[1_000], usize::MAX),
            (&[1_441], usize::MAX),
            (&[7], 2),
            (&[1_460], usize::MAX),
            (&[2_920], usize::MAX),
            (&[5, 2, 9], usize::MAX),
            (&[2, 1, 4], usize::MAX),
        ];
        for (k, &(writes, step)) in runs.iter().enumerate() {
            let len: usize = writes.iter().sum();
            for (w, &n) in writes.iter().enumerate() {
                let part: Vec<u8> = (0..n).map(|i| (i * 31 + k * 7 + w) as u8).collect();
                assert_eq!(client.send(now, c, &part).unwrap(), n);
                sent.extend_from_slice(&part);
            }
            settle(&mut [&mut client, &mut relay, &mut server], now);
            while relay.recv_queue(inbound) > 0 {
                let before = relay.recv_queue(inbound);
                // Nothing of this run read before, all of it moved now.
                let whole = step >= before && before == len;
                assert!(relay.splice(now, inbound, out, step).unwrap() > 0);
                if whole {
                    // The run is recorded with its sum where it lies in the send buffer
                    // (segments that carry exactly it go out under that sum).
                    let t = relay.tcb(out).unwrap();
                    let unacked = t.snd_buf.len();
                    assert_eq!(
                        (t.snd_run.off as usize, t.snd_run.len as usize),
                        (unacked - before, before),
                        "run {k}"
                    );
                }
                settle(&mut [&mut client, &mut relay, &mut server], now);
            }
            let n = server.recv_queue(at_server);
            server.recv(now, at_server, &mut got, n).unwrap();
        }
        assert_eq!(got, sent);
    }

    /// The three hosts of `relay_run` and what their applications saw.
    struct RelayHosts {
        client: ScriptedStack,
        relay: ScriptedStack,
        server: ScriptedStack,
        bind: bool,
        /// Every packet any host sent, in order.
        all: Vec<Vec<u8>>,
        /// The relay host's connection to the server, and the client's connection to it.
        out: ConnId,
        inbound: Option<ConnId>,
        at_server: Option<ConnId>,
        fin_fwd: [bool; 2],
        /// Every packet the relay host sent, in order.
        log: Vec<Vec<u8>>,
        readable: usize,
        got_c: Vec<u8>,
        got_s: Vec<u8>,
    }

    impl RelayHosts {
        /// Delivers packets until none is left; after each, the applications answer their
        /// events. The relay's answers every event as the proxy's `pump_both` does:
        /// everything spliced both ways, half-closes forwarded once all was relayed.
        fn settle(&mut self, now: Instant) {
            loop {
                let mut moved = Vec::new();
                while let Some(p) = self.client.poll_transmit() {
                    moved.push(p);
                }
                while let Some(p) = self.relay.poll_transmit() {
                    self.log.push(p.clone());
                    moved.push(p);
                }
                while let Some(p) = self.server.poll_transmit() {
                    moved.push(p);
                }
                if moved.is_empty() {
                    return;
                }
                self.all.extend(moved.iter().cloned());
                for p in moved {
                    let dst = Packet::parse(&p, true).expect("checks out").dst();
                    let host = if self.relay.addrs.contains(&dst) {
                        &mut self.relay
                    } else if self.client.addrs.contains(&dst) {
                        &mut self.client
                    } else {
                        &mut self.server
                    };
                    host.handle_packet(now, &p).expect("accepted");
                    self.answer(now);
                }
            }
        }

        fn answer(&mut self, now: Instant) {
            while let Some(e) = self.client.poll_event() {
                if let TcpEvent::Readable { id } = e {
                    let n = self.client.recv_queue(id);
                    self.client.recv(now, id, &mut self.got_c, n).unwrap();
                }
            }
            while let Some(e) = self.server.poll_event() {
                match e {
                    TcpEvent::Accepted { id, .. } => self.at_server = Some(id),
                    TcpEvent::Readable { id } => {
                        let n = self.server.recv_queue(id);
                        self.server.recv(now, id, &mut self.got_s, n).unwrap();
                    }
                    _ => {}
                }
            }
            while let Some(e) = self.relay.poll_event() {
                match e {
                    TcpEvent::Accepted { id, .. } => {
                        self.inbound = Some(id);
                        if self.bind {
                            assert!(self.relay.relay(self.out, id));
                            assert!(self.relay.relay(id, self.out));
                        }
                    }
                    TcpEvent::Readable { .. } => self.readable += 1,
                    _ => {}
                }
                let Some(i) = self.inbound else { continue };
                for (k, (from, to)) in [(i, self.out), (self.out, i)].into_iter().enumerate() {
                    while self.relay.recv_queue(from) > 0
                        && self.relay.splice(now, from, to, usize::MAX).unwrap() > 0
                    {
                    }
                    if self.relay.peer_closed(from)
                        && self.relay.recv_queue(from) == 0
                        && !self.fin_fwd[k]
                    {
                        self.fin_fwd[k] = true;
                        let _ = self.relay.close(now, to);
                    }
                }
            }
        }
    }

    /// What `relay_sends_what_the_applications_splices_send` runs once per mode: a client
    /// (IPv4), a relay host and a server (IPv6), the connections bound with
    /// `TcpStack::relay` when `bind`; requests, responses of several sizes (a burst of full
    /// segments, small writes, more than a window), delayed ACKs that fire, both closes.
    fn relay_run(bind: bool, predict: bool) -> RelayHosts {
        let (client, relay, server, c, out, mut now) = relay_trio(predict);
        let mut h = RelayHosts {
            client,
            relay,
            server,
            bind,
            all: Vec::new(),
            out,
            inbound: None,
            at_server: None,
            fin_fwd: [false; 2],
            log: Vec::new(),
            readable: 0,
            got_c: Vec::new(),
            got_s: Vec::new(),
        };
        h.settle(now);
        let at_server = h.at_server.expect("accepted");
        let script: [(bool, usize); 7] = [
            (true, 100),
            (false, 10_000),
            (false, 5),
            (false, 1_500),
            (true, 2_000),
            (false, 70_000),
            (false, 1),
        ];
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        for (k, &(from_client, n)) in script.iter().enumerate() {
            let mut bytes: Vec<u8> = (0..n).map(|i| (i * 7 + k) as u8).collect();
            while !bytes.is_empty() {
                let took = if from_client {
                    h.client.send(now, c, &bytes).unwrap()
                } else {
                    h.server.send(now, at_server, &bytes).unwrap()
                };
                let sent = if from_client {
                    &mut to_server
                } else {
                    &mut to_client
                };
                sent.extend(bytes.drain(..took));
                h.settle(now);
                now += Duration::from_millis(50);
                for host in [&mut h.client, &mut h.relay, &mut h.server] {
                    host.handle_timeout(now);
                }
                h.answer(now);
                h.settle(now);
            }
        }
        h.server.close(now, at_server).unwrap();
        h.settle(now);
        h.client.close(now, c).unwrap();
        h.settle(now);
        assert_eq!(h.got_s, to_server, "every byte relayed to the server");
        assert_eq!(h.got_c, to_client, "every byte relayed to the client");
        h
    }

    /// A stack bound to relay (`TcpStack::relay`) sends exactly the packets the
    /// application's splices send without the binding (same bytes, same order), and does
    /// the work itself: its application sees fewer `Readable` events.
    #[test]
    fn relay_sends_what_the_applications_splices_send() {
        let spliced = relay_run(false, true);
        let relayed = relay_run(true, true);
        assert_eq!(spliced.log.len(), relayed.log.len(), "as many packets");
        for (k, (a, b)) in spliced.log.iter().zip(&relayed.log).enumerate() {
            assert_eq!(a, b, "packet {k} of the relay host");
        }
        assert!(
            relayed.readable < spliced.readable / 2,
            "the stack relayed most segments itself: {} Readable events against {}",
            relayed.readable,
            spliced.readable
        );
    }

    /// Header prediction (`header_prediction`) changes no packet: the same exchanges, with
    /// and without it, send the same packets from every host, and it takes most segments.
    #[test]
    fn header_prediction_changes_no_packet() {
        for bind in [false, true] {
            let general = relay_run(bind, false);
            let predicted = relay_run(bind, true);
            assert_eq!(general.all.len(), predicted.all.len(), "as many packets");
            for (k, (a, b)) in general.all.iter().zip(&predicted.all).enumerate() {
                assert_eq!(a, b, "packet {k}");
            }
            let taken = [&predicted.client, &predicted.relay, &predicted.server]
                .iter()
                .map(|h| h.predicted)
                .sum::<usize>();
            assert_eq!(general.relay.predicted, 0);
            assert!(
                taken * 2 > predicted.all.len(),
                "{taken} of {} segments predicted",
                predicted.all.len()
            );
        }
    }

    /// Two hosts with a connection from `a` to `b` established (`b` has not taken its
    /// `Accepted` event): the hosts, `a`'s handle, the two ends, the time.
    fn connected_pair() -> (
        ScriptedStack,
        ScriptedStack,
        ConnId,
        (SocketAddr, SocketAddr),
        Instant,
    ) {
        let cfg = ScriptedConfig::default();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (a_addr, b_addr) = (sa("192.0.2.1:40000"), sa("192.0.2.2:80"));
        let mut a = ScriptedStack::new(cfg.clone());
        let mut b = ScriptedStack::new(cfg);
        a.add_address(a_addr.ip());
        b.add_address(b_addr.ip());
        b.listen(b_addr).unwrap();
        let now = Instant::from_millis(1);
        let c = a.connect(now, a_addr, b_addr).unwrap();
        settle(&mut [&mut a, &mut b], now);
        (a, b, c, (a_addr, b_addr), now)
    }

    /// A segment that header prediction would take, with one payload bit flipped, is
    /// refused as the general path refuses it: a bad TCP checksum, and nothing sent.
    #[test]
    fn a_corrupted_segment_is_refused_with_or_without_prediction() {
        let (mut a, mut b, c, _, now) = connected_pair();
        a.send(now, c, b"hello").unwrap();
        let seg = a.poll_transmit().expect("a data segment");
        let mut bad = seg.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        for predict in [true, false] {
            b.predict = predict;
            let before = b.predicted;
            assert!(matches!(
                b.handle_packet(now, &bad),
                Err(StackError::Wire(
                    tierlab_wire::WireError::BadChecksum { .. }
                ))
            ));
            assert_eq!(b.predicted, before);
            assert!(b.poll_transmit().is_none());
        }
        b.predict = true;
        b.handle_packet(now, &seg).unwrap();
        assert_eq!(b.predicted, 1, "the intact segment is predicted");
    }

    /// Stale timer entries (here: of 1,500 aborted connection attempts) are dropped in one
    /// pass once they far outnumber the connections, and a live deadline still fires on
    /// time: the one attempt left retransmits its SYN after the initial RTO, not before.
    #[test]
    fn stale_timers_are_dropped_and_live_ones_still_fire() {
        let mut a = ScriptedStack::new(ScriptedConfig::default());
        let local = "192.0.2.1".parse::<IpAddr>().unwrap();
        a.add_address(local);
        let remote = |port: u16| SocketAddr::new("192.0.2.9".parse().unwrap(), port);
        let t0 = Instant::from_millis(1);
        for port in 0..1_500u16 {
            let id = a
                .connect(t0, SocketAddr::new(local, 10_000 + port), remote(80))
                .unwrap();
            a.abort(t0, id).unwrap();
        }
        let kept = a
            .connect(t0, SocketAddr::new(local, 9_999), remote(80))
            .unwrap();
        while a.poll_transmit().is_some() {}
        assert!(
            a.timers.len() > 1_500,
            "aborted attempts leave their entries"
        );
        a.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(
            a.timers.len(),
            1,
            "only the live attempt's deadline is left"
        );
        assert!(a.poll_transmit().is_none(), "nothing due before the RTO");
        a.handle_timeout(t0 + Duration::from_millis(1_000));
        let syn = a.poll_transmit().expect("the SYN is retransmitted");
        let p = Packet::parse(&syn, true).unwrap();
        let Transport::Tcp(seg) = p.transport else {
            panic!("not TCP")
        };
        assert!(seg.flags.syn() && !seg.flags.ack());
        assert_eq!(
            a.state_of(SocketAddr::new(local, 9_999), remote(80)),
            Some(State::SynSent)
        );
        let _ = kept;
    }

    /// Header prediction takes the closing exchange too: a FIN on an established
    /// connection, the FIN back in CLOSE-WAIT's reply and the last ACK in LAST-ACK; the
    /// handshake's segments take the general path.
    #[test]
    fn header_prediction_takes_fins_and_closing_states() {
        let (mut a, mut b, c, (a_addr, b_addr), now) = connected_pair();
        assert_eq!(
            (a.predicted, b.predicted),
            (0, 0),
            "the handshake is not predicted"
        );
        let accepted = loop {
            match b.poll_event() {
                Some(TcpEvent::Accepted { id, .. }) => break id,
                Some(_) => {}
                None => panic!("no connection accepted"),
            }
        };
        a.close(now, c).unwrap();
        settle(&mut [&mut a, &mut b], now);
        assert_eq!(b.state_of(b_addr, a_addr), Some(State::CloseWait));
        assert_eq!(b.predicted, 1, "the FIN");
        b.close(now, accepted).unwrap();
        settle(&mut [&mut a, &mut b], now);
        assert_eq!(a.state_of(a_addr, b_addr), Some(State::TimeWait));
        assert_eq!(b.state_of(b_addr, a_addr), None, "LAST-ACK ended");
        // A: the ACK of its FIN (FIN-WAIT-1), then B's FIN (FIN-WAIT-2); B: the last ACK.
        assert_eq!((a.predicted, b.predicted), (2, 2));
    }
}
