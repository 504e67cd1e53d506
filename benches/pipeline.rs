//! Packet-hops per second through the whole lab: clients → internet router → router →
//! director → IPIP → proxy → backend and back, scripted TCP endpoints.
//!
//! Run: `cargo bench -p tierlab --bench pipeline`. Results are reported in
//! docs/performance.md. One iteration runs a fixed workload to its end on a freshly built
//! seed lab (200 clients, 400 connections of 200 kB; building the lab and dropping it are not
//! timed); a packet-hop is one delivery by the engine. Time is the bench thread's CPU time
//! (see `support/cpu_time.rs`).

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
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

/// The seed lab, built and not yet started (building is setup, not measured: Maglev tables,
/// routes, 200 client addresses).
fn build(s: &Scenario) -> Lab {
    Lab::build(s, || ScriptedStack::new(ScriptedConfig::default())).expect("the seed lab builds")
}

/// Runs the workload to its end; returns the lab, so that tearing it down (freeing every
/// buffer) happens after the measurement, as building it happens before.
fn run_once(mut lab: Lab) -> Lab {
    lab.start();
    lab.net.run_until(Instant::from_secs(120));
    lab
}

fn pipeline(c: &mut Criterion<ThreadCpuTime>) {
    let s = workload();
    let hops = run_once(build(&s)).net.accounting().delivered;
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Elements(hops));
    g.bench_function("seed_lab_scripted", |b| {
        b.iter_batched(|| build(&s), run_once, BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = pipeline
}
criterion_main!(benches);
