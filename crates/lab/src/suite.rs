//! The default suite: the seed lab, and each disruption of the seed README on a freshly warmed
//! lab, with what the README expects of it.

use crate::names::{NodeKind, NodeName};
use crate::scenario::{Action, Event, NodeNameField, Scenario};

/// One run of the suite.
#[derive(Clone, Debug)]
pub struct SuiteRun {
    /// The run's name (stable: scripts use it).
    pub name: &'static str,
    /// What the lab's README says happens.
    pub expects: &'static str,
    /// The scenario.
    pub scenario: Scenario,
}

/// A run's name, what the README expects, and its timeline.
type Plan = (&'static str, &'static str, Vec<(f64, Action)>);

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
    runs.into_iter()
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
    Ok(())
}
