//! tierlab-l4 benches: table builds (`mh`, the paper's Maglev, and the crates.io `maglev` crate
//! on the very same destinations), lookups over a million random client address/port pairs,
//! and the connection table at one million entries.
//!
//! Run: `cargo bench -p tierlab --bench scheduler`. Medians are copied into
//! docs/performance.md (## tierlab-l4) with the machine they came from.
//!
//! Time is the bench thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`): the 2 cores are shared
//! with other builds and benches, and time spent descheduled is not the cost of a build or a
//! lookup. Cache and memory-bandwidth contention from neighbours still shows.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use maglev::ConsistentHasher;
use tierlab_l4::sched::addr_fold;
use tierlab_l4::siphash::hsiphash_u32;
use tierlab_l4::{
    Conn, ConnKey, ConnState, ConnTable, DestId, HashInput, Maglev, Mh, SchedDest, SchedFlags,
    Scheduler, ServiceId, TcpState,
};
use tierlab_wire::{FlowKey, Instant, IpProto};

/// SplitMix64: a fixed, portable input generator for the benches (no OS entropy).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const SIZES: [u32; 3] = [13, 100, 1000];
const LOOKUPS: usize = 1_000_000;
const PAPER_M: usize = 65_537;

fn dests(n: u32) -> Vec<SchedDest> {
    (0..n)
        .map(|i| SchedDest {
            addr: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)),
            port: 80,
            weight: 1,
            last_weight: 1,
            overloaded: false,
        })
        .collect()
}

fn inputs() -> Vec<HashInput> {
    let mut r = SplitMix(42);
    (0..LOOKUPS)
        .map(|_| {
            let v = r.next();
            HashInput {
                addr: IpAddr::V4(Ipv4Addr::from(v as u32)),
                port: (v >> 32) as u16,
            }
        })
        .collect()
}

fn builds(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("mh_build");
    for n in SIZES {
        let d = dests(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &d, |b, d| {
            b.iter(|| {
                let mut mh = Mh::new(4093, SchedFlags::default()).expect("kernel size");
                mh.rebuild(black_box(d));
                mh
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("maglev_build");
    for n in SIZES {
        let d = dests(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &d, |b, d| {
            b.iter(|| {
                let mut t = Maglev::new(PAPER_M, SchedFlags::default()).expect("prime");
                t.rebuild(black_box(d));
                t
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("maglev_crate_build");
    g.sample_size(10);
    for n in SIZES {
        let nodes: Vec<(IpAddr, u16)> = dests(n).iter().map(|d| (d.addr, d.port)).collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &nodes, |b, nodes| {
            b.iter(|| maglev::Maglev::with_capacity(black_box(nodes.clone()), PAPER_M));
        });
    }
    g.finish();
}

fn lookups(c: &mut Criterion<ThreadCpuTime>) {
    let input = inputs();
    let d = dests(13);
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.sample_size(20);

    g.bench_function("siphash_of_key", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for i in &input {
                acc ^= hsiphash_u32(
                    u32::from(i.port).wrapping_add(addr_fold(i.addr)),
                    tierlab_l4::sched::MH_HASH1,
                );
            }
            acc
        });
    });

    let mut mh = Mh::new(
        4093,
        SchedFlags {
            port: true,
            fallback: false,
        },
    )
    .expect("kernel size");
    mh.rebuild(&d);
    g.bench_function("mh_lookup", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for i in &input {
                acc ^= mh.schedule(*i).unwrap_or(usize::MAX);
            }
            acc
        });
    });

    let mut paper = Maglev::new(
        PAPER_M,
        SchedFlags {
            port: true,
            fallback: false,
        },
    )
    .expect("prime");
    paper.rebuild(&d);
    g.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for i in &input {
                acc ^= paper.schedule(*i).unwrap_or(usize::MAX);
            }
            acc
        });
    });

    let nodes: Vec<(IpAddr, u16)> = d.iter().map(|d| (d.addr, d.port)).collect();
    let crate_table = maglev::Maglev::with_capacity(nodes, PAPER_M);
    g.bench_function("maglev_crate_lookup", |b| {
        b.iter(|| {
            let mut acc = 0u16;
            for i in &input {
                acc ^= crate_table.get(&(i.addr, i.port)).map_or(0, |n| n.1);
            }
            acc
        });
    });
    g.finish();
}

fn key(r: &mut SplitMix) -> ConnKey {
    let v = r.next();
    ConnKey::from_flow(&FlowKey::v4(
        Ipv4Addr::from(v as u32),
        Ipv4Addr::new(198, 51, 100, 1 + (v >> 62) as u8),
        IpProto::Tcp,
        (v >> 32) as u16,
        80,
    ))
}

fn conn(key: ConnKey) -> Conn {
    Conn {
        key,
        service: ServiceId(0),
        dest: DestId(0),
        state: ConnState::Tcp(TcpState::Established),
        expires: Instant::from_secs(900),
        packets: 0,
    }
}

fn conntable(c: &mut Criterion<ThreadCpuTime>) {
    const N: usize = 1_000_000;
    let mut r = SplitMix(7);
    let keys: Vec<ConnKey> = (0..N).map(|_| key(&mut r)).collect();
    let mut table = ConnTable::with_capacity(N + N / 10);
    for k in &keys {
        table.insert(conn(*k));
    }
    // Look keys up in an order unrelated to insertion.
    let mut order: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        order.swap(i, (r.next() % (i as u64 + 1)) as usize);
    }
    let hits: Vec<ConnKey> = order.iter().map(|i| keys[*i]).collect();
    let misses: Vec<ConnKey> = (0..N).map(|_| key(&mut r)).collect();
    let fresh: Vec<ConnKey> = (0..N / 10).map(|_| key(&mut r)).collect();

    let mut g = c.benchmark_group("conntable");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("conntable_hit", |b| {
        b.iter(|| hits.iter().filter(|k| table.lookup(k).is_some()).count());
    });
    g.bench_function("conntable_miss", |b| {
        b.iter(|| misses.iter().filter(|k| table.lookup(k).is_some()).count());
    });
    g.throughput(Throughput::Elements(fresh.len() as u64));
    g.bench_function("conntable_insert", |b| {
        b.iter_batched_ref(
            || {
                let mut t = table.clone();
                t.reserve(fresh.len());
                t
            },
            |t| {
                for k in &fresh {
                    t.insert(conn(*k));
                }
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = builds, lookups, conntable
}
criterion_main!(benches);
