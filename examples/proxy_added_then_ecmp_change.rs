//! A proxy is added, then the ECMP layer changes.
//!
//! The seed lab's README expects: some connections land on a director without state and are reset by the wrong proxy.
//! Run: `cargo run --release --example proxy_added_then_ecmp_change` (the same scenario as
//! `examples/scenarios/proxy_added_then_ecmp_change.toml`, built here with the library API).

use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::report::run;
use tierlab::lab::scenario::{Action, Event, NodeNameField, Scenario};

fn name(s: &str) -> NodeNameField {
    NodeNameField(s.parse().expect("a valid node name"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut s = Scenario {
        name: "proxy_added_then_ecmp_change".into(),
        duration_s: 20.0,
        ..Scenario::default()
    };
    // IPv4 VIPs only for now (see docs/architecture.md, known gaps).
    s.topology.vips.retain(|v| v.addr.is_ipv4());
    s.workload.ipv6_share = 0.0;
    s.events = vec![
        (
            5.0,
            Action::ProxyAdded {
                target: name("proxy14"),
            },
        ),
        (10.0, Action::EcmpReordered {}),
    ]
    .into_iter()
    .map(|(at_s, action)| Event { at_s, action })
    .collect();
    let report = run(&s, || ScriptedStack::new(ScriptedConfig::default()))?;
    for e in &report.events {
        println!(
            "{:>5.1} s  {:<16} {:<10} active {:>4}  broken {:>4}  {:?}",
            e.at_s,
            e.action,
            e.target.as_deref().unwrap_or("-"),
            e.active_before,
            e.broken,
            e.broken_by_cause
        );
    }
    println!(
        "expected by the lab's README: some connections land on a director without state and are reset by the wrong proxy"
    );
    Ok(())
}
