//! A director is added and starts announcing the VIPs.
//!
//! The seed lab's README expects: almost nothing breaks.
//! Run: `cargo run --release --example director_added` (the same scenario as
//! `examples/scenarios/director_added.toml`, built here with the library API).

use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::report::run;
use tierlab::lab::scenario::{Action, Event, NodeNameField, Scenario};

fn name(s: &str) -> NodeNameField {
    NodeNameField(s.parse().expect("a valid node name"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut s = Scenario {
        name: "director_added".into(),
        duration_s: 20.0,
        ..Scenario::default()
    };
    // IPv4 VIPs only for now (see docs/architecture.md, known gaps).
    s.topology.vips.retain(|v| v.addr.is_ipv4());
    s.workload.ipv6_share = 0.0;
    s.events = vec![(
        10.0,
        Action::DirectorAdded {
            target: name("director8"),
        },
    )]
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
    println!("expected by the lab's README: almost nothing breaks");
    Ok(())
}
