//! The same decisions at every scale: scripted TCP and smoltcp, run through the same lab on
//! the same 2,000-connection workload and disruptions, must break the same connections — the
//! broken counts of each event agree within 1 % of the connections active before it.

use tierlab::l7::{ScriptedConfig, ScriptedStack, SmolConfig, SmolStack};
use tierlab::lab::Scenario;
use tierlab::lab::report::run;

const SCENARIO: &str = r#"
name = "endpoints_agree"
duration_s = 50
window_s = 8

# Disruptions act at once on every tier: the health checks' transients would make the two
# runs' workloads drift apart (new connections failing at slightly different times), and
# this test compares endpoints, not the control plane.
[control]
enabled = false

[workload]
clients = 200
max_connections = 2000

[[events]]
at_s = 10
action = "proxy_failed"
target = "proxy3"

[[events]]
at_s = 20
action = "proxy_added"
target = "proxy14"

[[events]]
at_s = 25
action = "ecmp_reordered"
"#;

#[test]
fn scripted_and_smoltcp_break_the_same_connections() {
    let s: Scenario = tierlab::lab::from_toml(SCENARIO, "endpoints_agree.toml").unwrap();
    let scripted = run(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
    let smol = run(&s, || SmolStack::new(SmolConfig::default())).unwrap();
    assert_eq!(scripted.connections.started, 2000);
    assert_eq!(smol.connections.started, 2000);
    assert_eq!(scripted.events.len(), smol.events.len());
    let mut broken_total = 0;
    for (a, b) in scripted.events.iter().zip(&smol.events) {
        assert_eq!(a.action, b.action);
        let active = a.active_before.max(b.active_before);
        let tolerance = active.div_ceil(100);
        assert!(
            a.broken.abs_diff(b.broken) <= tolerance,
            "{}: scripted broke {}, smoltcp {} (tolerance {tolerance})",
            a.action,
            a.broken,
            b.broken
        );
        broken_total += a.broken;
    }
    // The disruptions did break connections: the agreement is not two zeros.
    assert!(broken_total > 20, "{:?}", scripted.events);
}
