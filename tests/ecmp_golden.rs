//! Replays kernel answers recorded by `tests/linux_ecmp.rs` (files in tests/data/ecmp, made as
//! tests/data/ecmp/README.md says), so the model is checked against the kernel on machines
//! where network namespaces are not available. Every case must agree.

use std::net::IpAddr;

use serde_json::Value;
use tierlab::ecmp::{
    Algorithm, HashConfig, HashFields, HashInput, HashPath, HashSeed, NextHop, NextHopGroup,
    Policy, QuotedHeader,
};
use tierlab::wire::{FlowKey, Instant};

fn field<'a>(v: &'a Value, k: &str, line: usize) -> &'a Value {
    v.get(k).unwrap_or_else(|| panic!("line {line}: no {k:?}"))
}

fn num(v: &Value, k: &str, line: usize) -> u64 {
    field(v, k, line)
        .as_u64()
        .unwrap_or_else(|| panic!("line {line}: {k:?} is not a number"))
}

fn replay(name: &str, text: &str) -> usize {
    let mut cases = 0;
    for (n, l) in text.lines().enumerate() {
        let line = n + 1;
        let cfg: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}:{line}: {e}"));
        let policy = Policy::try_from(num(&cfg, "policy", line) as u8).expect("policy");
        let fields = HashFields::new(num(&cfg, "fields", line) as u32).expect("fields");
        let seed = HashSeed::Fixed(num(&cfg, "seed", line) as u32);
        let path = match field(&cfg, "path", line).as_str() {
            Some("forwarding") => HashPath::Forwarding,
            Some("route-lookup") => HashPath::RouteLookup,
            other => panic!("{name}:{line}: bad path {other:?}"),
        };
        let hasher = HashConfig::new(policy, fields, seed).with_path(path);
        let weights: Vec<u32> = field(&cfg, "weights", line)
            .as_array()
            .expect("weights")
            .iter()
            .map(|w| w.as_u64().expect("weight") as u32)
            .collect();
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| NextHop::weighted(i as u32, w));
        let group = NextHopGroup::new(Algorithm::HashThreshold, members.collect(), Instant::ZERO)
            .expect("group");
        for c in field(&cfg, "cases", line).as_array().expect("cases") {
            let flow: FlowKey =
                serde_json::from_value(field(c, "flow", line).clone()).expect("flow");
            let quote = field(c, "quote", line);
            let icmp_quote = (!quote.is_null()).then(|| {
                let addr = |k: &str| -> IpAddr {
                    field(quote, k, line)
                        .as_str()
                        .expect("address")
                        .parse()
                        .expect("address")
                };
                QuotedHeader {
                    src: addr("src"),
                    dst: addr("dst"),
                    flow_label: num(quote, "flowlabel", line) as u32,
                    next_header: num(quote, "next_header", line) as u8,
                }
            });
            let input = HashInput {
                flow,
                next_header: num(c, "next_header", line) as u8,
                icmp_quote,
                l4_hash: None,
            };
            let want = num(c, "nexthop", line) as usize;
            let got = group.select(hasher.hash(&input));
            assert_eq!(got, want, "{name}:{line}: {l}\n  case {c}");
            cases += 1;
        }
    }
    cases
}

#[test]
fn recorded_route_lookups_agree() {
    let n = replay("route_get.jsonl", include_str!("data/ecmp/route_get.jsonl"));
    assert!(n >= 1000, "only {n} recorded cases");
}

#[test]
fn recorded_forwarding_agrees() {
    let n = replay(
        "forwarding.jsonl",
        include_str!("data/ecmp/forwarding.jsonl"),
    );
    assert!(n >= 500, "only {n} recorded cases");
}
