//! The Linux multipath hash: `fib_multipath_hash_policy` 0-3, `fib_multipath_hash_fields`, the
//! `fib_multipath_hash_seed`, the IPv6 flow label, ICMP errors, and the two code paths the kernel
//! has (forwarding a packet, or looking a route up from a flow description).
//!
//! ## What the kernel hashes (Linux 6.18)
//! Every policy fills a zeroed `struct flow_keys` and hands it to
//! `fib_multipath_hash_from_keys` (include/net/ip_fib.h), which runs `flow_hash_from_keys_seed`
//! (net/core/flow_dissector.c): `__flow_hash_consistentify` sorts the addresses and, separately,
//! the ports (so both directions of a flow hash alike), then SipHash-2-4 runs over the struct
//! from `basic` to the end of the addresses (48 bytes for IPv4, 72 for IPv6) with the key
//! `(seed << 32 | seed, same)`; a zero result becomes 1. The route code returns that hash
//! shifted right by one (31 bits), which [`crate::group`] compares against the next hops'
//! upper bounds.
//!
//! | policy | IPv4 | IPv6 |
//! | --- | --- | --- |
//! | 0 (L3) | addresses (of the quoted header for an ICMP error) | addresses, flow label, next header (quoted header for an ICMPv6 error) |
//! | 1 (L4) | addresses, ports, protocol | addresses, ports, protocol |
//! | 2 (L3 or inner L3) | addresses | addresses, flow label, protocol |
//! | 3 (custom) | the chosen outer fields | the chosen outer fields |
//!
//! ## The two paths ([`HashPath`])
//! A forwarded packet goes through the `skb` branch of `fib_multipath_hash` /
//! `rt6_multipath_hash`; a route lookup from a flow (`ip route get` for IPv6, local output)
//! goes through the `flowi` branch. They differ for IPv6: the flow dissector gives the flow
//! label in host byte order (`ntohl`) where the `flowi` branch keeps network order, so policy 2
//! with a non-zero label differs; and under policy 3 the forwarding path mixes the outer and
//! inner custom hashes with `jhash_2words(outer, inner, 0)` (inner is 0 for a packet that is
//! not encapsulated). For IPv4, `ip route get ... iif DEV` builds a packet and takes the
//! forwarding path, so both agree with real forwarding; the `flowi` path there is the one of
//! locally generated traffic (policy 3 without the `jhash` mix).
//!
//! ## Packets that already carry an L4 hash
//! Under policy 1 only, a forwarded packet whose `skb->l4_hash` is set (a NIC's RSS hash, or a
//! local socket's `sk_txhash` that crossed a veth) is not hashed again: the route code uses
//! `skb->hash >> 1`. [`HashInput::l4_hash`] carries such a hash; [`crate::Router`] can fill it
//! from a per-router RSS [`crate::Toeplitz`] hasher.
//!
//! ## Not modelled
//! Encapsulated packets (IPIP, GRE...) under policies 2 and 3 are hashed by their outer header
//! only (the kernel's dissector would look at the inner header); `FLOWI_FLAG_ANY_SPORT`
//! (random source port of some local lookups); `flowi4_multipath_hash` set by tunnel drivers;
//! fib rules that pre-dissect the flow (`fib4_rules_early_flow_dissect`). Hosts are
//! little-endian (x86_64, arm64): the byte order of the host-order flow label assumes it.

use std::net::IpAddr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tierlab_wire::{FlowKey, IpHeader, IpProto, Packet, SimRng, Transport};

use crate::error::EcmpError;
use crate::jhash::jhash_2words;
use crate::siphash::{SipKey, SipState};

/// `net.ipv4.fib_multipath_hash_policy` / `net.ipv6.fib_multipath_hash_policy`.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub enum Policy {
    /// 0: layer 3 (addresses; for IPv6 also flow label and next header). The kernel default.
    #[default]
    L3,
    /// 1: layer 4 (5-tuple).
    L4,
    /// 2: layer 3, or the inner layer 3 of an encapsulated packet.
    L3Inner,
    /// 3: custom, with `fib_multipath_hash_fields`.
    Custom,
}

impl Policy {
    /// The sysctl value.
    pub const fn number(self) -> u8 {
        match self {
            Self::L3 => 0,
            Self::L4 => 1,
            Self::L3Inner => 2,
            Self::Custom => 3,
        }
    }
}

impl TryFrom<u8> for Policy {
    type Error = EcmpError;
    fn try_from(v: u8) -> Result<Self, EcmpError> {
        match v {
            0 => Ok(Self::L3),
            1 => Ok(Self::L4),
            2 => Ok(Self::L3Inner),
            3 => Ok(Self::Custom),
            other => Err(EcmpError::BadPolicy(other)),
        }
    }
}

impl From<Policy> for u8 {
    fn from(p: Policy) -> Self {
        p.number()
    }
}

/// `fib_multipath_hash_fields`: which fields policy 3 hashes (include/net/ip_fib.h
/// `FIB_MULTIPATH_HASH_FIELD_*`). Bits 0-5 are outer fields, bits 6-11 inner fields.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct HashFields(u32);

impl HashFields {
    /// Outer source address.
    pub const SRC_IP: u32 = 1 << 0;
    /// Outer destination address.
    pub const DST_IP: u32 = 1 << 1;
    /// Outer protocol.
    pub const IP_PROTO: u32 = 1 << 2;
    /// Outer IPv6 flow label (ignored for IPv4).
    pub const FLOWLABEL: u32 = 1 << 3;
    /// Outer source port.
    pub const SRC_PORT: u32 = 1 << 4;
    /// Outer destination port.
    pub const DST_PORT: u32 = 1 << 5;
    /// Inner source address.
    pub const INNER_SRC_IP: u32 = 1 << 6;
    /// Inner destination address.
    pub const INNER_DST_IP: u32 = 1 << 7;
    /// Inner protocol.
    pub const INNER_IP_PROTO: u32 = 1 << 8;
    /// Inner flow label.
    pub const INNER_FLOWLABEL: u32 = 1 << 9;
    /// Inner source port.
    pub const INNER_SRC_PORT: u32 = 1 << 10;
    /// Inner destination port.
    pub const INNER_DST_PORT: u32 = 1 << 11;
    /// The outer fields (`FIB_MULTIPATH_HASH_FIELD_OUTER_MASK`).
    pub const OUTER_MASK: u32 = 0x3f;
    /// Every field (`FIB_MULTIPATH_HASH_FIELD_ALL_MASK`), the sysctl's maximum.
    pub const ALL_MASK: u32 = 0xfff;
    /// The kernel's default: source address, destination address, protocol
    /// (`FIB_MULTIPATH_HASH_FIELD_DEFAULT_MASK`).
    pub const DEFAULT: Self = Self(Self::SRC_IP | Self::DST_IP | Self::IP_PROTO);

    /// Fields from the sysctl value.
    ///
    /// # Errors
    /// [`EcmpError::BadHashFields`] for bits above 11 (the kernel refuses them too).
    pub const fn new(bits: u32) -> Result<Self, EcmpError> {
        if bits & !Self::ALL_MASK != 0 {
            return Err(EcmpError::BadHashFields(bits));
        }
        Ok(Self(bits))
    }

    /// The sysctl value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether all of `bits` are set.
    pub const fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

impl Default for HashFields {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for HashFields {
    type Error = EcmpError;
    fn try_from(v: u32) -> Result<Self, EcmpError> {
        Self::new(v)
    }
}

impl From<HashFields> for u32 {
    fn from(f: HashFields) -> Self {
        f.0
    }
}

/// `net.ipv4.fib_multipath_hash_seed` (IPv6 uses the same seed).
///
/// Writing 0 to the sysctl makes the kernel pick a random seed, and a booted kernel starts with
/// a random one; [`HashSeed::random`] draws it from the scenario's generator instead of OS
/// entropy, so runs are reproducible.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum HashSeed {
    /// The seed in force (`mp_seed`); a non-zero sysctl value is used as is.
    Fixed(u32),
}

impl HashSeed {
    /// A random per-router seed, as a kernel picks one at boot (`get_random_u32`), drawn from
    /// the scenario's generator.
    pub fn random(rng: &mut SimRng) -> Self {
        Self::Fixed(rng.next_u32())
    }

    /// The seed value.
    pub const fn value(self) -> u32 {
        match self {
            Self::Fixed(v) => v,
        }
    }
}

/// Which kernel code path computes the hash.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub enum HashPath {
    /// A forwarded packet (the `skb` branch): what a router does. The default.
    #[default]
    Forwarding,
    /// A route lookup from a flow description (the `flowi` branch): `ip -6 route get`, locally
    /// generated packets. For IPv4, `ip route get ... iif DEV` is *not* this path (it builds a
    /// packet and forwards it).
    RouteLookup,
}

/// Policy and fields of one address family.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct FamilyHash {
    /// `fib_multipath_hash_policy`.
    pub policy: Policy,
    /// `fib_multipath_hash_fields` (used by policy 3 only).
    pub fields: HashFields,
}

/// Everything that decides a router's multipath hash.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct HashConfig {
    /// `net.ipv4.fib_multipath_hash_policy` and `..._fields`.
    pub v4: FamilyHash,
    /// `net.ipv6.fib_multipath_hash_policy` and `..._fields`.
    pub v6: FamilyHash,
    /// `net.ipv4.fib_multipath_hash_seed` (shared by IPv6).
    pub seed: HashSeed,
    /// The kernel code path modelled.
    pub path: HashPath,
}

impl HashConfig {
    /// The same policy and fields for both families, forwarding path.
    pub fn new(policy: Policy, fields: HashFields, seed: HashSeed) -> Self {
        let fam = FamilyHash { policy, fields };
        Self {
            v4: fam,
            v6: fam,
            seed,
            path: HashPath::Forwarding,
        }
    }

    /// The same configuration on another code path.
    pub const fn with_path(mut self, path: HashPath) -> Self {
        self.path = path;
        self
    }

    /// The multipath hash of a packet or flow: 31 bits, compared by the next-hop group against
    /// its upper bounds (or reduced modulo its buckets).
    ///
    /// This derives the key on every call; a router that hashes many packets should build a
    /// [`MultipathHasher`] once.
    pub fn hash(&self, input: &HashInput) -> u32 {
        self.hash_with(&SeedKey::plain(self.seed.value()), input)
    }

    fn hash_with(&self, key: &SeedKey, input: &HashInput) -> u32 {
        let fwd = self.path == HashPath::Forwarding;
        let f = &input.flow;
        let mh = match (f.src(), f.dst()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (s, d) = (s.octets(), d.octets());
                match self.v4.policy {
                    Policy::L3 | Policy::L3Inner => {
                        // net/ipv4/route.c ip_multipath_l3_keys: an ICMP error is hashed by the
                        // header it quotes (policy 0, forwarding path only).
                        let (s, d) = match (fwd, self.v4.policy, input.icmp_quote) {
                            (true, Policy::L3, Some(q)) => match (q.src, q.dst) {
                                (IpAddr::V4(qs), IpAddr::V4(qd)) => (qs.octets(), qd.octets()),
                                _ => (s, d),
                            },
                            _ => (s, d),
                        };
                        hash_v4(s, d, 0, 0, 0, key)
                    }
                    Policy::L4 => {
                        if fwd && let Some(h) = input.l4_hash {
                            return h >> 1;
                        }
                        hash_v4(s, d, f.proto().number(), f.sport(), f.dport(), key)
                    }
                    Policy::Custom => {
                        let outer = custom_v4(self.v4.fields, s, d, f, key);
                        if fwd {
                            jhash_2words(outer, 0, 0)
                        } else {
                            outer
                        }
                    }
                }
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let (s, d) = (s.octets(), d.octets());
                let label = f.flow_label();
                match self.v6.policy {
                    Policy::L3 => {
                        // net/ipv6/route.c ip6_multipath_l3_keys: addresses, label (network
                        // order) and next header, of the quoted header for an ICMPv6 error.
                        match (fwd, input.icmp_quote) {
                            (true, Some(q)) => match (q.src, q.dst) {
                                (IpAddr::V6(qs), IpAddr::V6(qd)) => hash_v6(
                                    qs.octets(),
                                    qd.octets(),
                                    q.next_header,
                                    label_net(q.flow_label),
                                    0,
                                    0,
                                    key,
                                ),
                                _ => hash_v6(s, d, input.next_header, label_net(label), 0, 0, key),
                            },
                            (true, None) => {
                                hash_v6(s, d, input.next_header, label_net(label), 0, 0, key)
                            }
                            (false, _) => {
                                hash_v6(s, d, f.proto().number(), label_net(label), 0, 0, key)
                            }
                        }
                    }
                    Policy::L4 => {
                        if fwd && let Some(h) = input.l4_hash {
                            return h >> 1;
                        }
                        hash_v6(s, d, f.proto().number(), [0; 4], f.sport(), f.dport(), key)
                    }
                    Policy::L3Inner => {
                        let l = if fwd {
                            label_host(label)
                        } else {
                            label_net(label)
                        };
                        hash_v6(s, d, f.proto().number(), l, 0, 0, key)
                    }
                    Policy::Custom => {
                        let l = if fwd {
                            label_host(label)
                        } else {
                            label_net(label)
                        };
                        let outer = custom_v6(self.v6.fields, s, d, l, f, key);
                        if fwd {
                            jhash_2words(outer, 0, 0)
                        } else {
                            outer
                        }
                    }
                }
            }
            // A FlowKey never mixes families (FlowKey::new refuses it).
            _ => 0,
        };
        mh >> 1
    }
}

/// The flow label as `(__force u32)` of a big-endian value: its bytes in network order.
const fn label_net(label: u32) -> [u8; 4] {
    label.to_be_bytes()
}

/// The flow label as the flow dissector stores it (`ntohl`), in host (little-endian) order.
const fn label_host(label: u32) -> [u8; 4] {
    label.to_le_bytes()
}

/// net/ipv4/route.c `fib_multipath_custom_hash_outer` / `fib_multipath_custom_hash_fl4`
/// (Linux 6.18): the selected outer fields, or 0 when no outer field is selected.
fn custom_v4(fields: HashFields, s: [u8; 4], d: [u8; 4], f: &FlowKey, key: &SeedKey) -> u32 {
    if fields.bits() & HashFields::OUTER_MASK == 0 {
        return 0;
    }
    let pick4 = |bit, v: [u8; 4]| if fields.has(bit) { v } else { [0; 4] };
    let pick16 = |bit, v: u16| if fields.has(bit) { v } else { 0 };
    let proto = if fields.has(HashFields::IP_PROTO) {
        f.proto().number()
    } else {
        0
    };
    hash_v4(
        pick4(HashFields::SRC_IP, s),
        pick4(HashFields::DST_IP, d),
        proto,
        pick16(HashFields::SRC_PORT, f.sport()),
        pick16(HashFields::DST_PORT, f.dport()),
        key,
    )
}

/// net/ipv6/route.c `rt6_multipath_custom_hash_outer` / `rt6_multipath_custom_hash_fl6`
/// (Linux 6.18).
fn custom_v6(
    fields: HashFields,
    s: [u8; 16],
    d: [u8; 16],
    label: [u8; 4],
    f: &FlowKey,
    key: &SeedKey,
) -> u32 {
    if fields.bits() & HashFields::OUTER_MASK == 0 {
        return 0;
    }
    let pick = |bit, v: [u8; 16]| if fields.has(bit) { v } else { [0; 16] };
    let pick16 = |bit, v: u16| if fields.has(bit) { v } else { 0 };
    let proto = if fields.has(HashFields::IP_PROTO) {
        f.proto().number()
    } else {
        0
    };
    let label = if fields.has(HashFields::FLOWLABEL) {
        label
    } else {
        [0; 4]
    };
    hash_v6(
        pick(HashFields::SRC_IP, s),
        pick(HashFields::DST_IP, d),
        proto,
        label,
        pick16(HashFields::SRC_PORT, f.sport()),
        pick16(HashFields::DST_PORT, f.dport()),
        key,
    )
}

/// The ports as the kernel compares them in `__flow_hash_consistentify`: the `__be16` value read
/// as a host (little-endian) `u16`.
const fn port_as_host(port: u16) -> u16 {
    port.swap_bytes()
}

/// Word 0 of the hashed region: `basic` (n_proto 0, ip_proto, padding) and `tags.flow_label`.
fn word0(ip_proto: u8, label: [u8; 4]) -> u64 {
    u64::from(ip_proto) << 16 | u64::from(u32::from_le_bytes(label)) << 32
}

/// Word 3 of the hashed region: `keyid` (0) and `ports` (source then destination, big-endian).
fn word3(sport: u16, dport: u16) -> u64 {
    let [a, b] = sport.to_be_bytes();
    let [c, e] = dport.to_be_bytes();
    u64::from(u32::from_le_bytes([a, b, c, e])) << 32
}

fn sorted_ports(sport: u16, dport: u16) -> (u16, u16) {
    if port_as_host(dport) < port_as_host(sport) {
        (dport, sport)
    } else {
        (sport, dport)
    }
}

/// `flow_hash_from_keys_seed` for an IPv4 `struct flow_keys` holding only these fields.
///
/// Mirrors net/core/flow_dissector.c `__flow_hash_from_keys`, `__flow_hash_consistentify`,
/// `flow_keys_hash_length` and include/net/flow_dissector.h `struct flow_keys` (Linux 6.18):
/// the region hashed starts at `basic` (offset 8) and is 48 bytes long for IPv4 —
/// basic 4, tags 4, vlan 8, cvlan 8, keyid 4, ports 4, icmp 4, v4 addresses 8, and 4 bytes of
/// the address union (zero).
pub(crate) fn hash_v4(
    mut s: [u8; 4],
    mut d: [u8; 4],
    ip_proto: u8,
    sport: u16,
    dport: u16,
    key: &SeedKey,
) -> u32 {
    if u32::from_le_bytes(d) < u32::from_le_bytes(s) {
        core::mem::swap(&mut s, &mut d);
    }
    let (sport, dport) = sorted_ports(sport, dport);
    let rest = [
        word3(sport, dport),
        u64::from(u32::from_le_bytes(s)) << 32,
        u64::from(u32::from_le_bytes(d)),
    ];
    nonzero(key.start(ip_proto, [0; 4]).finish(&rest) as u32)
}

/// `flow_hash_from_keys_seed` for an IPv6 `struct flow_keys` (72 bytes hashed: up to the end of
/// the addresses plus the 4 bytes of tail padding of the struct). `label` is the 4 bytes of
/// `tags.flow_label` as they lie in memory.
pub(crate) fn hash_v6(
    mut s: [u8; 16],
    mut d: [u8; 16],
    ip_proto: u8,
    label: [u8; 4],
    sport: u16,
    dport: u16,
    key: &SeedKey,
) -> u32 {
    // memcmp order of the addresses is the order of their big-endian values.
    let (sb, db) = (u128::from_be_bytes(s), u128::from_be_bytes(d));
    if db < sb {
        core::mem::swap(&mut s, &mut d);
    }
    let (sport, dport) = sorted_ports(sport, dport);
    // The addresses start 4 bytes into a little-endian word: word 4 holds bytes 0..4 of the
    // source in its upper half, words 5-8 continue at 8-byte steps.
    let (sl, dl) = (u128::from_le_bytes(s), u128::from_le_bytes(d));
    let rest = [
        word3(sport, dport),
        (sl as u64) << 32,
        (sl >> 32) as u64,
        ((sl >> 96) as u64) | ((dl as u64) << 32),
        (dl >> 32) as u64,
        (dl >> 96) as u64,
    ];
    nonzero(key.start(ip_proto, label).finish(&rest) as u32)
}

/// The SipHash key of a seed and, optionally, the states after the first three words of the
/// hashed region (`basic` + `tags`, then `vlan` and `cvlan`, always zero) for every protocol
/// with a zero flow label: what every label-free hash (all of policy 1) starts from.
#[derive(Clone, Eq, PartialEq)]
pub(crate) struct SeedKey {
    key: SipKey,
    starts: Option<Box<[SipState; 256]>>,
}

impl SeedKey {
    fn plain(seed: u32) -> Self {
        Self {
            key: SipKey::from_multipath_seed(seed),
            starts: None,
        }
    }

    fn precomputed(seed: u32) -> Self {
        let key = SipKey::from_multipath_seed(seed);
        let starts = Box::new(core::array::from_fn(|p| {
            SipState::new(key).absorb(&[word0(p as u8, [0; 4]), 0, 0])
        }));
        Self {
            key,
            starts: Some(starts),
        }
    }

    #[inline]
    fn start(&self, ip_proto: u8, label: [u8; 4]) -> SipState {
        match &self.starts {
            Some(t) if label == [0; 4] => t[usize::from(ip_proto)],
            _ => SipState::new(self.key).absorb(&[word0(ip_proto, label), 0, 0]),
        }
    }
}

/// A [`HashConfig`] ready to hash many packets: the SipHash key derived once, and the states
/// after the constant first words precomputed (8 KiB). Gives the same hashes as
/// [`HashConfig::hash`], faster.
#[derive(Clone, Eq, PartialEq)]
pub struct MultipathHasher {
    config: HashConfig,
    key: SeedKey,
}

impl MultipathHasher {
    /// Prepares a configuration.
    pub fn new(config: HashConfig) -> Self {
        Self {
            config,
            key: SeedKey::precomputed(config.seed.value()),
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &HashConfig {
        &self.config
    }

    /// The 31-bit multipath hash, as [`HashConfig::hash`].
    #[inline]
    pub fn hash(&self, input: &HashInput) -> u32 {
        self.config.hash_with(&self.key, input)
    }
}

impl core::fmt::Debug for MultipathHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MultipathHasher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

const fn nonzero(h: u32) -> u32 {
    if h == 0 { 1 } else { h }
}

/// The header an ICMP error quotes, as the policy-0 hash reads it.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct QuotedHeader {
    /// Source address of the quoted packet.
    pub src: IpAddr,
    /// Destination address of the quoted packet.
    pub dst: IpAddr,
    /// Flow label of the quoted IPv6 header (0 for IPv4).
    pub flow_label: u32,
    /// Protocol / next header of the quoted IP header (before any extension header).
    pub next_header: u8,
}

impl QuotedHeader {
    /// The quoted header of a flow (as [`tierlab_wire::icmp::quoted_flow`] returns it).
    pub fn of_flow(quoted: &FlowKey) -> Self {
        Self {
            src: quoted.src(),
            dst: quoted.dst(),
            flow_label: quoted.flow_label(),
            next_header: quoted.proto().number(),
        }
    }

    /// Reads the quoted IP header at the start of an ICMP error's body, as the kernel does:
    /// a full IPv4 (20 bytes) or IPv6 (40 bytes) header must be there, nothing more.
    pub fn parse(quote: &[u8]) -> Option<Self> {
        match quote.first()? >> 4 {
            4 if quote.len() >= 20 => {
                let a =
                    |o: usize| IpAddr::from([quote[o], quote[o + 1], quote[o + 2], quote[o + 3]]);
                Some(Self {
                    src: a(12),
                    dst: a(16),
                    flow_label: 0,
                    next_header: quote[9],
                })
            }
            6 if quote.len() >= 40 => {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&quote[8..24]);
                d.copy_from_slice(&quote[24..40]);
                let label = u32::from_be_bytes([0, quote[1] & 0x0f, quote[2], quote[3]]);
                Some(Self {
                    src: s.into(),
                    dst: d.into(),
                    flow_label: label,
                    next_header: quote[6],
                })
            }
            _ => None,
        }
    }
}

/// What the multipath hash reads from one packet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct HashInput {
    /// The flow as the kernel's flow dissector sees it: addresses, upper-layer protocol, ports
    /// (0 for fragments and protocols without ports) and IPv6 flow label.
    pub flow: FlowKey,
    /// IPv4 protocol / IPv6 next header of the fixed header (differs from the flow's protocol
    /// when IPv6 extension headers are present); IPv6 policy 0 hashes it.
    pub next_header: u8,
    /// For an ICMP or ICMPv6 error, the header it quotes (policy 0 hashes that instead).
    pub icmp_quote: Option<QuotedHeader>,
    /// A hash the packet already carries with `skb->l4_hash` set (RSS); policy 1 on the
    /// forwarding path returns it shifted right by one.
    pub l4_hash: Option<u32>,
}

impl HashInput {
    /// A packet of `flow` that is not an ICMP error and carries no L4 hash.
    pub const fn flow(flow: FlowKey) -> Self {
        Self {
            flow,
            next_header: flow.proto().number(),
            icmp_quote: None,
            l4_hash: None,
        }
    }

    /// An ICMP error (`outer`: its own addresses and protocol 1 or 58, ports 0) quoting a
    /// packet of flow `quoted`.
    pub fn icmp_error(outer: FlowKey, quoted: &FlowKey) -> Self {
        Self {
            icmp_quote: Some(QuotedHeader::of_flow(quoted)),
            ..Self::flow(outer)
        }
    }

    /// The same input carrying an L4 hash (`skb->l4_hash`).
    pub const fn with_l4_hash(mut self, hash: u32) -> Self {
        self.l4_hash = Some(hash);
        self
    }

    /// What the kernel's hash reads from a packet's bytes, as [`Self::from_packet`] on the
    /// parsed packet gives it. A whole TCP packet without IPv6 extension headers (almost
    /// every packet of a run) is read through the checked views, without parsing the rest;
    /// anything else goes through [`Packet::parse`].
    ///
    /// # Errors
    /// The bytes are not a well-formed IP packet (or TCP header).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, tierlab_wire::WireError> {
        Self::from_view(&tierlab_wire::view::IpView::new_checked(bytes, false)?)
    }

    /// As [`Self::from_bytes`], for a packet already viewed.
    ///
    /// # Errors
    /// The packet's TCP header (or, for other packets, the rest of it) is malformed.
    pub fn from_view(v: &tierlab_wire::view::IpView<'_>) -> Result<Self, tierlab_wire::WireError> {
        let bytes = v.bytes();
        let next_header = if v.is_ipv4() { bytes[9] } else { bytes[6] };
        if v.proto() == IpProto::Tcp && next_header == 6 && !v.is_fragment() {
            v.tcp()?;
            return Ok(Self {
                flow: v.flow_key(),
                next_header,
                icmp_quote: None,
                l4_hash: None,
            });
        }
        Packet::parse(bytes, false).map(|p| Self::from_packet(&p))
    }

    /// What the kernel's hash reads from a parsed packet: fragments have no ports (the flow
    /// dissector stops at a fragment), and ICMP errors carry their quoted header.
    pub fn from_packet(p: &Packet<'_>) -> Self {
        let mut flow = p.flow_key();
        let (next_header, fragment) = match p.ip {
            IpHeader::V4(h) => (h.proto.number(), h.more_frags || h.frag_offset != 0),
            IpHeader::V6(h) => (h.next_header.number(), p.ipv6_frag.is_some()),
        };
        if fragment || matches!(p.transport, Transport::Fragment(_)) {
            flow = match (flow.src(), flow.dst()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(s, d, p.proto(), 0, 0),
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    FlowKey::v6(s, d, p.proto(), 0, 0, flow.flow_label())
                }
                _ => flow,
            };
        }
        // The kernel reads the quote only on a packet whose fixed header says ICMP / ICMPv6
        // directly, and (IPv4) is not a non-first fragment.
        let icmp_quote = match p.transport {
            Transport::Icmpv4(m) if m.is_error() && next_header == IpProto::Icmp.number() => {
                QuotedHeader::parse(p.payload)
            }
            Transport::Icmpv6(m) if m.is_error() && next_header == IpProto::Icmpv6.number() => {
                QuotedHeader::parse(p.payload)
            }
            _ => None,
        };
        Self {
            flow,
            next_header,
            icmp_quote,
            l4_hash: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::siphash::siphash24;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A slow, obviously-correct model: lay out `struct flow_keys` byte by byte as the C
    /// compiler does, consistentify on the struct, hash `flow_keys_hash_length` bytes.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per struct flow_keys field"
    )]
    fn reference(
        v6: bool,
        src: &[u8],
        dst: &[u8],
        proto: u8,
        label_mem: [u8; 4],
        sport: u16,
        dport: u16,
        seed: u32,
    ) -> u32 {
        let mut keys = [0u8; 80];
        // control at 0..8, basic at 8: n_proto 8..10, ip_proto 10, tags 12..16, vlan 16..24,
        // cvlan 24..32, keyid 32..36, ports 36..40, icmp 40..44, addrs 44..76, padding 76..80.
        keys[10] = proto;
        keys[12..16].copy_from_slice(&label_mem);
        let (mut s, mut d) = (src.to_vec(), dst.to_vec());
        let (mut sp, mut dp) = (sport.to_be_bytes(), dport.to_be_bytes());
        if v6 {
            if d < s {
                core::mem::swap(&mut s, &mut d);
            }
        } else if u32::from_le_bytes([d[0], d[1], d[2], d[3]])
            < u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        {
            core::mem::swap(&mut s, &mut d);
        }
        if u16::from_le_bytes(dp) < u16::from_le_bytes(sp) {
            core::mem::swap(&mut sp, &mut dp);
        }
        keys[36..38].copy_from_slice(&sp);
        keys[38..40].copy_from_slice(&dp);
        let n = s.len();
        keys[44..44 + n].copy_from_slice(&s);
        keys[44 + n..44 + 2 * n].copy_from_slice(&d);
        let len = 80 - (8 + 32 - 2 * n);
        let h = siphash24(&keys[8..8 + len], SipKey::from_multipath_seed(seed)) as u32;
        if h == 0 { 1 } else { h }
    }

    #[test]
    fn hash_input_from_bytes_is_hash_input_of_the_parsed_packet() {
        use tierlab_wire::icmp::{IcmpError, build_error};
        use tierlab_wire::udp::UdpRepr;
        use tierlab_wire::{PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
        let seg = TcpRepr {
            sport: 41_000,
            dport: 80,
            seq: TcpSeq(7),
            flags: TcpFlags::ACK,
            mss: Some(1460),
            ..TcpRepr::default()
        };
        let v4 = PacketBuilder::new([203, 0, 113, 9].into(), [198, 51, 100, 1].into()).unwrap();
        let (a6, b6): (IpAddr, IpAddr) = (
            "2001:db8::9".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        let v6 = PacketBuilder::new(a6, b6).unwrap().flow_label(0x5_4321);
        let tcp4 = v4.tcp(&seg, &[1u8; 3000]).unwrap();
        let tcp6 = v6.tcp(&seg, b"hello").unwrap();
        let udp = UdpRepr {
            sport: 5353,
            dport: 53,
        };
        let mut cases = vec![
            tcp4.clone(),
            tcp6,
            v4.udp(&udp, b"q").unwrap(),
            build_error(
                &tcp4,
                [192, 0, 2, 1].into(),
                IcmpError::TooBig { mtu: 1400 },
                1,
            )
            .unwrap()
            .unwrap(),
        ];
        cases.extend(tierlab_wire::frag::fragment_v4(&tcp4, 1500, true).unwrap());
        let mut bad_offset = tcp4.clone();
        bad_offset[20 + 12] = 0x20; // TCP data offset 2: below the fixed header
        cases.push(bad_offset);
        cases.push(tcp4[..30].to_vec());
        for (i, bytes) in cases.iter().enumerate() {
            let slow = Packet::parse(bytes, false).map(|p| HashInput::from_packet(&p));
            let fast = HashInput::from_bytes(bytes);
            assert_eq!(fast.is_ok(), slow.is_ok(), "case {i}");
            if let (Ok(f), Ok(s)) = (fast, slow) {
                assert_eq!(f, s, "case {i}");
            }
        }
    }

    #[test]
    fn word_layout_matches_the_byte_layout() {
        let mut x = 0x1234_5678_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..500 {
            let r = next();
            let s4 = (r as u32).to_be_bytes();
            let d4 = ((r >> 32) as u32).to_be_bytes();
            let (sp, dp, proto, seed) = (next() as u16, next() as u16, next() as u8, next() as u32);
            let key = &SeedKey::plain(seed);
            assert_eq!(
                hash_v4(s4, d4, proto, sp, dp, key),
                reference(false, &s4, &d4, proto, [0; 4], sp, dp, seed)
            );
            let mut s6 = [0u8; 16];
            let mut d6 = [0u8; 16];
            s6[..8].copy_from_slice(&next().to_le_bytes());
            s6[8..].copy_from_slice(&next().to_le_bytes());
            d6[..8].copy_from_slice(&next().to_le_bytes());
            d6[8..].copy_from_slice(&next().to_le_bytes());
            if r % 7 == 0 {
                d6 = s6; // equal addresses keep their order
            }
            let label = (next() as u32 & 0xf_ffff).to_be_bytes();
            assert_eq!(
                hash_v6(s6, d6, proto, label, sp, dp, key),
                reference(true, &s6, &d6, proto, label, sp, dp, seed)
            );
        }
    }

    fn v4flow(s: &str, d: &str, sp: u16, dp: u16) -> FlowKey {
        FlowKey::v4(s.parse().unwrap(), d.parse().unwrap(), IpProto::Tcp, sp, dp)
    }

    #[test]
    fn hashes_are_symmetric_and_policy_sensitive() {
        let cfg = HashConfig::new(Policy::L4, HashFields::DEFAULT, HashSeed::Fixed(42));
        let f = v4flow("203.0.113.7", "198.51.100.1", 40000, 80);
        let h = cfg.hash(&HashInput::flow(f));
        assert!(h < 1 << 31);
        assert_eq!(h, cfg.hash(&HashInput::flow(f.reversed())));
        let other_port = v4flow("203.0.113.7", "198.51.100.1", 40001, 80);
        let l3 = HashConfig::new(Policy::L3, HashFields::DEFAULT, HashSeed::Fixed(42));
        assert_eq!(
            l3.hash(&HashInput::flow(f)),
            l3.hash(&HashInput::flow(other_port))
        );
        let seed2 = HashConfig::new(Policy::L4, HashFields::DEFAULT, HashSeed::Fixed(43));
        assert_ne!(h, seed2.hash(&HashInput::flow(f)));
    }

    #[test]
    fn icmp_errors_follow_the_flow_only_under_policy_0() {
        let flow = v4flow("203.0.113.7", "198.51.100.1", 40000, 80);
        let router: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let err = FlowKey::v4(router, "203.0.113.7".parse().unwrap(), IpProto::Icmp, 0, 0);
        let input = HashInput::icmp_error(err, &flow);
        let l3 = HashConfig::new(Policy::L3, HashFields::DEFAULT, HashSeed::Fixed(9));
        // Symmetric L3 hash of the quoted header = hash of the flow itself.
        assert_eq!(l3.hash(&input), l3.hash(&HashInput::flow(flow.reversed())));
        let l4 = HashConfig::new(Policy::L4, HashFields::DEFAULT, HashSeed::Fixed(9));
        assert_eq!(l4.hash(&input), l4.hash(&HashInput::flow(err)));
        // Route lookups never look at the quote.
        let lookup = l3.with_path(HashPath::RouteLookup);
        assert_eq!(lookup.hash(&input), lookup.hash(&HashInput::flow(err)));
    }

    #[test]
    fn ipv6_label_byte_order_differs_between_paths_only_where_the_kernel_does() {
        let s: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let f = FlowKey::v6(s, d, IpProto::Tcp, 1000, 80, 0x12345);
        for (policy, differ) in [
            (Policy::L3, false),
            (Policy::L4, false),
            (Policy::L3Inner, true),
            (Policy::Custom, true),
        ] {
            let fields =
                HashFields::new(HashFields::DEFAULT.bits() | HashFields::FLOWLABEL).unwrap();
            let fwd = HashConfig::new(policy, fields, HashSeed::Fixed(1));
            let look = fwd.with_path(HashPath::RouteLookup);
            let i = HashInput::flow(f);
            assert_eq!(fwd.hash(&i) != look.hash(&i), differ, "{policy:?}");
        }
        // Policy 3 without outer fields hashes nothing: every flow gets the same value.
        let none = HashConfig::new(
            Policy::Custom,
            HashFields::new(0).unwrap(),
            HashSeed::Fixed(1),
        );
        let g = FlowKey::v6(d, s, IpProto::Udp, 5, 6, 7);
        assert_eq!(
            none.hash(&HashInput::flow(f)),
            none.hash(&HashInput::flow(g))
        );
        assert_eq!(
            none.with_path(HashPath::RouteLookup)
                .hash(&HashInput::flow(f)),
            0
        );
    }

    #[test]
    fn l4_hash_short_circuits_policy_1_forwarding_only() {
        let f = v4flow("203.0.113.7", "198.51.100.1", 40000, 80);
        let i = HashInput::flow(f).with_l4_hash(0xabcd_ef01);
        let l4 = HashConfig::new(Policy::L4, HashFields::DEFAULT, HashSeed::Fixed(5));
        assert_eq!(l4.hash(&i), 0xabcd_ef01 >> 1);
        assert_eq!(
            l4.with_path(HashPath::RouteLookup).hash(&i),
            l4.hash(&HashInput::flow(f))
        );
        let l3 = HashConfig::new(Policy::L3, HashFields::DEFAULT, HashSeed::Fixed(5));
        assert_eq!(l3.hash(&i), l3.hash(&HashInput::flow(f)));
    }

    #[test]
    fn prepared_hasher_matches_the_plain_one() {
        let mut rng = tierlab_wire::rng::seeded(3);
        for policy in [Policy::L3, Policy::L4, Policy::L3Inner, Policy::Custom] {
            for path in [HashPath::Forwarding, HashPath::RouteLookup] {
                let fields = HashFields::new(rng.next_u32() & HashFields::ALL_MASK).unwrap();
                let cfg =
                    HashConfig::new(policy, fields, HashSeed::random(&mut rng)).with_path(path);
                let fast = MultipathHasher::new(cfg);
                for i in 0..200u32 {
                    let r = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                    let proto = IpProto::from((i % 3 * 5 + 1) as u8);
                    let f = if i % 2 == 0 {
                        FlowKey::v4(
                            (r as u32).into(),
                            ((r >> 32) as u32).into(),
                            proto,
                            i as u16,
                            80,
                        )
                    } else {
                        FlowKey::v6(r.into(), (!r).into(), proto, 80, i as u16, i * 7919)
                    };
                    let input = HashInput::flow(f);
                    assert_eq!(fast.hash(&input), cfg.hash(&input), "{cfg:?} {f}");
                }
            }
        }
    }

    #[test]
    fn bad_sysctl_values_are_refused() {
        assert_eq!(Policy::try_from(4), Err(EcmpError::BadPolicy(4)));
        assert_eq!(
            HashFields::new(0x1000),
            Err(EcmpError::BadHashFields(0x1000))
        );
        assert_eq!(Policy::try_from(3), Ok(Policy::Custom));
    }
}
