//! Packet-hops per second through the whole lab: clients → internet router → router →
//! director → IPIP → proxy → backend and back, scripted TCP endpoints.
//!
//! Run: `cargo bench -p tierlab --bench pipeline`. Results are reported in
//! docs/performance.md. One iteration builds the seed lab and runs a fixed workload to its end
//! (200 clients, 400 connections of 200 kB); a packet-hop is one delivery by the engine. Time is
//! the bench thread's CPU time (see `support/cpu_time.rs`).

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::Scenario;
use tierlab::lab::build::Lab;
use tierlab::wire::Instant;

fn workload() -> Scenario {
    let mut s = Scenario::default();
    s.workload.max_connections = Some(400);
    s.workload.object_bytes = 200_000;
    s.workload.stop_probability = 0.0;
    s.workload.read_interval_max_ms = 50;
    s
}

/// Runs the workload to its end; returns the packet-hops delivered.
fn run_once(s: &Scenario) -> u64 {
    let mut lab = Lab::build(s, || ScriptedStack::new(ScriptedConfig::default()))
        .expect("the seed lab builds");
    lab.start();
    lab.net.run_until(Instant::from_secs(120));
    lab.net.accounting().delivered
}

fn pipeline(c: &mut Criterion<ThreadCpuTime>) {
    let s = workload();
    let hops = run_once(&s);
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Elements(hops));
    g.bench_function("seed_lab_scripted", |b| b.iter(|| run_once(&s)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = pipeline
}
criterion_main!(benches);
