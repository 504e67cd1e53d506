//! The default suite: the seed lab, and each disruption of the seed README on a freshly warmed
//! lab, with what the README expects of it.

use crate::names::{NodeKind, NodeName};
use crate::scenario::{Action, AgentState, DnsAdminState, Event, NodeNameField, Scenario};

/// One run of the suite.
#[derive(Clone, Debug)]
pub struct SuiteRun {
    /// The run's name (stable: scripts use it).
    pub name: &'static str,
    /// What the lab's README expects.
    pub expects: &'static str,
    /// What the kernel's rules (and the daemons' timers) produce, where the README says
    /// something else or less (docs/results.md explains each, citing the sources).
    pub kernel: Option<&'static str>,
    /// The scenario.
    pub scenario: Scenario,
}

/// A run's name, what the README expects, and its timeline.
type Plan = (&'static str, &'static str, Vec<(f64, Action)>);

/// A control-plane run: name, README expectation, kernel-rule expectation, timeline, how long
/// to run after the last event, and a change to the scenario.
type ControlPlan = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(f64, Action)>,
    f64,
    fn(&mut Scenario),
);

fn target(kind: NodeKind, index: u32) -> NodeNameField {
    NodeNameField(NodeName { kind, index })
}

/// The suite built on `base` (normally the seed lab): every run warms the lab up for
/// `warm_s` seconds, applies its disruption(s), and runs `window_s` more.
pub fn suite(base: &Scenario, warm_s: f64) -> Vec<SuiteRun> {
    let t = &base.topology;
    let (d, p, b) = (t.directors, t.proxies, t.backends);
    let mut base = base.clone();
    base.events.clear();
    let at = warm_s;
    let runs: Vec<Plan> = vec![
        (
            "ecmp_change",
            "almost nothing breaks: every director computes the same mh table",
            vec![(at, Action::EcmpReordered {})],
        ),
        (
            "director_added",
            "almost nothing breaks",
            vec![(
                at,
                Action::DirectorAdded {
                    target: target(NodeKind::Director, d + 1),
                },
            )],
        ),
        (
            "director_removed",
            "almost nothing breaks",
            vec![(
                at,
                Action::DirectorRemoved {
                    target: target(NodeKind::Director, d),
                },
            )],
        ),
        (
            "proxy_lost",
            "its connections break; the others survive",
            vec![(
                at,
                Action::ProxyFailed {
                    target: target(NodeKind::Proxy, p),
                },
            )],
        ),
        (
            "proxy_added",
            "nothing breaks: directors keep their entries",
            vec![(
                at,
                Action::ProxyAdded {
                    target: target(NodeKind::Proxy, p + 1),
                },
            )],
        ),
        (
            "proxy_added_then_ecmp_change",
            "some connections land on a director without state, are scheduled on the new table and reset by the wrong proxy",
            vec![
                (
                    at / 2.0,
                    Action::ProxyAdded {
                        target: target(NodeKind::Proxy, p + 1),
                    },
                ),
                (at, Action::EcmpReordered {}),
            ],
        ),
        (
            "backend_added",
            "nothing breaks: proxies are stateful",
            vec![(
                at,
                Action::BackendAdded {
                    target: target(NodeKind::Backend, b + 1),
                },
            )],
        ),
        (
            "backend_lost",
            "only its connections break",
            vec![(
                at,
                Action::BackendLost {
                    target: target(NodeKind::Backend, 1),
                },
            )],
        ),
    ];
    let mut out: Vec<SuiteRun> = runs
        .into_iter()
        .map(|(name, expects, events)| {
            let mut s = base.clone();
            s.name = name.to_owned();
            s.duration_s = at + s.window_s;
            s.events = events
                .into_iter()
                .map(|(at_s, action)| Event { at_s, action })
                .collect();
            SuiteRun {
                name,
                expects,
                kernel: None,
                scenario: s,
            }
        })
        .collect();
    if base.control.enabled {
        out.extend(control_runs(&base, at));
    }
    out
}

fn nothing(_: &mut Scenario) {}

fn inhibit(s: &mut Scenario) {
    s.control.keepalived.inhibit_on_failure = true;
}

fn names(s: &mut Scenario) {
    s.workload.names = vec!["www1".to_owned(), "www2".to_owned()];
}

/// The runs that need the control plane (issue: BGP, health checks, maintenance, DNS).
fn control_runs(base: &Scenario, at: f64) -> Vec<SuiteRun> {
    let t = &base.topology;
    let (d, p) = (t.directors, t.proxies);
    let hc = base.control.healthcheck.interval_s;
    let ka = base.control.keepalived.delay_loop_s;
    let ttl = base.control.dns.ttl_s;
    let dns_vip = base
        .control
        .dns
        .names
        .iter()
        .find(|n| n.name == "www1")
        .and_then(|n| n.addrs.first().copied());
    let mut plans: Vec<ControlPlan> = vec![
        (
            "director_disabled",
            "nothing breaks: the VIPs stop being advertised and traffic drains away",
            "nothing breaks: at its next healthcheck (<= 10 s) the director announces MED 500 and the routers move its flows to directors with MED 100, which hold no entry for them but compute the same mh table",
            vec![(
                at,
                Action::DirectorDisabled {
                    target: target(NodeKind::Director, d),
                },
            )],
            hc + base.window_s,
            nothing,
        ),
        (
            "director_died",
            "(not in the README) a director lost without withdrawing",
            "its flows are blackholed until the routers' hold timers expire (IPv6 <= 3 s, IPv4 <= 6 s): connections that read nothing for 2 s fail",
            vec![(
                at,
                Action::DirectorFailed {
                    target: target(NodeKind::Director, d),
                },
            )],
            base.window_s,
            nothing,
        ),
        (
            "proxy_drained",
            "the proxy is put in maintenance: its connections drain, nothing breaks",
            "keepalived deletes the proxy when the monitor-uri fails; with expire_nodest_conn=0 IPVS then drops the packets of its established flows (ip_vs_core.c: destination not available): they break",
            vec![(
                at,
                Action::ProxyMaintenance {
                    target: target(NodeKind::Proxy, p),
                    state: AgentState::Drain,
                },
            )],
            ka + 3.0 + base.window_s,
            nothing,
        ),
        (
            "proxy_drained_inhibit",
            "(variant) keepalived with inhibit_on_failure: weight 0 instead of deletion",
            "established connections survive (a weight-0 destination's entries keep forwarding), but new flows that hash to its mh/sh slots find no destination without mh-fallback: IPVS answers port unreachable and those new connections fail (see later)",
            vec![(
                at,
                Action::ProxyMaintenance {
                    target: target(NodeKind::Proxy, p),
                    state: AgentState::Drain,
                },
            )],
            ka + 3.0 + base.window_s,
            inhibit,
        ),
        (
            "proxy_check_flap",
            "(not in the README) director1 fails its checks of proxy1 for 20 s",
            "that director deletes the proxy (its flows there break: expire_nodest_conn=0) and adds it back at the head of its list: its mh table can then differ from the others' for good",
            vec![(
                at,
                // proxy1: the oldest destination, at the tail of the kernel's list; added
                // back, it goes to the head, and that director's tables stop matching.
                Action::ProxyCheckFailed {
                    target: target(NodeKind::Proxy, 1),
                    director: target(NodeKind::Director, 1),
                    duration_s: 20.0,
                },
            )],
            20.0 + ka + base.window_s,
            nothing,
        ),
    ];
    if let Some(vip) = dns_vip {
        plans.push((
            "dns_vip_down",
            "a VIP marked down in gdnsd stops receiving new connections once caches expire",
            "nothing breaks; new connections leave the VIP within the TTL (60 s) of the clients' caches",
            vec![(at, Action::DnsAdmin {
                vip,
                state: DnsAdminState::Down,
            })],
            ttl + base.window_s,
            names,
        ));
    }
    plans
        .into_iter()
        .map(|(name, expects, kernel, events, after, tweak)| {
            let mut s = base.clone();
            s.name = name.to_owned();
            tweak(&mut s);
            let last = events.iter().map(|(t, _)| *t).fold(0.0, f64::max);
            s.duration_s = last + after;
            s.window_s = after;
            s.events = events
                .into_iter()
                .map(|(at_s, action)| Event { at_s, action })
                .collect();
            SuiteRun {
                name,
                expects,
                kernel: Some(kernel),
                scenario: s,
            }
        })
        .collect()
}

/// The suite run called `name`, on the seed lab warmed for 10 s (what the examples run).
pub fn by_name(name: &str) -> Option<SuiteRun> {
    suite(&Scenario::default(), 10.0)
        .into_iter()
        .find(|r| r.name == name)
}

/// Runs the suite run `name` with scripted endpoints and prints its report and what the lab's
/// README expects: the body of each `examples/<name>.rs`.
///
/// # Errors
/// An unknown name, or a run that fails.
pub fn print_run(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let r = by_name(name).ok_or_else(|| format!("no suite run named {name}"))?;
    let report = crate::report::run(&r.scenario, || {
        tierlab_l7::ScriptedStack::new(tierlab_l7::ScriptedConfig::default())
    })?;
    print!("{}", report.summary());
    println!("the lab's README expects: {}", r.expects);
    if let Some(k) = r.kernel {
        println!("kernel rules and timers: {k}");
    }
    Ok(())
}
