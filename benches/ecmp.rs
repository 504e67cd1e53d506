//! ECMP speed: multipath hash + next-hop selection per flow, as a router does for each packet.
//!
//! Run: `cargo bench -p tierlab --bench ecmp`. Results are reported in docs/performance.md.
//! Each iteration handles 1,024 distinct flows (throughput in flows/s), so the hash cannot be
//! hoisted out of the loop.
//!
//! Time is the benchmark thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall-clock
//! time: this project's machines have 2 cores shared by several builds and benches, and time
//! spent descheduled would otherwise be counted as the cost of a selection. The figure is the
//! cost on one core (cache and SMT contention from neighbours still shows).

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::Rng;
use tierlab::ecmp::{
    Algorithm, HashConfig, HashFields, HashInput, HashSeed, MultipathHasher, NextHop, NextHopGroup,
    Policy, Prefix, ResilientParams, Router,
};
use tierlab::wire::rng::seeded;
use tierlab::wire::{FlowKey, Instant, IpProto};

const N: usize = 1024;

fn flows(v4: bool) -> Vec<HashInput> {
    let mut rng = seeded(7);
    (0..N)
        .map(|_| {
            let (sp, dp) = (rng.random(), rng.random());
            let f = if v4 {
                FlowKey::v4(
                    Ipv4Addr::from(rng.random::<u32>()),
                    Ipv4Addr::from(rng.random::<u32>()),
                    IpProto::Tcp,
                    sp,
                    dp,
                )
            } else {
                FlowKey::v6(
                    Ipv6Addr::from(rng.random::<u128>()),
                    Ipv6Addr::from(rng.random::<u128>()),
                    IpProto::Tcp,
                    sp,
                    dp,
                    rng.random_range(0..1 << 20),
                )
            };
            HashInput::flow(f)
        })
        .collect()
}

fn group(alg: Algorithm, n: u32) -> NextHopGroup {
    NextHopGroup::new(alg, (0..n).map(NextHop::new).collect(), Instant::ZERO).unwrap()
}

fn ecmp(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("ecmp");
    g.throughput(Throughput::Elements(N as u64));
    let cfg = HashConfig::new(
        Policy::L4,
        HashFields::DEFAULT,
        HashSeed::Fixed(0x1234_5678),
    );
    let hasher = MultipathHasher::new(cfg);
    for (name, v4) in [("v4", true), ("v6", false)] {
        let inputs = flows(v4);
        // Hash (a router's prepared hasher) + select on a bare group.
        let grp = group(Algorithm::HashThreshold, 7);
        g.bench_function(format!("hash_select_policy1_{name}"), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for i in &inputs {
                    acc += grp.select(hasher.hash(black_box(i)));
                }
                acc
            });
        });
        // Through a Router: FIB lookup (one default route) + hash + select.
        let mut r = Router::new(cfg);
        r.add_route(
            Prefix::default_route(v4),
            group(Algorithm::HashThreshold, 7),
        );
        g.bench_function(format!("router_select_policy1_{name}"), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for i in &inputs {
                    acc += r.select(black_box(i)).map_or(0, |s| s.index);
                }
                acc
            });
        });
    }
    let inputs = flows(true);
    let res = group(Algorithm::Resilient(ResilientParams::default()), 7);
    g.bench_function("hash_select_policy1_v4_resilient", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for i in &inputs {
                acc += res.select(hasher.hash(black_box(i)));
            }
            acc
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = ecmp
}
criterion_main!(benches);
