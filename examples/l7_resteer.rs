//! The weakness of the design, in one run: 40 lab clients read 2 MB objects through two
//! proxies; after 3 s the director forgets its flow table and reschedules every flow on the
//! proxies as if it had never seen them. Flows that land on the other proxy are reset by it.
//!
//! `cargo run --release --example l7_resteer -- [scripted|smoltcp] [out.pcap]`

use std::collections::BTreeMap;

use tierlab::l7::client::Outcome;
use tierlab::l7::{ClientConfig, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpStack};
use tierlab::l7::{Testbed, testbed::LinkStats};
use tierlab::wire::{Duration, Instant};

fn run<S: TcpStack>(
    make: impl FnMut() -> S,
    pcap: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = ClientConfig::lab();
    c.parallel = 40;
    c.object_size = 2_000_000;
    let mut bed = Testbed::new(2, 4, c, Duration::from_micros(150), 1, make, |_| {})?;
    if pcap.is_some() {
        bed.capture()?;
    }
    bed.start();
    bed.run_until(Instant::from_secs(3));
    let before = bed.client.take_records();
    // The director loses its state: every flow is scheduled anew (here: flows of even
    // source port go to proxy 1, odd to proxy 2).
    let flows: Vec<_> = bed.flows.keys().copied().collect();
    for f in flows {
        bed.flows.insert(f, usize::from(f.sport() % 2));
    }
    bed.run_until(Instant::from_secs(10));
    let after = bed.client.take_records();
    let count = |recs: &[tierlab::l7::client::ConnRecord]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for r in recs {
            let k = match r.outcome {
                Outcome::Reset { by: Some(t) } if t >= 100 => format!("reset by proxy {}", t - 99),
                o => format!("{o:?}"),
            };
            *m.entry(k).or_default() += 1;
        }
        m
    };
    println!("first 3 s: {:?}", count(&before));
    println!("after the director lost its state: {:?}", count(&after));
    let LinkStats {
        delivered,
        unroutable,
        refused,
    } = bed.stats();
    println!("packets delivered {delivered}, unroutable {unroutable}, refused {refused}");
    if let (Some(path), Some(bytes)) = (pcap, bed.take_pcap()?) {
        std::fs::write(path, bytes)?;
        println!("pcap written to {path}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let pcap = args.get(2).map(String::as_str);
    match args.get(1).map(String::as_str) {
        Some("smoltcp") => run(|| SmolStack::new(SmolConfig::default()), pcap),
        _ => run(|| ScriptedStack::new(ScriptedConfig::default()), pcap),
    }
}
