//! Real TCP: smoltcp 0.13 sockets behind the [`TcpStack`] interface.
//!
//! One smoltcp [`Interface`] (`Medium::Ip`) per local address (smoltcp holds at most two
//! addresses per interface), an in-memory [`Device`] that hands smoltcp exactly the packet
//! being delivered and collects what it sends, and **one [`SocketSet`] per connection**:
//! smoltcp's `poll` walks every socket of the set it is given, so a set of 1,000 sockets costs
//! 445 µs per poll; with one socket per set a poll touches only the connection that has work.
//!
//! Demultiplexing is ours: a segment of a known 4-tuple is polled with that connection's set;
//! a SYN to a listening address gets a fresh listening socket (smoltcp needs one per pending
//! connection); anything else is polled with an empty set, so that **smoltcp itself** answers
//! with a RST (`InterfaceInner::process_tcp` → `tcp::Socket::rst_reply`), or stays silent for a
//! RST. smoltcp's reset agrees with RFC 9293 §3.10.7.1 for every segment that carries an ACK
//! or is a SYN; for a bare non-SYN segment without ACK it sends `<SEQ=0><CTL=RST>` without an
//! ACK, where Linux would acknowledge the segment.
//!
//! smoltcp's own clock is derived from the virtual time (microseconds), its randomness
//! (initial sequence numbers) from the configured seed, so runs are deterministic.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use foldhash::fast::FixedState;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};
use tierlab_wire::{Duration, Instant, Packet, TcpSeq, Transport, Verify};

use crate::stack::{CloseCause, ConnId, SlotTimers, StackError, TcpEvent, TcpStack};

/// Parameters of a smoltcp stack.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmolConfig {
    /// Link MTU (smoltcp derives its MSS from it).
    pub mtu: u16,
    /// Receive buffer of each socket, bytes.
    pub rx_buf: usize,
    /// Send buffer of each socket, bytes.
    pub tx_buf: usize,
    /// Seed of smoltcp's generator (initial sequence numbers).
    pub seed: u64,
    /// Delayed-ACK time (smoltcp's default is 10 ms; Linux's minimum 40 ms).
    pub ack_delay: Duration,
    /// How long a connection attempt may go unanswered (Linux with `tcp_syn_retries=6`:
    /// 1+2+4+8+16+32+64 = 127 s).
    pub connect_timeout: Duration,
    /// How long an established connection with unacknowledged data may go without hearing
    /// from the peer (Linux with `tcp_retries2=15` and a 200 ms RTO: about 924.6 s).
    pub data_timeout: Duration,
}

impl Default for SmolConfig {
    fn default() -> Self {
        Self {
            mtu: 1500,
            rx_buf: 65_535,
            tx_buf: 65_536,
            seed: 0x736d_6f6c,
            ack_delay: Duration::from_millis(40),
            connect_timeout: Duration::from_secs(127),
            data_timeout: Duration::from_millis(924_600),
        }
    }
}

/// The in-memory device: at most one packet to receive, a queue of sent packets.
struct MemDevice<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut VecDeque<Vec<u8>>,
    mtu: usize,
}

struct MemRx<'a>(&'a [u8]);
struct MemTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for MemRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for MemTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for MemDevice<'_> {
    type RxToken<'b>
        = MemRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = MemTx<'b>
    where
        Self: 'b;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.take()?;
        Some((MemRx(p), MemTx(self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(MemTx(self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// Most closed sockets kept for reuse.
const SPARE_SOCKETS: usize = 1024;

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((now.as_nanos() / 1000) as i64)
}

fn smol_dur(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_nanos() / 1000)
}

struct SmolConn {
    set: SocketSet<'static>,
    handle: SocketHandle,
    iface: usize,
    local: SocketAddr,
    remote: SocketAddr,
    last_state: tcp::State,
    recv_seen: usize,
    send_seen: usize,
    sched: u64,
    passive: bool,
    announced: bool,
    peer_fin_reported: bool,
    released: bool,
    want_write: bool,
    aborted: bool,
    mapped: bool,
    /// The path MTU learnt from an ICMP error, and the interface of that MTU this connection is
    /// polled with from then on (smoltcp takes its MSS from the interface's MTU).
    pmtu: Option<(u16, Box<Interface>)>,
}

/// Why a connection was polled (to tell a reset from a timeout when it closes).
#[derive(Clone, Copy, Eq, PartialEq)]
enum Cause {
    Packet { rst: bool },
    Timer,
    App,
}

/// A host's TCP made of smoltcp sockets (see the module documentation).
pub struct SmolStack {
    cfg: SmolConfig,
    ifaces: Vec<(IpAddr, Interface)>,
    listeners: Vec<SocketAddr>,
    conns: Vec<Option<SmolConn>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    map: HashMap<(SocketAddr, SocketAddr), u32, FixedState>,
    timers: SlotTimers,
    empty: SocketSet<'static>,
    spare: Vec<(SocketSet<'static>, SocketHandle)>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<TcpEvent>,
    /// The relay's buffer ([`TcpStack::splice`]), kept between calls.
    relay: Vec<u8>,
}

impl core::fmt::Debug for SmolStack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmolStack")
            .field(
                "addresses",
                &self.ifaces.iter().map(|i| i.0).collect::<Vec<_>>(),
            )
            .field("connections", &self.map.len())
            .finish()
    }
}

impl SmolStack {
    /// An empty stack (no address, no listener).
    pub fn new(cfg: SmolConfig) -> Self {
        Self {
            cfg,
            ifaces: Vec::new(),
            listeners: Vec::new(),
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            map: HashMap::default(),
            timers: SlotTimers::default(),
            empty: SocketSet::new(Vec::new()),
            spare: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            relay: Vec::new(),
        }
    }

    fn iface_of(&self, addr: IpAddr) -> Option<usize> {
        self.ifaces.iter().position(|(a, _)| *a == addr)
    }

    fn conn(&self, id: ConnId) -> Option<&SmolConn> {
        let c = self.conns.get(id.slot as usize)?.as_ref()?;
        (self.generations[id.slot as usize] == id.generation && !c.released).then_some(c)
    }

    /// Like `conn`, but also a connection already announced closed that waits in TIME-WAIT
    /// (its last bytes can still be read).
    fn conn_read(&self, id: ConnId) -> Option<&SmolConn> {
        let c = self.conns.get(id.slot as usize)?.as_ref()?;
        (self.generations[id.slot as usize] == id.generation
            && (!c.released || c.last_state == tcp::State::TimeWait))
            .then_some(c)
    }

    fn slot_of(&self, id: ConnId) -> Result<u32, StackError> {
        self.conn(id)
            .map(|_| id.slot)
            .ok_or(StackError::UnknownConn(id))
    }

    /// A closed socket in its own set: a recycled one (its buffers are reused, which spares
    /// zeroing 128 KiB per connection) or a new one.
    fn new_socket(&mut self) -> (SocketSet<'static>, SocketHandle) {
        let (mut set, handle) = self.spare.pop().unwrap_or_else(|| {
            let rx = tcp::SocketBuffer::new(vec![0; self.cfg.rx_buf]);
            let tx = tcp::SocketBuffer::new(vec![0; self.cfg.tx_buf]);
            let mut s = tcp::Socket::new(rx, tx);
            s.set_nagle_enabled(false);
            s.set_ack_delay(Some(smol_dur(self.cfg.ack_delay)));
            let mut set = SocketSet::new(Vec::with_capacity(1));
            let handle = set.add(s);
            (set, handle)
        });
        set.get_mut::<tcp::Socket>(handle)
            .set_timeout(Some(smol_dur(self.cfg.connect_timeout)));
        (set, handle)
    }

    fn alloc(&mut self, c: SmolConn) -> u32 {
        if let Some(s) = self.free.pop() {
            self.conns[s as usize] = Some(c);
            s
        } else {
            self.conns.push(Some(c));
            self.generations.push(0);
            (self.conns.len() - 1) as u32
        }
    }

    fn release(&mut self, slot: u32) {
        if let Some(mut c) = self.conns[slot as usize].take() {
            if c.mapped {
                self.map.remove(&(c.local, c.remote));
            }
            let s = c.set.get_mut::<tcp::Socket>(c.handle);
            if s.state() == tcp::State::Closed && self.spare.len() < SPARE_SOCKETS {
                self.spare.push((c.set, c.handle));
            }
            let g = &mut self.generations[slot as usize];
            *g = g.wrapping_add(1);
            self.free.push(slot);
        }
    }

    /// Polls one connection's socket set, optionally with one incoming packet, then turns the
    /// socket's new state into events and reschedules its timer.
    fn poll_conn(&mut self, now: Instant, slot: u32, packet: Option<&[u8]>, cause: Cause) {
        let mtu = usize::from(self.cfg.mtu);
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let (iface, mtu) = match &mut c.pmtu {
            Some((m, own)) => (own.as_mut(), usize::from(*m)),
            None => (&mut self.ifaces[c.iface].1, mtu),
        };
        let mut dev = MemDevice {
            rx: packet,
            tx: &mut self.out,
            mtu,
        };
        iface.poll(smol_now(now), &mut dev, &mut c.set);
        let at = iface.poll_at(smol_now(now), &c.set);
        self.after_poll(now, slot, cause, at);
    }

    fn after_poll(
        &mut self,
        now: Instant,
        slot: u32,
        cause: Cause,
        at: Option<smoltcp::time::Instant>,
    ) {
        let id = ConnId {
            slot,
            generation: self.generations[slot as usize],
        };
        let data_timeout = smol_dur(self.cfg.data_timeout);
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        let state = s.state();
        if !c.mapped
            && let Some(remote) = s.remote_endpoint()
        {
            c.remote = SocketAddr::new(remote.addr.into(), remote.port);
            c.mapped = true;
            self.map.insert((c.local, c.remote), slot);
        }
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        if c.passive && !c.announced && matches!(state, tcp::State::Listen | tcp::State::Closed) {
            // The handshake failed (RST or timeout in SYN-RECEIVED): never announced.
            self.release(slot);
            return;
        }
        let synchronized = !matches!(
            state,
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed
        );
        if synchronized && !c.announced && !c.released {
            c.announced = true;
            s.set_timeout(Some(data_timeout));
            self.events.push_back(if c.passive {
                TcpEvent::Accepted {
                    id,
                    local: c.local,
                    remote: c.remote,
                }
            } else {
                TcpEvent::Connected { id }
            });
        }
        if !c.released {
            let rq = s.recv_queue();
            if rq > c.recv_seen {
                self.events.push_back(TcpEvent::Readable { id });
            }
            c.recv_seen = rq;
            let sq = s.send_queue();
            if c.want_write && sq < c.send_seen {
                c.want_write = false;
                self.events.push_back(TcpEvent::Writable { id });
            }
            c.send_seen = sq;
            if c.announced
                && !c.peer_fin_reported
                && matches!(
                    state,
                    tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::Closing
                        | tcp::State::TimeWait
                )
            {
                c.peer_fin_reported = true;
                self.events.push_back(TcpEvent::PeerClosed { id });
            }
        }
        let closed = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
        if closed && !c.released {
            c.released = true;
            let cause = if c.aborted {
                CloseCause::Aborted
            } else if state == tcp::State::TimeWait || c.last_state == tcp::State::LastAck {
                CloseCause::Normal
            } else {
                match cause {
                    Cause::Packet { rst: true } => CloseCause::Reset,
                    Cause::Timer => CloseCause::TimedOut,
                    _ => CloseCause::Reset,
                }
            };
            if c.announced || !c.passive {
                self.events.push_back(TcpEvent::Closed { id, cause });
            }
        }
        c.last_state = state;
        if state == tcp::State::Closed {
            self.release(slot);
            return;
        }
        let n = now.as_nanos();
        let next = at.map(|t| ((t.total_micros().max(0) as u64) * 1000).max(n + 1000));
        if let Some(next) = next
            && next != c.sched
        {
            c.sched = next;
            self.timers.push(next, slot, id.generation);
        }
    }
}

impl TcpStack for SmolStack {
    fn add_address(&mut self, addr: IpAddr) {
        if self.iface_of(addr).is_some() {
            return;
        }
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = self.cfg.seed ^ (self.ifaces.len() as u64).wrapping_mul(0x9e37_79b9);
        let mut out = VecDeque::new();
        let mut dev = MemDevice {
            rx: None,
            tx: &mut out,
            mtu: usize::from(self.cfg.mtu),
        };
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            // Prefix length 0: every destination is on-link for Medium::Ip (no route needed).
            let _ = a.push(IpCidr::new(addr.into(), 0));
        });
        self.ifaces.push((addr, iface));
    }

    fn listen(&mut self, local: SocketAddr) -> Result<(), StackError> {
        if self.iface_of(local.ip()).is_none() {
            return Err(StackError::NotLocal(local.ip()));
        }
        if !self.listeners.contains(&local) {
            self.listeners.push(local);
        }
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
        let iface = self
            .iface_of(local.ip())
            .ok_or_else(|| StackError::NotLocal(local.ip()))?;
        if self.map.contains_key(&(local, remote)) {
            return Err(StackError::AddrInUse { local, remote });
        }
        let (mut set, handle) = self.new_socket();
        if set
            .get_mut::<tcp::Socket>(handle)
            .connect(self.ifaces[iface].1.context(), remote, local)
            .is_err()
        {
            self.spare.push((set, handle));
            return Err(StackError::Smoltcp("connect refused"));
        }
        let slot = self.alloc(SmolConn {
            set,
            handle,
            iface,
            local,
            remote,
            last_state: tcp::State::SynSent,
            recv_seen: 0,
            send_seen: 0,
            sched: u64::MAX,
            passive: false,
            announced: false,
            peer_fin_reported: false,
            released: false,
            want_write: false,
            aborted: false,
            mapped: true,
            pmtu: None,
        });
        self.map.insert((local, remote), slot);
        let id = ConnId {
            slot,
            generation: self.generations[slot as usize],
        };
        self.poll_conn(now, slot, None, Cause::App);
        Ok(id)
    }

    fn send(&mut self, now: Instant, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        let slot = self.slot_of(id)?;
        let c = self.conns[slot as usize].as_mut().expect("checked");
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        if !s.may_send() && s.state() != tcp::State::SynSent {
            return Err(StackError::InvalidState { id, what: "send" });
        }
        let n = s.send_slice(data).unwrap_or(0);
        if n < data.len() || s.send_queue() >= s.send_capacity() {
            c.want_write = true;
        }
        c.send_seen = s.send_queue();
        self.poll_conn(now, slot, None, Cause::App);
        Ok(n)
    }

    fn recv(
        &mut self,
        now: Instant,
        id: ConnId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, StackError> {
        let slot = self
            .conn_read(id)
            .map(|_| id.slot)
            .ok_or(StackError::UnknownConn(id))?;
        let c = self.conns[slot as usize].as_mut().expect("checked");
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        let mut total = 0;
        while total < max && s.can_recv() {
            let got = s.recv(|b| {
                let n = b.len().min(max - total);
                out.extend_from_slice(&b[..n]);
                (n, n)
            });
            match got {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        c.recv_seen = s.recv_queue();
        if total > 0 {
            self.poll_conn(now, slot, None, Cause::App);
        }
        Ok(total)
    }

    fn splice(
        &mut self,
        now: Instant,
        from: ConnId,
        to: ConnId,
        max: usize,
    ) -> Result<usize, StackError> {
        // smoltcp lends one socket at a time: through a buffer the stack keeps.
        let mut buf = std::mem::take(&mut self.relay);
        let moved = crate::stack::splice_through(self, &mut buf, now, from, to, max);
        self.relay = buf;
        moved
    }

    fn recv_queue(&self, id: ConnId) -> usize {
        self.conn_read(id)
            .map_or(0, |c| c.set.get::<tcp::Socket>(c.handle).recv_queue())
    }

    fn send_room(&self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| {
            let s = c.set.get::<tcp::Socket>(c.handle);
            if s.may_send() || s.state() == tcp::State::SynSent {
                s.send_capacity() - s.send_queue()
            } else {
                0
            }
        })
    }

    fn peer_closed(&self, id: ConnId) -> bool {
        self.conn_read(id).is_some_and(|c| c.peer_fin_reported)
    }

    fn close(&mut self, now: Instant, id: ConnId) -> Result<(), StackError> {
        let slot = self.slot_of(id)?;
        let c = self.conns[slot as usize].as_mut().expect("checked");
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        if s.state() == tcp::State::SynSent {
            c.aborted = true;
        }
        s.close();
        self.poll_conn(now, slot, None, Cause::App);
        Ok(())
    }

    fn abort(&mut self, now: Instant, id: ConnId) -> Result<(), StackError> {
        let slot = self.slot_of(id)?;
        let c = self.conns[slot as usize].as_mut().expect("checked");
        c.aborted = true;
        c.set.get_mut::<tcp::Socket>(c.handle).abort();
        self.poll_conn(now, slot, None, Cause::App);
        Ok(())
    }

    fn knows(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        self.map.contains_key(&(local, remote))
    }

    /// smoltcp 0.13 does not take ICMP for TCP and shows no sequence numbers: a connection
    /// still in SYN-SENT is dropped here, silently as Linux's `tcp_done` (its socket is not
    /// polled again, so it sends no RST). The quoted sequence number cannot be checked; in
    /// SYN-SENT the only segment sent is the SYN, so only a stale or forged quote would fail
    /// Linux's check.
    fn icmp_unreachable(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        seq: TcpSeq,
    ) -> bool {
        let _ = (now, seq);
        let Some(&slot) = self.map.get(&(local, remote)) else {
            return false;
        };
        let id = ConnId {
            slot,
            generation: self.generations[slot as usize],
        };
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return false;
        };
        let s = c.set.get_mut::<tcp::Socket>(c.handle);
        if s.state() == tcp::State::SynSent && !c.released {
            c.released = true;
            if c.announced || !c.passive {
                self.events.push_back(TcpEvent::Closed {
                    id,
                    cause: CloseCause::Unreachable,
                });
            }
            self.release(slot);
        }
        true
    }

    /// smoltcp 0.13 has no path-MTU cache: its TCP sockets size segments by the interface's
    /// MTU. A connection whose path MTU drops gets an interface of its own with that MTU
    /// (same address; smoltcp keeps the connection's state in the socket), clamped as Linux
    /// clamps it (`ip_rt_min_pmtu` 552 for IPv4, 1280 for IPv6). smoltcp offers no way to mark
    /// segments lost, so what was in flight is resent, smaller, by its retransmission timer
    /// (not at once as Linux's `tcp_simple_retransmit` does).
    fn lower_path_mtu(&mut self, local: SocketAddr, remote: SocketAddr, mtu: u16) -> bool {
        let Some(&slot) = self.map.get(&(local, remote)) else {
            return false;
        };
        let floor = if local.is_ipv4() { 552 } else { 1280 };
        let mtu = mtu.max(floor);
        let seed = self.cfg.seed;
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return true;
        };
        let current = c.pmtu.as_ref().map_or(self.cfg.mtu, |(m, _)| *m);
        if mtu < current {
            let mut cfg = Config::new(HardwareAddress::Ip);
            cfg.random_seed = seed ^ u64::from(slot).rotate_left(32);
            let mut out = VecDeque::new();
            let mut dev = MemDevice {
                rx: None,
                tx: &mut out,
                mtu: usize::from(mtu),
            };
            let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(local.ip().into(), 0));
            });
            c.pmtu = Some((mtu, Box::new(iface)));
        }
        true
    }

    fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), StackError> {
        let p = Packet::parse_with(packet, Verify::IpHeader)?;
        let Transport::Tcp(seg) = p.transport else {
            return Err(StackError::NotTcp(p.proto().into()));
        };
        let local = SocketAddr::new(p.dst(), seg.dport);
        let remote = SocketAddr::new(p.src(), seg.sport);
        let bytes = &packet[..p.len];
        let cause = Cause::Packet {
            rst: seg.flags.rst(),
        };
        // A known connection's local address is one of the host's: the interface list
        // (hundreds on the clients' host) is searched only for segments of no connection.
        if let Some(&slot) = self.map.get(&(local, remote)) {
            self.poll_conn(now, slot, Some(bytes), cause);
            return Ok(());
        }
        let iface = self
            .iface_of(p.dst())
            .ok_or_else(|| StackError::NotLocal(p.dst()))?;
        if seg.flags.syn()
            && !seg.flags.ack()
            && !seg.flags.rst()
            && self.listeners.contains(&local)
        {
            let (mut set, handle) = self.new_socket();
            if set
                .get_mut::<tcp::Socket>(handle)
                .listen(IpListenEndpoint {
                    addr: Some(local.ip().into()),
                    port: local.port(),
                })
                .is_err()
            {
                self.spare.push((set, handle));
                return Err(StackError::Smoltcp("listen refused"));
            }
            let slot = self.alloc(SmolConn {
                set,
                handle,
                iface,
                local,
                remote,
                last_state: tcp::State::Listen,
                recv_seen: 0,
                send_seen: 0,
                sched: u64::MAX,
                passive: true,
                announced: false,
                peer_fin_reported: false,
                released: false,
                want_write: false,
                aborted: false,
                mapped: false,
                pmtu: None,
            });
            self.poll_conn(now, slot, Some(bytes), cause);
            return Ok(());
        }
        // Nobody knows this segment: smoltcp answers it (a RST, unless it is one).
        let before = self.out.len();
        let mut dev = MemDevice {
            rx: Some(bytes),
            tx: &mut self.out,
            mtu: usize::from(self.cfg.mtu),
        };
        self.ifaces[iface]
            .1
            .poll(smol_now(now), &mut dev, &mut self.empty);
        if self.out.len() > before {
            self.events.push_back(TcpEvent::ResetSent { local, remote });
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, slot, gen_)) = self.timers.pop_due(now) {
            if self.generations[slot as usize] != gen_ {
                continue;
            }
            let Some(c) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            if c.sched != at {
                continue;
            }
            c.sched = u64::MAX;
            self.poll_conn(now, slot, None, Cause::Timer);
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
        self.conns.iter().flatten().count()
    }

    fn memory_bytes(&self) -> usize {
        let per = size_of::<Option<SmolConn>>()
            + size_of::<SocketStorage<'static>>()
            + self.cfg.rx_buf
            + self.cfg.tx_buf
            + 4;
        let live = self.conns.iter().flatten().count() + self.spare.len();
        let map = self.map.capacity() * (size_of::<((SocketAddr, SocketAddr), u32)>() + 1) * 8 / 7;
        live * per + (self.conns.capacity() - live) * size_of::<Option<SmolConn>>() + map
    }
}
