//! Packet-layer speed: build and parse an IPv4 TCP SYN, encapsulate and decapsulate it.
//!
//! Run: `cargo bench --bench wire`. Results are reported in docs/performance.md. Time is the
//! bench thread's CPU time (see `support/cpu_time.rs`).

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tierlab::ipip::{EncapParams, TunnelEndpoint, encap::encapsulate_into};
use tierlab::wire::{IpView, Ipv4Repr, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq};

fn syn() -> (PacketBuilder, TcpRepr) {
    let b = PacketBuilder::new(
        "203.0.113.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    )
    .unwrap();
    let t = TcpRepr {
        sport: 40_000,
        dport: 80,
        seq: TcpSeq(1_000),
        flags: TcpFlags::SYN,
        window: 64_240,
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        ..TcpRepr::default()
    };
    (b, t)
}

fn wire(c: &mut Criterion<ThreadCpuTime>) {
    let (b, t) = syn();
    let bytes = b.tcp(&t, &[]).unwrap();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(128);
    g.bench_function("build_syn_v4", |bench| {
        bench.iter(|| {
            b.tcp_into(black_box(&t), &[], &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("parse_syn_v4_verified", |bench| {
        bench.iter(|| black_box(Packet::parse(black_box(&bytes), true).unwrap().flow_key()))
    });
    g.bench_function("parse_syn_v4_headers", |bench| {
        bench.iter(|| black_box(Packet::parse(black_box(&bytes), false).unwrap().flow_key()))
    });
    g.bench_function("parse_tcp_ipv4_view_fields", |bench| {
        bench.iter(|| {
            let v = IpView::new_checked(black_box(&bytes), true).unwrap();
            let t = v.tcp().unwrap();
            black_box((v.proto(), t.sport(), t.dport(), t.flags(), t.seq(), t.ack()))
        })
    });
    g.bench_function("parse_tcp_ipv4_view_verified", |bench| {
        bench.iter(|| {
            let v = IpView::new_checked(black_box(&bytes), true).unwrap();
            let t = v.tcp().unwrap();
            black_box((v.flow_key(), t.flags(), t.seq()))
        })
    });
    g.bench_function("parse_ipv4_header", |bench| {
        bench.iter(|| black_box(Ipv4Repr::parse(black_box(&bytes), false).unwrap()))
    });
    g.bench_function("build_and_parse_syn_v4", |bench| {
        bench.iter(|| {
            b.tcp_into(black_box(&t), &[], &mut buf).unwrap();
            black_box(Packet::parse(&buf, true).unwrap().flow_key())
        })
    });

    let director: IpAddr = "192.0.2.4".parse().unwrap();
    let proxy: IpAddr = "192.0.2.101".parse().unwrap();
    let params = EncapParams::ipvs(director, proxy, false, 7);
    let endpoint = TunnelEndpoint::new(proxy, ["198.51.100.1".parse().unwrap()], 1500, false);
    let mut outer = Vec::with_capacity(128);
    g.bench_function("encap_v4", |bench| {
        bench.iter(|| {
            encapsulate_into(black_box(&bytes), &params, &mut outer).unwrap();
            black_box(outer.len())
        })
    });
    encapsulate_into(&bytes, &params, &mut outer).unwrap();
    g.bench_function("decap_v4_verified", |bench| {
        bench.iter(|| black_box(endpoint.decap(black_box(&outer)).unwrap().inner.len()))
    });
    let mut o2 = Vec::with_capacity(128);
    g.bench_function("encap_decap_v4", |bench| {
        bench.iter(|| {
            encapsulate_into(black_box(&bytes), &params, &mut o2).unwrap();
            black_box(endpoint.decap(&o2).unwrap().inner.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = wire
}
criterion_main!(benches);
