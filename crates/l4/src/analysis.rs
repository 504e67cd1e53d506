//! Measurements on lookup tables: how much of a table changes when a destination is added or
//! removed, and how evenly slots are spread. Used by the property tests and by
//! `examples/l4_report.rs`, which writes docs/l4.md.
//!
//! Shares are of table **slots**: with flows hashed uniformly onto slots (what SipHash and
//! `hash_32` give), the share of slots whose destination changed is the expected share of new
//! flows remapped.

use std::net::{IpAddr, Ipv4Addr};

use crate::sched::{self, SchedDest, SchedFlags, SchedulerKind};

/// `n` test destinations 10.1.0.0+i:80, weight 1.
pub fn dests(n: usize) -> Vec<SchedDest> {
    (0..n)
        .map(|i| SchedDest {
            addr: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i as u32)),
            port: 80,
            weight: 1,
            last_weight: 1,
            overloaded: false,
        })
        .collect()
}

/// The table built from `dests` (in list order), as destination addresses per slot.
///
/// # Panics
/// When `size` is not usable by `kind` (callers pass sizes from the scheduler's own list).
pub fn table(kind: SchedulerKind, size: usize, dests: &[SchedDest]) -> Vec<Option<IpAddr>> {
    // Invariant: callers only pass table sizes the scheduler accepts.
    let mut s = sched::build(kind, Some(size), SchedFlags::default()).expect("usable table size");
    s.rebuild(dests);
    s.table()
        .into_iter()
        .map(|d| d.map(|i| dests[i].addr))
        .collect()
}

/// Share of slots whose destination differs between two tables.
pub fn changed(a: &[Option<IpAddr>], b: &[Option<IpAddr>]) -> f64 {
    let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
    n as f64 / a.len() as f64
}

/// What removing one destination does to a table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Removal {
    /// Share of slots that changed destination.
    pub moved: f64,
    /// Share of slots the removed destination held (they must move).
    pub own: f64,
    /// `moved - own`: slots of *other* destinations that moved too.
    pub extra: f64,
}

/// Removes the destination at list position `k` from `n` test destinations and measures.
pub fn remove_one(kind: SchedulerKind, size: usize, n: usize, k: usize) -> Removal {
    remove_from(kind, size, &dests(n), k)
}

/// Removes the destination at list position `k` of `all` and measures.
pub fn remove_from(kind: SchedulerKind, size: usize, all: &[SchedDest], k: usize) -> Removal {
    let before = table(kind, size, all);
    let gone = all[k].addr;
    let mut rest = all.to_vec();
    rest.remove(k);
    let after = table(kind, size, &rest);
    let moved = changed(&before, &after);
    let own = before.iter().filter(|d| **d == Some(gone)).count() as f64 / size as f64;
    Removal {
        moved,
        own,
        extra: moved - own,
    }
}

/// Removal averaged and maximised over which of the `n` destinations goes.
pub fn remove_stats(kind: SchedulerKind, size: usize, n: usize) -> (Removal, Removal) {
    let mut mean = Removal::default();
    let mut max = Removal::default();
    for k in 0..n {
        let r = remove_one(kind, size, n, k);
        mean.moved += r.moved / n as f64;
        mean.own += r.own / n as f64;
        mean.extra += r.extra / n as f64;
        max.moved = max.moved.max(r.moved);
        max.own = max.own.max(r.own);
        max.extra = max.extra.max(r.extra);
    }
    (mean, max)
}

/// Share of slots that change when an `n+1`-th destination is added to `n` (at the head of the
/// list, as the kernel adds it), and the share the newcomer takes (the minimum that must move).
pub fn add_one(kind: SchedulerKind, size: usize, n: usize) -> (f64, f64) {
    let all = dests(n + 1);
    let before = table(kind, size, &all[1..]);
    let after = table(kind, size, &all);
    let taken = after.iter().filter(|d| **d == Some(all[0].addr)).count() as f64 / size as f64;
    (changed(&before, &after), taken)
}

/// Slots per destination: (max / mean, min / mean).
pub fn balance(kind: SchedulerKind, size: usize, n: usize) -> (f64, f64) {
    let all = dests(n);
    let t = table(kind, size, &all);
    let mut count = std::collections::BTreeMap::new();
    for d in t.iter().flatten() {
        *count.entry(*d).or_insert(0usize) += 1;
    }
    let mean = size as f64 / n as f64;
    let max = count.values().copied().max().unwrap_or(0) as f64;
    let min = if count.len() < n {
        0.0
    } else {
        count.values().copied().min().unwrap_or(0) as f64
    };
    (max / mean, min / mean)
}

/// A 64-bit FNV-1a fingerprint of a table (slot → destination index), to pin tables across
/// runs and platforms.
pub fn fingerprint(table: &[Option<usize>]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for d in table {
        let v = d.map_or(u32::MAX, |i| i as u32);
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
