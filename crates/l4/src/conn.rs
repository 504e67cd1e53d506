//! The director's connection table: IPVS entries, TCP states, timeouts on virtual time.
//!
//! Mirrors net/netfilter/ipvs/ip_vs_conn.c and ip_vs_proto_tcp.c (Linux v6.x):
//! - An entry is keyed by protocol, client address and port, virtual address and port
//!   (`ip_vs_conn_in_get`). It points at one destination for its whole life.
//! - Its timer is re-armed to `now + timeout(state)` each time a packet is processed on it
//!   (`ip_vs_conn_put` → `__ip_vs_conn_put_timer`), and not when a packet is dropped for an
//!   unavailable destination (`__ip_vs_conn_put`, no timer).
//! - TCP states follow `tcp_states[]` in the INPUT-ONLY direction: in TUN mode every entry has
//!   `IP_VS_CONN_F_NOOUTPUT` (the replies go straight from the real server to the client), so
//!   `set_tcp_state` always uses the `TCP_DIR_INPUT_ONLY` rows. Timeouts are `tcp_timeouts[]`;
//!   UDP entries live `udp_timeouts[IP_VS_UDP_S_NORMAL]` = 300 s.
//!
//! The table is a hash map from [`ConnKey`] to a slot of a slab, with a lazy timer heap: a
//! refresh only stores the new deadline; the heap holds, per entry, one deadline no later than
//! its real one. [`ConnTable::next_timer`] may therefore be early (never late); an early wake-up
//! re-arms and expires nothing. The map is only looked up, never iterated, so its hasher
//! (foldhash with a fixed seed) cannot leak into any output.

use core::cmp::Reverse;
use core::hash::BuildHasher;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tierlab_wire::{Duration, FlowKey, Instant, IpProto};

use crate::service::DestId;

/// A service of a director (index newtype).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct ServiceId(pub u32);

/// The lookup key of an entry: protocol, client address/port, virtual address/port. 40 bytes,
/// `Copy`; IPv4 addresses are stored as their IPv4-mapped form with a family flag.
#[derive(Clone, Copy, Debug, Eq, Ord, PartialEq, PartialOrd)]
pub struct ConnKey {
    caddr: u128,
    vaddr: u128,
    cport: u16,
    vport: u16,
    proto: u8,
    v6: bool,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl core::hash::Hash for ConnKey {
    /// Three writes (two addresses, then ports, protocol and family packed in one word) keep
    /// the hash cheap.
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(self.caddr);
        h.write_u128(self.vaddr);
        h.write_u64(
            u64::from(self.cport)
                | u64::from(self.vport) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.v6) << 40,
        );
    }
}

/// Key → (slot, generation), split by family: an IPv4 key packs into two `u64` (a 24-byte
/// bucket instead of 48), which halves the memory a lookup among a million entries touches.
#[derive(Clone, Debug, Default)]
struct KeyMap {
    v4: HashMap<(u64, u64), (u32, u32), KeyHasher>,
    v6: HashMap<ConnKey, (u32, u32), KeyHasher>,
}

impl KeyMap {
    fn with_capacity(n: usize) -> Self {
        Self {
            v4: HashMap::with_capacity_and_hasher(n, KeyHasher),
            v6: HashMap::default(),
        }
    }

    /// An IPv4 key as two words: (client, VIP) and (ports, protocol).
    #[inline]
    fn pack_v4(k: &ConnKey) -> (u64, u64) {
        (
            ((k.caddr as u64) & 0xffff_ffff) << 32 | (k.vaddr as u64) & 0xffff_ffff,
            u64::from(k.cport) << 48 | u64::from(k.vport) << 32 | u64::from(k.proto),
        )
    }

    #[inline]
    fn get(&self, k: &ConnKey) -> Option<(u32, u32)> {
        if k.v6 {
            self.v6.get(k).copied()
        } else {
            self.v4.get(&Self::pack_v4(k)).copied()
        }
    }

    fn insert(&mut self, k: ConnKey, v: (u32, u32)) {
        if k.v6 {
            self.v6.insert(k, v);
        } else {
            self.v4.insert(Self::pack_v4(&k), v);
        }
    }

    fn remove(&mut self, k: &ConnKey) {
        if k.v6 {
            self.v6.remove(k);
        } else {
            self.v4.remove(&Self::pack_v4(k));
        }
    }

    fn reserve(&mut self, n: usize) {
        self.v4.reserve(n);
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl ConnKey {
    /// The key of a packet going from the client to the VIP.
    pub fn from_flow(flow: &FlowKey) -> Self {
        Self {
            caddr: addr_bits(flow.src()),
            vaddr: addr_bits(flow.dst()),
            cport: flow.sport(),
            vport: flow.dport(),
            proto: flow.proto().number(),
            v6: !flow.is_ipv4(),
        }
    }

    /// The key of the entry an ICMP error is about: the error quotes a packet the real server
    /// sent from the VIP to the client, so the client is the quote's destination
    /// (`ip_vs_in_icmp`, "the embedded headers contain source and dest in reverse order").
    pub fn from_quoted(quoted: &FlowKey) -> Self {
        Self::from_flow(&quoted.reversed())
    }

    /// The IP protocol.
    pub const fn proto(&self) -> u8 {
        self.proto
    }
}

/// The TCP states of an IPVS entry (`IP_VS_TCP_S_*`, include/uapi/linux/ip_vs.h order).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum TcpState {
    /// `NONE`: just created.
    None,
    /// `ESTABLISHED`.
    Established,
    /// `SYN_SENT`.
    SynSent,
    /// `SYN_RECV`.
    SynRecv,
    /// `FIN_WAIT`.
    FinWait,
    /// `TIME_WAIT`.
    TimeWait,
    /// `CLOSE`.
    Close,
    /// `CLOSE_WAIT`.
    CloseWait,
    /// `LAST_ACK`.
    LastAck,
    /// `LISTEN`.
    Listen,
    /// `SYNACK`.
    SynAck,
}

impl TcpState {
    /// The kernel's name of the state (`tcp_state_name_table`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::SynAck => "SYNACK",
        }
    }

    /// ip_vs_proto_tcp.c `set_tcp_state` with the `TCP_DIR_INPUT_ONLY` rows of `tcp_states[]`
    /// (Linux v6.x; not the `secure_tcp` table), for a segment with `flags`. The row is chosen
    /// RST first, then SYN, FIN, ACK (`tcp_state_idx`); a segment with none of them moves the
    /// entry to CLOSE.
    pub const fn next_input_only(self, syn: bool, fin: bool, ack: bool, rst: bool) -> Self {
        use TcpState::{
            Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA,
            Listen as LI, SynRecv as SR, SynSent as SS, TimeWait as TW,
        };
        // Columns: sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA.
        const SYN: [TcpState; 11] = [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR];
        const FIN: [TcpState; 11] = [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW];
        const ACK: [TcpState; 11] = [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES];
        const RST: [TcpState; 11] = [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL];
        let col = self as usize;
        if rst {
            RST[col]
        } else if syn {
            SYN[col]
        } else if fin {
            FIN[col]
        } else if ack {
            ACK[col]
        } else {
            CL
        }
    }
}

/// Entry timeouts (`net.ipv4.vs` has no sysctl for them; `ipvsadm --set tcp tcpfin udp`
/// changes ESTABLISHED, FIN_WAIT and UDP).
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Per TCP state, in [`TcpState`] order (`tcp_timeouts[]`).
    pub tcp: [Duration; 11],
    /// UDP (`udp_timeouts[IP_VS_UDP_S_NORMAL]`).
    pub udp: Duration,
}

impl Default for Timeouts {
    /// ip_vs_proto_tcp.c `tcp_timeouts[]` and ip_vs_proto_udp.c `udp_timeouts[]` (Linux v6.x):
    /// NONE 2 s, ESTABLISHED 15 min, SYN_SENT 2 min, SYN_RECV 1 min, FIN_WAIT 2 min,
    /// TIME_WAIT 2 min, CLOSE 10 s, CLOSE_WAIT 1 min, LAST_ACK 30 s, LISTEN 2 min, SYNACK 2 min;
    /// UDP 5 min.
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            tcp: [
                s(2),
                s(15 * 60),
                s(2 * 60),
                s(60),
                s(2 * 60),
                s(2 * 60),
                s(10),
                s(60),
                s(30),
                s(2 * 60),
                s(120),
            ],
            udp: s(5 * 60),
        }
    }
}

/// The protocol state of an entry.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum ConnState {
    /// A TCP entry.
    Tcp(TcpState),
    /// A UDP entry (one state, `NORMAL`).
    Udp,
}

impl ConnState {
    /// The state a new entry starts in.
    pub const fn initial(proto: IpProto) -> Self {
        match proto {
            IpProto::Udp => Self::Udp,
            _ => Self::Tcp(TcpState::None),
        }
    }

    /// Its timeout.
    pub const fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Self::Tcp(s) => t.tcp[s as usize],
            Self::Udp => t.udp,
        }
    }
}

/// A connection entry.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Conn {
    /// Its key.
    pub key: ConnKey,
    /// The service that scheduled it.
    pub service: ServiceId,
    /// Its destination, for its whole life.
    pub dest: DestId,
    /// Protocol state.
    pub state: ConnState,
    /// When it expires unless refreshed.
    pub expires: Instant,
    /// Packets processed on it.
    pub packets: u64,
}

/// A handle on a live entry (slot index and generation; stale handles find nothing).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct ConnHandle {
    slot: u32,
    generation: u32,
}

#[derive(Clone, Debug)]
struct Slot {
    generation: u32,
    /// The deadline of this entry's pending heap item (the latest one pushed).
    armed: Instant,
    conn: Option<Conn>,
}

/// The hasher of the table: foldhash, fixed seed (lookups only; never iterated).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher;

impl BuildHasher for KeyHasher {
    type Hasher = <foldhash::fast::FixedState as BuildHasher>::Hasher;
    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FixedState::with_seed(0x7469_6572_6c61_6234).build_hasher()
    }
}

/// The connection table of one director.
#[derive(Clone, Debug, Default)]
pub struct ConnTable {
    /// Key → (slot, generation): a lookup touches the map only, not the slab.
    map: KeyMap,
    slots: Vec<Slot>,
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl ConnTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            map: KeyMap::with_capacity(n),
            slots: Vec::with_capacity(n),
            free: Vec::new(),
            timers: BinaryHeap::with_capacity(n),
        }
    }

    /// Reserves room for `n` more entries (no reallocation while they are inserted).
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
        self.slots.reserve(n.saturating_sub(self.free.len()));
        self.timers.reserve(n);
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry with `key`, if any (`ip_vs_conn_in_get`).
    #[inline]
    pub fn lookup(&self, key: &ConnKey) -> Option<ConnHandle> {
        let (slot, generation) = self.map.get(key)?;
        Some(ConnHandle { slot, generation })
    }

    /// The entry behind a handle.
    #[inline]
    pub fn get(&self, h: ConnHandle) -> Option<&Conn> {
        let s = self.slots.get(h.slot as usize)?;
        if s.generation == h.generation {
            s.conn.as_ref()
        } else {
            None
        }
    }

    /// The entry behind a handle, mutably. Change `expires` with [`ConnTable::set_expires`].
    #[inline]
    pub fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Conn> {
        let s = self.slots.get_mut(h.slot as usize)?;
        if s.generation == h.generation {
            s.conn.as_mut()
        } else {
            None
        }
    }

    /// Inserts an entry (replacing any with the same key) and arms its timer.
    pub fn insert(&mut self, conn: Conn) -> ConnHandle {
        if let Some(old) = self.lookup(&conn.key) {
            self.remove(old);
        }
        let slot = match self.free.pop() {
            Some(s) => {
                let sl = &mut self.slots[s as usize];
                sl.conn = Some(conn);
                sl.armed = conn.expires;
                s
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    armed: conn.expires,
                    conn: Some(conn),
                });
                self.slots.len() as u32 - 1
            }
        };
        let generation = self.slots[slot as usize].generation;
        self.map.insert(conn.key, (slot, generation));
        self.timers.push(Reverse((conn.expires, slot, generation)));
        ConnHandle { slot, generation }
    }

    /// Removes an entry (`ip_vs_conn_expire_now` followed by its expiry).
    pub fn remove(&mut self, h: ConnHandle) -> Option<Conn> {
        let s = self.slots.get_mut(h.slot as usize)?;
        if s.generation != h.generation {
            return None;
        }
        let conn = s.conn.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.map.remove(&conn.key);
        self.free.push(h.slot);
        Some(conn)
    }

    /// Re-arms an entry's timer to `expires` (later or earlier than before).
    #[inline]
    pub fn set_expires(&mut self, h: ConnHandle, expires: Instant) {
        let Some(s) = self.slots.get_mut(h.slot as usize) else {
            return;
        };
        if s.generation != h.generation {
            return;
        }
        let Some(c) = s.conn.as_mut() else { return };
        c.expires = expires;
        if expires < s.armed {
            s.armed = expires;
            self.timers.push(Reverse((expires, h.slot, h.generation)));
        }
    }

    /// The earliest time at which [`ConnTable::expire`] may have work (possibly early).
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Removes every entry whose deadline is at or before `now`, oldest deadline first, and
    /// hands each to `on_expire`.
    pub fn expire(&mut self, now: Instant, mut on_expire: impl FnMut(Conn)) {
        while let Some(Reverse((t, slot, generation))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let s = &mut self.slots[slot as usize];
            if s.generation != generation || s.armed != t {
                continue; // stale item: entry gone, or re-armed earlier since.
            }
            let Some(c) = s.conn else { continue };
            if c.expires <= now {
                if let Some(conn) = self.remove(ConnHandle { slot, generation }) {
                    on_expire(conn);
                }
            } else {
                s.armed = c.expires;
                self.timers.push(Reverse((c.expires, slot, generation)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ConnKey {
        ConnKey::from_flow(&FlowKey::v4(
            [203, 0, 113, 1].into(),
            [198, 51, 100, 1].into(),
            IpProto::Tcp,
            port,
            80,
        ))
    }

    fn conn(port: u16, expires: u64) -> Conn {
        Conn {
            key: key(port),
            service: ServiceId(0),
            dest: DestId(0),
            state: ConnState::Tcp(TcpState::Established),
            expires: Instant::from_secs(expires),
            packets: 0,
        }
    }

    #[test]
    fn lifecycle_of_a_client_closing_first() {
        let mut s = TcpState::None;
        s = s.next_input_only(true, false, false, false);
        assert_eq!(s, TcpState::SynRecv);
        s = s.next_input_only(false, false, true, false);
        assert_eq!(s, TcpState::Established);
        s = s.next_input_only(false, true, true, false);
        assert_eq!(s, TcpState::FinWait);
        s = s.next_input_only(false, false, true, false);
        assert_eq!(s, TcpState::FinWait);
        assert_eq!(
            TcpState::Established.next_input_only(false, false, true, true),
            TcpState::Close
        );
        // sloppy_tcp: an entry created by a bare ACK is ESTABLISHED at once.
        assert_eq!(
            TcpState::None.next_input_only(false, false, true, false),
            TcpState::Established
        );
        let t = Timeouts::default();
        assert_eq!(
            ConnState::Tcp(TcpState::Established).timeout(&t),
            Duration::from_secs(900)
        );
        assert_eq!(
            ConnState::Tcp(TcpState::Close).timeout(&t),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn expiry_follows_refreshes_both_ways() {
        let mut t = ConnTable::new();
        let a = t.insert(conn(1, 100));
        let b = t.insert(conn(2, 100));
        t.set_expires(a, Instant::from_secs(300)); // later: lazy
        t.set_expires(b, Instant::from_secs(50)); // earlier: re-armed
        assert_eq!(t.next_timer(), Some(Instant::from_secs(50)));
        let mut gone = Vec::new();
        t.expire(Instant::from_secs(60), |c| gone.push(c.key));
        assert_eq!(gone, [key(2)]);
        t.expire(Instant::from_secs(200), |c| gone.push(c.key));
        assert_eq!(gone.len(), 1, "a was refreshed to 300 s");
        assert!(t.lookup(&key(1)).is_some());
        t.expire(Instant::from_secs(300), |c| gone.push(c.key));
        assert_eq!(gone, [key(2), key(1)]);
        assert!(t.is_empty());
        assert_eq!(t.get(a), None, "stale handle");
    }

    #[test]
    fn removed_slots_are_reused_without_confusion() {
        let mut t = ConnTable::new();
        let a = t.insert(conn(1, 10));
        t.remove(a);
        let b = t.insert(conn(2, 20));
        assert_eq!(t.get(a), None);
        assert_eq!(t.get(b).map(|c| c.key), Some(key(2)));
        let mut n = 0;
        t.expire(Instant::from_secs(15), |_| n += 1);
        assert_eq!(
            n, 0,
            "the old timer of slot 0 must not expire the new entry"
        );
        t.expire(Instant::from_secs(20), |_| n += 1);
        assert_eq!(n, 1);
    }
}
