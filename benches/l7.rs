//! Speed and memory of the L7 tier (`tierlab-l7`), per TCP kind.
//!
//! - `l7/conn_through_proxy/{scripted,smoltcp}`: whole connections through one proxy — client
//!   SYN tunnelled (IPIP) to the proxy, handshake, `GET /10000`, PROXY header and request to
//!   the backend, 10 kB response relayed, both closes — in batches of 1,000 concurrent
//!   connections, all three hosts' work included (client, proxy, backend), on long-lived
//!   hosts (61 s of virtual time pass after each batch, so TIME-WAIT entries expire as in a
//!   long run). Throughput is in connections.
//! - `l7/proxy_only/{scripted,smoltcp}`: the proxy's share: every packet and timer the proxy
//!   got during five batches is recorded, then replayed into a fresh, identical proxy (the
//!   run is deterministic, so the replay is the same work), so the figure reads as
//!   connections per second per proxy core. The first batch warms the fresh proxy outside
//!   the timing (it allocates what a running proxy already has: smoltcp's sockets with their
//!   zeroed buffers, the scripted stack's spare rings, the allocator's pages); the other four
//!   are timed, so the figure is the proxy's steady state, as `conn_through_proxy`'s is.
//! - Time is the bench thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), as in benches/ecmp.rs.
//! - Memory per open connection is printed once per kind (not a criterion measurement): the
//!   stacks' own accounting (`TcpStack::memory_bytes`) with 20,000 established idle
//!   connections, and the process's resident-set growth for the same (from
//!   `/proc/self/statm`, Linux only).

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::ThreadCpuTime;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tierlab::ipip::{EncapParams, encapsulate};
use tierlab::l7::{
    BackendConfig, BackendServer, Proxy, ProxyConfig, ScriptedConfig, ScriptedStack, SmolConfig,
    SmolStack, TcpEvent, TcpStack,
};
use tierlab::wire::{Instant, Packet, Verify};

const BATCH: usize = 1_000;

const SIZE: u64 = 10_000;

/// A minimal client: opens connections, sends the request, reads the whole response, closes.
struct Driver<S: TcpStack> {
    client: S,
    proxy: Proxy<S>,
    backend: BackendServer<S>,
    tunnel: IpAddr,
    now: Instant,
}

fn setup<S: TcpStack>(mut make: impl FnMut() -> S) -> Driver<S> {
    let mut pc = ProxyConfig::lab(1, 1);
    pc.check.enabled = false;
    pc.servers[0].agent_port = None;
    let proxy = Proxy::new(pc, make()).unwrap();
    let mut bc = BackendConfig::lab(1);
    bc.agent_port = None;
    let backend = BackendServer::new(bc, make()).unwrap();
    let mut client = make();
    for k in 1..=200u8 {
        client.add_address(IpAddr::from([203, 0, 113, k]));
    }
    let tunnel = proxy.config().tunnel_addr;
    Driver {
        client,
        proxy,
        backend,
        tunnel,
        now: Instant::from_millis(1),
    }
}

/// What the proxy was given, in order: a packet, or a timer call. The packets' bytes lie
/// back to back in one buffer, read front to back as a NIC's receive ring would be (one
/// allocation per recorded packet would make every replayed packet a cache miss, a cost of
/// the recording, not of the proxy).
#[derive(Default)]
struct Trace {
    /// Time of each input and the end of its bytes in `bytes` (a timer call has none).
    inputs: Vec<(Instant, Option<usize>)>,
    bytes: Vec<u8>,
    /// Number of inputs at the end of each recorded batch.
    batch_ends: Vec<usize>,
}

impl Trace {
    fn push(&mut self, now: Instant, packet: Option<&[u8]>) {
        let end = packet.map(|p| {
            self.bytes.extend_from_slice(p);
            self.bytes.len()
        });
        self.inputs.push((now, end));
    }

    /// Packets among the inputs `range`.
    fn packets(&self, range: std::ops::Range<usize>) -> usize {
        self.inputs[range].iter().filter(|i| i.1.is_some()).count()
    }
}

/// Runs `BATCH` connections to completion, then lets 61 s of virtual time pass (TIME-WAIT
/// entries expire, as in a long run), recording the proxy's inputs into `trace`.
fn run<S: TcpStack>(d: &mut Driver<S>, mut trace: Option<&mut Trace>) {
    let vip = SocketAddr::new(IpAddr::from([198, 51, 100, 1]), 80);
    let req = tierlab::l7::http::get_request(SIZE, vip.ip());
    let mut now = d.now;
    for i in 0..BATCH {
        let src = SocketAddr::new(
            IpAddr::from([203, 0, 113, 1 + (i % 200) as u8]),
            33_000 + (i / 200) as u16,
        );
        d.client.connect(now, src, vip).unwrap();
    }
    let enc = |inner: &[u8], tunnel: IpAddr| {
        encapsulate(
            inner,
            &EncapParams::ipvs(IpAddr::from([192, 0, 2, 4]), tunnel, false, 0),
        )
        .unwrap()
    };
    let mut to_proxy: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = Vec::new();
    let mut done = 0;
    let end = now + tierlab::wire::Duration::from_secs(61);
    loop {
        let mut moved = false;
        while let Some(p) = d.client.poll_transmit() {
            to_proxy.push_back(enc(&p, d.tunnel));
            moved = true;
        }
        while let Some(p) = d.backend.poll_transmit() {
            to_proxy.push_back(p);
            moved = true;
        }
        while let Some(p) = to_proxy.pop_front() {
            d.proxy.handle_packet(now, &p);
            if let Some(t) = trace.as_deref_mut() {
                t.push(now, Some(&p));
            }
            tierlab::wire::pool::give(p);
        }
        let mut out = Vec::new();
        while let Some(p) = d.proxy.poll_transmit() {
            out.push(p);
        }
        for p in out {
            moved = true;
            let dst = Packet::parse_with(&p, Verify::Nothing).unwrap().dst();
            if dst.is_ipv6() {
                let _ = d.backend.handle_packet(now, &p);
            } else {
                let _ = d.client.handle_packet(now, &p);
            }
            tierlab::wire::pool::give(p);
        }
        while let Some(ev) = d.client.poll_event() {
            match ev {
                TcpEvent::Connected { id } => {
                    let _ = d.client.send(now, id, req.as_bytes());
                }
                TcpEvent::Readable { id } | TcpEvent::PeerClosed { id } => {
                    buf.clear();
                    let n = d.client.recv_queue(id);
                    let _ = d.client.recv(now, id, &mut buf, n);
                    if d.client.peer_closed(id) {
                        let _ = d.client.close(now, id);
                    }
                }
                TcpEvent::Closed { .. } => done += 1,
                _ => {}
            }
        }
        if !moved {
            // Quiet: advance to the next timer (delayed ACKs, then TIME-WAIT expiry).
            let next = [
                d.client.poll_timeout(),
                d.proxy.poll_timeout(),
                d.backend.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = next.filter(|t| *t <= end) else {
                break;
            };
            now = now.max(t);
            d.client.handle_timeout(now);
            d.proxy.handle_timeout(now);
            if let Some(t) = trace.as_deref_mut() {
                t.push(now, None);
            }
            d.backend.handle_timeout(now);
        }
    }
    d.now = end;
    assert_eq!(done, BATCH, "every connection completed");
    assert_eq!(d.proxy.sessions(), 0);
}

/// Feeds the inputs `range` of a recorded trace to a proxy that has had the inputs before
/// it; returns the packets it sent (a checksum of work). As in a lab run, sent packets'
/// buffers go back to the packet pool and the proxy's events are taken.
fn replay<S: TcpStack>(
    proxy: &mut Proxy<S>,
    trace: &Trace,
    range: std::ops::Range<usize>,
) -> usize {
    let mut sent = 0;
    let mut start = trace.inputs[..range.start]
        .iter()
        .rev()
        .find_map(|i| i.1)
        .unwrap_or(0);
    for &(now, end) in &trace.inputs[range] {
        match end {
            Some(end) => {
                proxy.handle_packet(now, &trace.bytes[start..end]);
                start = end;
            }
            None => proxy.handle_timeout(now),
        }
        while let Some(p) = proxy.poll_transmit() {
            sent += 1;
            tierlab::wire::pool::give(p);
        }
        while proxy.poll_event().is_some() {}
    }
    sent
}

fn scripted() -> ScriptedStack {
    ScriptedStack::new(ScriptedConfig {
        verify_checksums: true,
        ..ScriptedConfig::default()
    })
}

fn smol() -> SmolStack {
    SmolStack::new(SmolConfig::default())
}

/// Batches recorded for `proxy_only`: the first warms the fresh proxy (untimed), the others
/// are timed.
const REPLAY_BATCHES: usize = 5;

/// The benchmark filter given on the command line, if any (criterion's positional argument).
fn filter() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--color",
        "--output-format",
        "--plotting-backend",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Whether the benchmark `id` may run under the command line's filter: the setup of a
/// benchmark that will not run (recording a trace takes seconds) is skipped. A filter with
/// regular-expression syntax is not interpreted: everything runs, as before.
fn selected(id: &str) -> bool {
    match filter() {
        Some(f) if f.chars().all(|c| c.is_alphanumeric() || "/_-".contains(c)) => id.contains(&f),
        _ => true,
    }
}

fn bench_kind<S: TcpStack>(c: &mut Criterion<ThreadCpuTime>, name: &str, make: fn() -> S) {
    if selected(&format!("l7/conn_through_proxy/{name}")) {
        conn_through_proxy(c, name, make);
    }
    if selected(&format!("l7/proxy_only/{name}")) {
        proxy_only(c, name, make);
    }
}

fn conn_through_proxy<S: TcpStack>(c: &mut Criterion<ThreadCpuTime>, name: &str, make: fn() -> S) {
    let mut g = c.benchmark_group("l7/conn_through_proxy");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    let mut d = setup(make);
    run(&mut d, None);
    g.bench_function(name, |b| b.iter(|| run(&mut d, None)));
    g.finish();
}

fn proxy_only<S: TcpStack>(c: &mut Criterion<ThreadCpuTime>, name: &str, make: fn() -> S) {
    let mut g = c.benchmark_group("l7/proxy_only");
    let timed = (REPLAY_BATCHES - 1) * BATCH;
    g.throughput(Throughput::Elements(timed as u64));
    g.sample_size(10);
    let mut trace = Trace::default();
    let mut d = setup(make);
    for _ in 0..REPLAY_BATCHES {
        run(&mut d, Some(&mut trace));
        trace.batch_ends.push(trace.inputs.len());
    }
    let (warm, all) = (trace.batch_ends[0], trace.inputs.len());
    // A proxy that has taken the warm-up batch.
    let warmed = || {
        let mut p = setup(make).proxy;
        replay(&mut p, &trace, 0..warm);
        p
    };
    let expected = replay(&mut warmed(), &trace, warm..all);
    println!(
        "l7/{name}: per connection the proxy takes {:.1} packets and sends {:.1}",
        trace.packets(warm..all) as f64 / timed as f64,
        expected as f64 / timed as f64
    );
    g.bench_function(name, |b| {
        b.iter_batched(
            warmed,
            |mut p| {
                assert_eq!(replay(&mut p, &trace, warm..all), expected);
                p
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn rss_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Memory per open (established, idle) connection, client side of a stack.
fn memory<S: TcpStack>(name: &str, make: fn() -> S) {
    const N: usize = 20_000;
    let before = rss_bytes();
    let mut a = make();
    let mut b = make();
    let server: IpAddr = IpAddr::from([198, 51, 100, 1]);
    b.add_address(server);
    b.listen(SocketAddr::new(server, 80)).unwrap();
    for k in 1..=200u8 {
        a.add_address(IpAddr::from([203, 0, 113, k]));
    }
    let now = Instant::from_millis(1);
    for i in 0..N {
        let src = SocketAddr::new(
            IpAddr::from([203, 0, 113, 1 + (i % 200) as u8]),
            33_000 + (i / 200) as u16,
        );
        a.connect(now, src, SocketAddr::new(server, 80)).unwrap();
        loop {
            let mut moved = false;
            while let Some(p) = a.poll_transmit() {
                let _ = b.handle_packet(now, &p);
                moved = true;
            }
            while let Some(p) = b.poll_transmit() {
                let _ = a.handle_packet(now, &p);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
    let after = rss_bytes();
    let per_side = a.memory_bytes() / N;
    let rss = match (before, after) {
        (Some(x), Some(y)) => format!("{} B", y.saturating_sub(x) / (2 * N)),
        _ => "n/a".to_owned(),
    };
    println!(
        "l7/memory_per_connection/{name}: accounted {per_side} B per endpoint; RSS growth {rss} per endpoint ({N} idle established connections, both ends in one process)"
    );
    assert_eq!(a.connections(), N);
    assert_eq!(b.connections(), N);
}

fn benches(c: &mut Criterion<ThreadCpuTime>) {
    // Printed once, and only when the memory "bench" is selected (a filter skips it).
    c.bench_function("l7/memory_per_connection", |b| {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            memory("scripted", scripted);
            memory("smoltcp", smol);
        });
        b.iter(|| 0);
    });
    bench_kind(c, "scripted", scripted);
    bench_kind(c, "smoltcp", smol);
}

criterion_group! {
    name = l7;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = benches
}
criterion_main!(l7);
