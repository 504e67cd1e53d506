//! Differential tests: tierlab-l4's `mh` and `sh` against slow, literal transcriptions of the
//! kernel's C (net/netfilter/ipvs/ip_vs_mh.c, ip_vs_sh.c, ip_vs_ctl.c, Linux v6.x): a circular
//! doubly linked list with a sentinel head (`list_add_rcu` after the head, `list_del_rcu`),
//! `dest_setup` arrays walked with a pointer that resets each round, plain `%` everywhere, and
//! SipHash from the `siphasher` crate instead of tierlab's own. Random add/edit/delete
//! histories must give identical tables and identical choices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use core::hash::Hasher;
#[path = "common/props.rs"]
mod props;

use proptest::prelude::*;
use tierlab_l4::{SchedFlags, SchedulerKind, Service, ServiceConfig};
use tierlab_wire::{FlowKey, IpProto};

/// A kernel-style destination.
#[derive(Clone, Debug)]
struct KDest {
    addr: IpAddr,
    port: u16,
    weight: i32,
    last_weight: i32,
}

/// `struct list_head` over an arena: index 0 is the service's `destinations` head.
struct KList {
    next: Vec<usize>,
    prev: Vec<usize>,
    dests: Vec<KDest>, // dests[i - 1] is node i
}

impl KList {
    fn new() -> Self {
        Self {
            next: vec![0],
            prev: vec![0],
            dests: Vec::new(),
        }
    }
    fn list_add(&mut self, node: usize) {
        let first = self.next[0];
        self.next[node] = first;
        self.prev[node] = 0;
        self.prev[first] = node;
        self.next[0] = node;
    }
    fn list_del(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }
    fn find_live(&self, addr: IpAddr, port: u16) -> Option<usize> {
        let mut p = self.next[0];
        while p != 0 {
            let d = &self.dests[p - 1];
            if d.addr == addr && d.port == port {
                return Some(p);
            }
            p = self.next[p];
        }
        None
    }
    fn find_any(&self, addr: IpAddr, port: u16) -> Option<usize> {
        self.dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
            .map(|i| i + 1)
    }
    /// ip_vs_add_dest: new, or from the trash; `__ip_vs_update_dest(add = 1)`.
    fn add(&mut self, addr: IpAddr, port: u16, weight: i32) -> bool {
        if self.find_live(addr, port).is_some() {
            return false;
        }
        let node = match self.find_any(addr, port) {
            Some(n) => n,
            None => {
                self.dests.push(KDest {
                    addr,
                    port,
                    weight: 0,
                    last_weight: 0,
                });
                self.next.push(0);
                self.prev.push(0);
                self.dests.len()
            }
        };
        let d = &mut self.dests[node - 1];
        d.last_weight = weight;
        d.weight = weight;
        self.list_add(node);
        true
    }
    fn edit(&mut self, addr: IpAddr, port: u16, weight: i32) -> bool {
        let Some(node) = self.find_live(addr, port) else {
            return false;
        };
        let d = &mut self.dests[node - 1];
        if weight != 0 {
            d.last_weight = weight;
        }
        d.weight = weight;
        true
    }
    fn del(&mut self, addr: IpAddr, port: u16) -> bool {
        let Some(node) = self.find_live(addr, port) else {
            return false;
        };
        self.list_del(node);
        true
    }
    fn count(&self) -> usize {
        let (mut n, mut p) = (0, self.next[0]);
        while p != 0 {
            n += 1;
            p = self.next[p];
        }
        n
    }
}

fn hsiphash(v: u32, k: u64) -> u32 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(k, k);
    h.write(&v.to_le_bytes());
    h.finish() as u32
}

fn fold(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from_be_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

fn mh_hashkey(addr: IpAddr, port: u16, key: u64, offset: u32) -> u32 {
    let v = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(fold(addr));
    hsiphash(v, key)
}

const HASH1: u64 = 2_654_435_761;
const HASH2: u64 = 2_654_446_892;

/// ip_vs_mh_permutate + ip_vs_mh_populate, literally. Returns node numbers (0 = NULL).
fn kernel_mh_table(l: &KList, size: usize, tab_bits: i32) -> Vec<usize> {
    let mut lookup = vec![0usize; size];
    // ip_vs_mh_gcd_weight
    let mut g = 0i32;
    let mut p = l.next[0];
    while p != 0 {
        let w = l.dests[p - 1].last_weight;
        if w > 0 {
            g = if g > 0 { gcd(w, g) } else { w };
        }
        p = l.next[p];
    }
    // ip_vs_mh_shift_weight
    let rshift = if g < 1 {
        0
    } else {
        let mut weight = 0;
        let mut p = l.next[0];
        while p != 0 {
            weight = weight.max(l.dests[p - 1].last_weight);
            p = l.next[p];
        }
        let mw = weight / g;
        let fls = 32 - (mw as u32).leading_zeros() as i32;
        (fls - tab_bits).max(0)
    };
    if g < 1 {
        return lookup;
    }
    struct Ds {
        skip: usize,
        perm: usize,
        turns: i32,
    }
    let mut ds: Vec<Ds> = Vec::new();
    let mut p = l.next[0];
    while p != 0 {
        let d = &l.dests[p - 1];
        let offset = mh_hashkey(d.addr, d.port, HASH1, 0) as usize % size;
        let skip = mh_hashkey(d.addr, d.port, HASH2, 0) as usize % (size - 1) + 1;
        let lw = d.last_weight;
        let t = (lw / g) >> rshift;
        ds.push(Ds {
            skip,
            perm: offset,
            turns: if t != 0 { t } else { i32::from(lw != 0) },
        });
        p = l.next[p];
    }
    let mut table = vec![false; size];
    let mut p = 0usize; // &svc->destinations
    let mut n = 0usize;
    let mut dt_count = 0;
    while n < size {
        if p == 0 {
            p = l.next[p];
        }
        let mut di = 0usize;
        while p != 0 {
            if ds[di].turns < 1 {
                p = l.next[p];
                di += 1;
                continue;
            }
            let mut c = ds[di].perm;
            while table[c] {
                ds[di].perm += ds[di].skip;
                if ds[di].perm >= size {
                    ds[di].perm -= size;
                }
                c = ds[di].perm;
            }
            table[c] = true;
            lookup[c] = p;
            n += 1;
            if n == size {
                return lookup;
            }
            dt_count += 1;
            if dt_count >= ds[di].turns {
                dt_count = 0;
                p = l.next[p];
                di += 1;
            }
        }
    }
    lookup
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// ip_vs_mh_get / ip_vs_mh_get_fallback, literally.
fn kernel_mh_get(l: &KList, lookup: &[usize], addr: IpAddr, port: u16, fallback: bool) -> usize {
    let size = lookup.len();
    let unavailable = |node: usize| l.dests[node - 1].weight <= 0;
    let ihash = mh_hashkey(addr, port, HASH1, 0) as usize % size;
    let dest = lookup[ihash];
    if dest == 0 {
        return 0;
    }
    if !unavailable(dest) {
        return dest;
    }
    if !fallback {
        return 0;
    }
    for offset in 0..size {
        let roffset = (offset + ihash) % size;
        let hash = mh_hashkey(addr, port, HASH1, roffset as u32) as usize % size;
        let dest = lookup[hash];
        if dest == 0 {
            break;
        }
        if !unavailable(dest) {
            return dest;
        }
    }
    0
}

/// ip_vs_sh_reassign, literally (256 buckets, 8 bits).
fn kernel_sh_table(l: &KList) -> Vec<usize> {
    let mut b = vec![0usize; 256];
    let mut p = 0usize;
    let empty = l.next[0] == 0;
    let mut d_count = 0;
    for bucket in &mut b {
        if empty {
            *bucket = 0;
        } else {
            if p == 0 {
                p = l.next[p];
            }
            *bucket = p;
            d_count += 1;
            if d_count >= l.dests[p - 1].weight {
                p = l.next[p];
                d_count = 0;
            }
        }
    }
    b
}

fn kernel_sh_get(l: &KList, b: &[usize], addr: IpAddr, port: u16) -> usize {
    // hash_32(val, 8) = (val * 0x61C88647) >> 24
    let h = (u32::from(port)
        .wrapping_add(fold(addr))
        .wrapping_mul(0x61c8_8647)
        >> 24) as usize
        & 255;
    let d = b[h];
    if d == 0 || l.dests[d - 1].weight <= 0 {
        0
    } else {
        d
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u8, u8),
    Edit(u8, u8),
    Del(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0u8..6).prop_map(|(a, w)| Op::Add(a, w)),
        1 => (0u8..24, 0u8..6).prop_map(|(a, w)| Op::Edit(a, w)),
        2 => (0u8..24).prop_map(Op::Del),
    ]
}

fn addr(i: u8, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            0,
            100 + u16::from(i),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i))
    }
}

fn run_history(
    kind: SchedulerKind,
    size: usize,
    fallback: bool,
    v6: bool,
    ops: &[Op],
) -> (Service, KList) {
    let vip = if v6 {
        "2001:db8::c633:6401".parse().unwrap()
    } else {
        "198.51.100.1".parse().unwrap()
    };
    let mut svc = Service::new(ServiceConfig {
        vip,
        port: 80,
        proto: IpProto::Tcp,
        scheduler: kind,
        table_size: Some(size),
        flags: SchedFlags {
            port: true,
            fallback,
        },
    })
    .unwrap();
    let mut k = KList::new();
    for o in ops {
        match *o {
            Op::Add(a, w) => {
                let ok = k.add(addr(a, v6), 80, i32::from(w));
                assert_eq!(svc.add_dest(addr(a, v6), 80, u32::from(w)).is_ok(), ok);
            }
            Op::Edit(a, w) => {
                let ok = k.edit(addr(a, v6), 80, i32::from(w));
                assert_eq!(svc.edit_dest(addr(a, v6), 80, u32::from(w)).is_ok(), ok);
            }
            Op::Del(a) => {
                let ok = k.del(addr(a, v6), 80);
                assert_eq!(svc.del_dest(addr(a, v6), 80).is_ok(), ok);
            }
        }
    }
    assert_eq!(svc.list().len(), k.count());
    (svc, k)
}

/// Maps tierlab's table (DestIds) to the reference's node numbers via addresses.
fn same_table(svc: &Service, k: &KList, kt: &[usize]) {
    let ours = svc.table();
    assert_eq!(ours.len(), kt.len());
    for (slot, (o, r)) in ours.iter().zip(kt).enumerate() {
        let o = o.map(|id| svc.dest(id).unwrap().addr);
        let r = (*r != 0).then(|| k.dests[*r - 1].addr);
        assert_eq!(o, r, "slot {slot}");
    }
}

proptest! {
    #![proptest_config(props::config(64))]

    #[test]
    fn mh_matches_the_kernel_transcription(
        ops in prop::collection::vec(op(), 1..40),
        size_idx in 0usize..5,
        fallback: bool,
        v6: bool,
        clients in prop::collection::vec((any::<u32>(), any::<u16>()), 50),
    ) {
        let size = tierlab_l4::sched::MH_PRIMES[size_idx];
        let (svc, k) = run_history(SchedulerKind::Mh, size, fallback, v6, &ops);
        let kt = kernel_mh_table(&k, size, (size_idx as i32 + 8) / 2);
        same_table(&svc, &k, &kt);
        for (a, port) in clients {
            let c: IpAddr = if v6 { Ipv6Addr::from(u128::from(a) << 64 | u128::from(a)).into() } else { Ipv4Addr::from(a).into() };
            let flow = FlowKey::new(c, svc.config().vip, IpProto::Tcp, port, 80).unwrap();
            let ours = svc.schedule(&flow).map(|id| svc.dest(id).unwrap().addr);
            let theirs = kernel_mh_get(&k, &kt, c, port, fallback);
            prop_assert_eq!(ours, (theirs != 0).then(|| k.dests[theirs - 1].addr));
        }
    }

    #[test]
    fn sh_matches_the_kernel_transcription(
        ops in prop::collection::vec(op(), 1..40),
        v6: bool,
        clients in prop::collection::vec((any::<u32>(), any::<u16>()), 50),
    ) {
        let (svc, k) = run_history(SchedulerKind::Sh, 256, false, v6, &ops);
        let kt = kernel_sh_table(&k);
        same_table(&svc, &k, &kt);
        for (a, port) in clients {
            let c: IpAddr = if v6 { Ipv6Addr::from(u128::from(a) << 32).into() } else { Ipv4Addr::from(a).into() };
            let flow = FlowKey::new(c, svc.config().vip, IpProto::Tcp, port, 80).unwrap();
            let ours = svc.schedule(&flow).map(|id| svc.dest(id).unwrap().addr);
            let theirs = kernel_sh_get(&k, &kt, c, port);
            prop_assert_eq!(ours, (theirs != 0).then(|| k.dests[theirs - 1].addr));
        }
    }
}
