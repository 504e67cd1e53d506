//! Every scenario shipped in `examples/scenarios/` loads, runs, and keeps the accounting
//! invariants; the same scenario and seed give the same report. The runs use 40 clients
//! instead of the lab's 200 (same topology and timeline) to keep the test quick.

use std::path::Path;

use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::report::{RunReport, run};
use tierlab::lab::{Scenario, from_toml};

fn load(path: &Path) -> Scenario {
    let text = std::fs::read_to_string(path).unwrap();
    from_toml(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn quick(path: &Path) -> RunReport {
    let mut s = load(path);
    s.workload.clients = 40;
    run(&s, || ScriptedStack::new(ScriptedConfig::default()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scenarios() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_scenario_keeps_the_accounting_invariants() {
    let files = scenarios();
    assert!(
        files.len() >= 8,
        "one scenario per disruption of the seed README: {files:?}"
    );
    for f in files {
        let r = quick(&f);
        let c = &r.connections;
        assert_eq!(
            c.started,
            c.completed + c.reset + c.refused + c.timed_out + c.other + c.open_at_end,
            "{}: {c:?}",
            f.display()
        );
        let p = &r.packets;
        let by_reason: u64 = p.dropped_by_reason.values().sum();
        assert_eq!(by_reason, p.dropped, "{}", f.display());
        assert!(p.sent >= p.delivered + p.in_flight, "{}", f.display());
        for e in &r.events {
            let k = &e.broken_by_cause;
            let causes = k.reset_by_proxy
                + k.proxy_lost
                + k.backend_lost
                + k.blackholed
                + k.icmp_misrouted
                + k.other;
            assert_eq!(causes, e.broken, "{}: {e:?}", f.display());
            assert!(e.broken <= e.active_before, "{}: {e:?}", f.display());
        }
    }
}

#[test]
fn same_scenario_and_seed_give_the_same_report() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scenarios/proxy_added_then_ecmp_change.toml");
    let a = serde_json::to_string(&quick(&f)).unwrap();
    let b = serde_json::to_string(&quick(&f)).unwrap();
    assert_eq!(a, b);
}

/// The scenario files are the suite's runs, written out: they cannot drift apart.
#[test]
fn scenario_files_are_the_suite_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
    for run in tierlab::lab::suite::suite(&Scenario::default(), 10.0) {
        let file = load(&dir.join(format!("{}.toml", run.name)));
        assert_eq!(
            file, run.scenario,
            "examples/scenarios/{}.toml differs from the suite run",
            run.name
        );
        assert!(tierlab::lab::suite::by_name(run.name).is_some());
    }
}

/// The scale runs of `examples/scale/` (docs/performance.md, "Scale runs") load, and run
/// shrunk to a few hundred connections with their timeline scaled down: every connection
/// ends, and the disruption comes while connections are open.
#[test]
fn the_scale_scenarios_load_and_run_shrunk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scale");
    for (name, smol) in [("scale_1m_scripted", false), ("scale_20k_smoltcp", true)] {
        let mut s = load(&dir.join(format!("{name}.toml")));
        assert_eq!(s.events.len(), 1, "{name}: one disruption");
        // A tenth of the clients, 600 connections, the disruption while the first ones run.
        s.workload.clients = (s.workload.clients / 10).max(20);
        s.workload.max_connections = Some(600);
        s.events[0].at_s = 0.2;
        s.duration_s = 40.0;
        let r = if smol {
            run(&s, || {
                tierlab::l7::SmolStack::new(tierlab::l7::SmolConfig::default())
            })
        } else {
            run(&s, || ScriptedStack::new(ScriptedConfig::default()))
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = &r.connections;
        assert_eq!((c.started, c.open_at_end), (600, 0), "{name}: {c:?}");
        assert!(
            r.events[0].active_before > 0,
            "{name}: the event hits traffic"
        );
    }
}
