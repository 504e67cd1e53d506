//! The two TCP kinds on the same workload must agree: a property test runs a small lab
//! (client, director, two proxies, two backends) once with scripted TCP and once with smoltcp,
//! with and without a disruption (every flow re-steered to the other proxy mid-transfer, or a
//! backend lost), and compares every connection's outcome. A second test hands a pcap of each
//! kind to tcpdump, which must decode every packet cleanly.

mod common;
#[path = "common/props.rs"]
mod props;

use std::net::SocketAddr;

use proptest::prelude::*;
use tierlab::l7::client::Outcome;
use tierlab::l7::{
    ClientConfig, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpStack, Testbed,
};
use tierlab::wire::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Disruption {
    None,
    Resteer,
    BackendLost,
}

fn run<S: TcpStack>(
    make: impl FnMut() -> S,
    seed: u64,
    n: u64,
    size: u64,
    d: Disruption,
) -> Vec<(SocketAddr, SocketAddr, Outcome, Option<u64>)> {
    let mut c = ClientConfig::lab();
    c.parallel = n as usize;
    c.max_connections = Some(n);
    c.object_size = size;
    c.stop_probability = 0.0;
    let mut b = Testbed::new(2, 2, c, Duration::from_micros(200), seed, make, |_| {}).unwrap();
    b.start();
    b.run_until(Instant::from_millis(1_000));
    match d {
        Disruption::None => {}
        Disruption::Resteer => {
            let flows: Vec<_> = b.flows.iter().map(|(f, p)| (*f, *p)).collect();
            for (f, p) in flows {
                b.flows.insert(f, 1 - p);
            }
        }
        Disruption::BackendLost => {
            b.backends.truncate(1);
        }
    }
    b.run_until(Instant::from_secs(200));
    let mut out: Vec<_> = b
        .client
        .take_records()
        .into_iter()
        .map(|r| {
            let bytes = (r.outcome == Outcome::Completed).then_some(r.bytes);
            (r.src, r.vip, r.outcome, bytes)
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(props::config(12))]

    #[test]
    fn scripted_and_smoltcp_agree(
        seed in any::<u64>(),
        n in 1u64..=5,
        size in 200_000u64..600_000,
        d in prop_oneof![Just(Disruption::None), Just(Disruption::Resteer), Just(Disruption::BackendLost)],
    ) {
        let a = run(|| ScriptedStack::new(ScriptedConfig::default()), seed, n, size, d);
        let b = run(|| SmolStack::new(SmolConfig::default()), seed, n, size, d);
        prop_assert_eq!(a.len() as u64, n);
        prop_assert_eq!(&a, &b);
        let expected = |o: &Outcome, bytes: Option<u64>| match d {
            Disruption::None => *o == Outcome::Completed && bytes == Some(size),
            Disruption::Resteer => matches!(o, Outcome::Reset { by: Some(100 | 101) }),
            Disruption::BackendLost => matches!(o, Outcome::Completed | Outcome::TimedOut),
        };
        prop_assert!(a.iter().all(|x| expected(&x.2, x.3)), "{:?}: {:?}", d, a);
    }
}

fn tcpdump_clean(pcap: &[u8], label: &str) {
    let records = tierlab::wire::pcap::read_all(pcap).unwrap().len();
    assert!(records > 50, "{label}: {records} packets");
    let stdout = common::tcpdump::decode_cleanly(pcap, records, &format!("l7-{label}"));
    assert!(
        stdout.contains("proto IPIP (4)"),
        "{label}: tunnelled packets"
    );
    assert!(stdout.contains("Flags [R]"), "{label}: the reset is there");
    assert!(
        stdout.contains("PROXY TCP4") || stdout.contains("Flags [P.]"),
        "{label}"
    );
}

fn capture<S: TcpStack>(make: impl FnMut() -> S) -> Vec<u8> {
    let mut c = ClientConfig::lab();
    c.parallel = 3;
    c.max_connections = Some(3);
    c.object_size = 100_000;
    c.stop_probability = 0.0;
    let mut b = Testbed::new(2, 2, c, Duration::from_micros(200), 5, make, |_| {}).unwrap();
    b.active = vec![0];
    b.capture().unwrap();
    b.start();
    b.run_until(Instant::from_millis(300));
    let flow = *b.flows.keys().next().unwrap();
    b.flows.insert(flow, 1);
    b.run_until(Instant::from_secs(30));
    b.take_pcap().unwrap().unwrap()
}

#[test]
fn tcpdump_decodes_both_kinds_cleanly() {
    if !common::tcpdump::available() {
        return;
    }
    tcpdump_clean(
        &capture(|| ScriptedStack::new(ScriptedConfig::default())),
        "scripted",
    );
    tcpdump_clean(
        &capture(|| SmolStack::new(SmolConfig::default())),
        "smoltcp",
    );
}
