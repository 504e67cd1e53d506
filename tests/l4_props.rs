//! Properties of the schedulers and the director (published in docs/l4.md):
//! - removing one of N destinations moves only a small extra share beyond its own slots:
//!   typically (median ≤ 1.5 %, 99th percentile ≤ 3 % for `mh`) and in every case without a
//!   shared skip (`mh` ≤ 8 %, paper Maglev ≤ 2 % of the table for N = 2…32; the tail is heavy
//!   at small N, see docs/l4.md);
//! - balance for N = 13 and 100;
//! - `sh` moves far more;
//! - same inputs → same table (pinned fingerprints guard every platform);
//! - the director never panics on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[path = "common/props.rs"]
mod props;

use proptest::prelude::*;
use tierlab_l4::analysis::{changed, fingerprint, table};
use tierlab_l4::{Director, HashInput, SchedDest, SchedFlags, SchedulerKind, sched};
use tierlab_wire::Instant;

fn dest_set(addrs: &[u32]) -> Vec<SchedDest> {
    addrs
        .iter()
        .map(|a| SchedDest {
            addr: IpAddr::V4(Ipv4Addr::from(*a)),
            port: 80,
            weight: 1,
            last_weight: 1,
            overloaded: false,
        })
        .collect()
}

/// (moved, own) shares when destination `k` is removed.
fn removal(kind: SchedulerKind, m: usize, d: &[SchedDest], k: usize) -> (f64, f64) {
    let before = table(kind, m, d);
    let mut rest = d.to_vec();
    let gone = rest.remove(k).addr;
    let after = table(kind, m, &rest);
    let own = before.iter().filter(|x| **x == Some(gone)).count() as f64 / m as f64;
    (changed(&before, &after), own)
}

/// Whether no two destinations share a skip.
fn distinct_skips(kind: SchedulerKind, m: usize, d: &[SchedDest]) -> bool {
    let skips: std::collections::BTreeSet<u32> = d
        .iter()
        .map(|x| sched::offset_skip(kind, m, x.addr, x.port).unwrap().1)
        .collect();
    skips.len() == d.len()
}

fn distinct_addrs(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::btree_set(any::<u32>(), n).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(props::config(128))]

    #[test]
    fn mh_removal_moves_little_beyond_the_removed_share(addrs in distinct_addrs(2..=32), k in any::<prop::sample::Index>()) {
        let d = dest_set(&addrs);
        prop_assume!(distinct_skips(SchedulerKind::Mh, 4093, &d), "a shared skip: see shared_skip_shadowing");
        let (moved, own) = removal(SchedulerKind::Mh, 4093, &d, k.index(d.len()));
        prop_assert!(moved >= own);
        prop_assert!(moved - own <= 0.08, "extra {:.4}", moved - own);
    }

    #[test]
    fn paper_maglev_removal_moves_less(addrs in distinct_addrs(2..=32), k in any::<prop::sample::Index>()) {
        let d = dest_set(&addrs);
        prop_assume!(distinct_skips(SchedulerKind::Maglev, 65_537, &d));
        let (moved, own) = removal(SchedulerKind::Maglev, 65_537, &d, k.index(d.len()));
        prop_assert!(moved - own <= 0.02, "extra {:.4}", moved - own);
    }

    #[test]
    fn sh_removal_moves_far_more(addrs in distinct_addrs(4..=32), k in any::<prop::sample::Index>()) {
        let d = dest_set(&addrs);
        let k = k.index(d.len());
        let (sh_moved, sh_own) = removal(SchedulerKind::Sh, 256, &d, k);
        let (mh_moved, mh_own) = removal(SchedulerKind::Mh, 4093, &d, k);
        // sh refills round robin: most buckets of the *other* destinations change owner.
        prop_assert!(sh_moved - sh_own >= 0.25, "sh extra {:.3}", sh_moved - sh_own);
        prop_assert!(sh_moved - sh_own > 5.0 * (mh_moved - mh_own), "sh {sh_moved:.3} vs mh {mh_moved:.3}");
    }

    #[test]
    fn mh_fallback_always_finds_an_available_destination(
        addrs in distinct_addrs(2..=20),
        drained in prop::collection::vec(any::<bool>(), 20),
        clients in prop::collection::vec((any::<u32>(), any::<u16>()), 64),
    ) {
        let mut d = dest_set(&addrs);
        for (x, off) in d.iter_mut().zip(&drained) {
            if *off { x.weight = 0; }
        }
        let any_up = d.iter().any(|x| x.weight > 0);
        let mut s = sched::build(SchedulerKind::Mh, None, SchedFlags { port: true, fallback: true }).unwrap();
        s.rebuild(&d);
        for (a, p) in clients {
            let got = s.schedule(HashInput { addr: IpAddr::V4(Ipv4Addr::from(a)), port: p });
            prop_assert_eq!(got.is_some(), any_up);
            if let Some(i) = got { prop_assert!(d[i].weight > 0); }
        }
    }

    #[test]
    fn the_director_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), v6: bool) {
        let mut d = lab();
        let mut b = bytes;
        // Make about half of the inputs look like packets to a VIP so deeper code runs.
        if b.len() >= 40 && v6 {
            b[0] = 0x60;
            b[24..40].copy_from_slice(&"2001:db8::c633:6401".parse::<Ipv6Addr>().unwrap().octets());
        } else if b.len() >= 20 {
            b[0] = 0x45;
            b[16..20].copy_from_slice(&[198, 51, 100, 1]);
        }
        let _ = d.handle_packet(Instant::ZERO, &b);
        d.handle_timeout(Instant::from_secs(3600));
    }
}

fn lab() -> Director {
    let proxies: Vec<(Ipv4Addr, Ipv6Addr)> = (1..=13u8)
        .map(|i| {
            (
                Ipv4Addr::new(192, 0, 2, 100 + i),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(i)),
            )
        })
        .collect();
    Director::lab(
        Ipv4Addr::new(192, 0, 2, 11),
        "2001:db8:2::11".parse().unwrap(),
        &proxies,
    )
    .unwrap()
}

fn balance(kind: SchedulerKind, m: usize, n: u32) -> (f64, f64) {
    let d = dest_set(&(0..n).map(|i| 0xc000_0264 + i * 7).collect::<Vec<_>>());
    let t = table(kind, m, &d);
    let mut count = std::collections::BTreeMap::new();
    for x in t.iter().flatten() {
        *count.entry(*x).or_insert(0usize) += 1;
    }
    let mean = m as f64 / f64::from(n);
    let max = *count.values().max().unwrap() as f64;
    let min = if count.len() < n as usize {
        0.0
    } else {
        *count.values().min().unwrap() as f64
    };
    (max / mean, min / mean)
}

/// Found by the property test above: the addresses 96.121.145.236 and 234.2.254.150 share
/// the `mh` skip 3659 (M = 4,093), so their preference lists are translates of each other and each shadows the other. Removing a *third* destination then
/// reshuffles a large part of their slots: far more than the removed one's own share. The
/// kernel does exactly this; about 1 pair in 4,092 shares a skip, so with 13 proxies the
/// chance that some pair does is about 1.9 %.
#[test]
fn shared_skip_shadowing() {
    let d = dest_set(&[0, 1_618_579_948, 3_926_064_790]);
    assert!(!distinct_skips(SchedulerKind::Mh, 4093, &d));
    let (moved, own) = removal(SchedulerKind::Mh, 4093, &d, 0);
    assert!(moved - own > 0.25, "extra {:.4}", moved - own);
    // The two shadowing destinations.
    let (skip_a, skip_b) = (
        sched::offset_skip(SchedulerKind::Mh, 4093, d[1].addr, 80)
            .unwrap()
            .1,
        sched::offset_skip(SchedulerKind::Mh, 4093, d[2].addr, 80)
            .unwrap()
            .1,
    );
    assert_eq!(skip_a, skip_b);
}

/// The tail of the extra share is heavy at small N: this set of three (no shared skip) moves
/// 4.98 % beyond the removed destination's own third. It stays within the per-case bound.
#[test]
fn small_sets_have_a_heavy_tail() {
    let d = dest_set(&[164_651_197, 164_651_198, 1_353_029_664]);
    assert!(distinct_skips(SchedulerKind::Mh, 4093, &d));
    let (moved, own) = removal(SchedulerKind::Mh, 4093, &d, 0);
    let extra = moved - own;
    assert!(extra > 0.045 && extra <= 0.08, "extra {extra:.4}");
}

/// The distribution of the extra share over 300 random destination sets (no shared skip)
/// for the lab's sizes: median and 99th percentile, as docs/l4.md states them.
#[test]
fn mh_extra_share_distribution() {
    use rand::Rng;
    let mut rng = tierlab_wire::rng::seeded(4093);
    for n in [3usize, 7, 13] {
        let mut extras = Vec::new();
        while extras.len() < 300 {
            let addrs: Vec<u32> = (0..n).map(|_| rng.random()).collect();
            let d = dest_set(&addrs);
            if !distinct_skips(SchedulerKind::Mh, 4093, &d) || {
                let mut a = addrs.clone();
                a.sort_unstable();
                a.dedup();
                a.len() != n
            } {
                continue;
            }
            let (moved, own) = removal(SchedulerKind::Mh, 4093, &d, rng.random_range(0..n));
            extras.push(moved - own);
        }
        extras.sort_by(f64::total_cmp);
        let median = extras[150];
        let p99 = extras[296];
        assert!(median <= 0.015, "N={n} median extra {median:.4}");
        assert!(p99 <= 0.03, "N={n} p99 extra {p99:.4}");
    }
}

#[test]
fn balance_for_13_and_100_destinations() {
    // mh at M = 4093: every destination within a slot or two of the mean.
    let (max, min) = balance(SchedulerKind::Mh, 4093, 13);
    assert!(max <= 1.003 && min >= 0.996, "mh N=13 {max} {min}");
    let (max, min) = balance(SchedulerKind::Mh, 4093, 100);
    assert!(max <= 1.03 && min >= 0.95, "mh N=100 {max} {min}");
    // The paper's table: M > 100 N keeps shares within 1 %.
    let (max, min) = balance(SchedulerKind::Maglev, 65_537, 100);
    assert!(max <= 1.01 && min >= 0.99, "maglev N=100 {max} {min}");
    // sh: 256 buckets cannot split evenly among 100.
    let (max, _) = balance(SchedulerKind::Sh, 256, 100);
    assert!(max > 1.1, "sh N=100 {max}");
}

#[test]
fn same_inputs_same_tables_pinned() {
    let proxies = dest_set(
        &(0..13)
            .map(|i| u32::from(Ipv4Addr::new(192, 0, 2, 101 + i)))
            .collect::<Vec<_>>(),
    );
    let fp = |kind, m| {
        let mut s = sched::build(kind, Some(m), SchedFlags::default()).unwrap();
        s.rebuild(&proxies);
        let a = fingerprint(&s.table());
        s.rebuild(&proxies);
        assert_eq!(
            a,
            fingerprint(&s.table()),
            "rebuild is a pure function of the list"
        );
        a
    };
    // Pinned: if one of these changes, every published mh/sh/maglev number changes with it.
    assert_eq!(fp(SchedulerKind::Mh, 4093), PINNED_MH);
    assert_eq!(fp(SchedulerKind::Sh, 256), PINNED_SH);
    assert_eq!(fp(SchedulerKind::Maglev, 65_537), PINNED_MAGLEV);
}

const PINNED_MH: u64 = 15_659_427_529_122_165_838;
const PINNED_SH: u64 = 10_928_966_385_138_119_265;
const PINNED_MAGLEV: u64 = 7_027_025_054_269_821_401;
