//! No L7 node panics on any input bytes: random bytes, and real packets of a run with random
//! bytes flipped, truncated or extended, fed to a proxy, a backend and a client of each TCP
//! kind (checksums are fixed up after mutation half of the time, so the mutations reach the
//! TCP state machines instead of stopping at the checksum).

#[path = "common/props.rs"]
mod props;

use proptest::prelude::*;
use tierlab::l7::Testbed;
use tierlab::l7::{ClientConfig, ScriptedConfig, ScriptedStack, SmolConfig, SmolStack, TcpStack};
use tierlab::wire::{Duration, Instant};

/// Packets of a short run (client, director, proxy, backend), as sent.
fn corpus() -> Vec<Vec<u8>> {
    let mut c = ClientConfig::lab();
    c.parallel = 2;
    c.max_connections = Some(2);
    c.object_size = 30_000;
    let mut b = Testbed::new(
        1,
        1,
        c,
        Duration::from_micros(100),
        3,
        || ScriptedStack::new(ScriptedConfig::default()),
        |_| {},
    )
    .unwrap();
    b.capture().unwrap();
    b.start();
    b.run_until(Instant::from_secs(5));
    let pcap = b.take_pcap().unwrap().unwrap();
    tierlab::wire::pcap::read_all(&pcap[..])
        .unwrap()
        .into_iter()
        .map(|r| r.data)
        .collect()
}

fn fix_checksums(p: &mut [u8]) {
    // IPv4 header checksum, then the TCP checksum if the header says TCP.
    if p.len() >= 20 && p[0] >> 4 == 4 {
        let hl = usize::from(p[0] & 15) * 4;
        if hl >= 20 && p.len() >= hl {
            let c = tierlab::wire::ipv4::internet_checksum(&p[..hl], Some(10));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            if p[9] == 6 && p.len() >= hl + 20 {
                let src = std::net::IpAddr::from([p[12], p[13], p[14], p[15]]);
                let dst = std::net::IpAddr::from([p[16], p[17], p[18], p[19]]);
                if let Ok(c) = tierlab::wire::tcp::transport_checksum(&p[hl..], 16, src, dst, 6) {
                    p[hl + 16..hl + 18].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
    }
}

fn feed<S: TcpStack>(make: impl FnMut() -> S, packets: &[Vec<u8>]) {
    let mut b = Testbed::new(1, 1, ClientConfig::lab(), Duration::ZERO, 1, make, |_| {}).unwrap();
    let mut rng = tierlab::wire::rng::seeded(1);
    for (k, p) in packets.iter().enumerate() {
        let now = Instant::from_millis(k as u64);
        b.proxies[0].handle_packet(now, p);
        let _ = b.backends[0].handle_packet(now, p);
        let _ = b.client.handle_packet(now, 7, p, &mut rng);
        b.proxies[0].handle_timeout(now);
        while b.proxies[0].poll_transmit().is_some() {}
        while b.backends[0].poll_transmit().is_some() {}
        while b.client.poll_transmit().is_some() {}
    }
}

proptest! {
    #![proptest_config(props::config(64))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        feed(|| ScriptedStack::new(ScriptedConfig::default()), std::slice::from_ref(&bytes));
        feed(|| SmolStack::new(SmolConfig::default()), std::slice::from_ref(&bytes));
    }

    #[test]
    fn mutated_packets_never_panic(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..80, any::<u8>(), any::<bool>(), 0usize..3), 1..40)
    ) {
        let base = corpus();
        let mut packets = Vec::new();
        for (idx, at, val, fix, shape) in picks {
            let mut p = base[idx.index(base.len())].clone();
            if !p.is_empty() {
                let i = at % p.len();
                p[i] ^= val | 1;
            }
            match shape {
                1 => p.truncate(p.len() / 2),
                2 => p.extend_from_slice(&[0xab; 13]),
                _ => {}
            }
            if fix {
                fix_checksums(&mut p);
            }
            packets.push(p);
        }
        feed(|| ScriptedStack::new(ScriptedConfig::default()), &packets);
        feed(|| SmolStack::new(SmolConfig::default()), &packets);
    }
}
