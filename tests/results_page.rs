//! `tierlab report`: every scenario file of `examples/results/` loads; the quick page has
//! every section and the chart, is written well within a minute in the dev profile, and is
//! the same, byte for byte, whatever `--jobs` says; bad arguments are refused with a
//! message. And the connection timeline behind the chart adds up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::report::{run, run_recorded, timeline};
use tierlab::lab::scenario::{Action, Event, NodeNameField};
use tierlab::lab::{Scenario, from_toml};

fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/results")
}

fn result_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(results_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// A fresh, empty folder for one test's output.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tierlab-results-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `f` and says how long it took on the wall clock: the test's only wall-clock reading,
/// of the command from outside it (simulations inside run on virtual time).
#[allow(clippy::disallowed_methods)]
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let t = f();
    (t, started.elapsed())
}

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tierlab"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_results_scenario_loads_and_is_named_after_its_file() {
    let files = result_files();
    assert!(files.len() >= 18, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let s = from_toml(&text, &f.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let stem = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(s.name, stem, "{}", f.display());
        // Every disruption scenario has its event; the icmp_policy* files measure a steady
        // state (where ICMP errors land) and have none.
        assert!(
            !s.events.is_empty() || stem.starts_with("icmp_"),
            "{}",
            f.display()
        );
        assert!(
            text.contains(&format!("tierlab run examples/results/{stem}.toml")),
            "{} says how to rerun it",
            f.display()
        );
    }
}

#[test]
fn quick_page_has_every_section_and_the_chart_and_does_not_depend_on_jobs() {
    let a = scratch("a");
    let out = a.join("results.md");
    let (run_a, took) =
        timed(|| report(&["--quick", "--jobs", "2", "--out", out.to_str().unwrap()]));
    assert!(
        run_a.status.success(),
        "{}",
        String::from_utf8_lossy(&run_a.stderr)
    );
    assert!(took.as_secs() < 60, "quick page took {took:?}");
    let page = std::fs::read_to_string(&out).unwrap();
    for section in [
        "# Results",
        "**Quick mode**",
        "## Headlines",
        "## 1. `mh` versus `sh`",
        "**Measured sh/mh ratio**",
        "## 2. Hash policy 0 versus 1",
        "### Where ICMP fragmentation-needed errors land",
        "## 3. `mh` table size",
        "## 4. Number of directors",
        "## 5. Directors that disagree",
        "## 6. A director lost abruptly or gracefully",
        "## 7. The suite",
        "### Where the numbers differ from the README, and why",
        "## 8. Connections over time",
        "](results/proxy_added_then_ecmp_change.svg)",
    ] {
        assert!(page.contains(section), "missing {section:?}");
    }
    // Every scenario file is named by a table (no file the page does not use), and every
    // suite run has its row.
    for f in result_files() {
        let name = format!(
            "`examples/results/{}`",
            f.file_name().unwrap().to_str().unwrap()
        );
        assert!(page.contains(&name), "the page does not name {name}");
    }
    for r in tierlab::lab::suite::suite(&Scenario::default(), 10.0) {
        assert!(page.contains(&format!("| `{}` |", r.name)), "{}", r.name);
    }
    // Tables have as many cells in each row as in their header.
    let mut columns = None;
    for line in page.lines() {
        if line.starts_with('|') {
            let n = line.matches('|').count() - line.matches("\\|").count();
            match columns {
                None => columns = Some(n),
                Some(c) => assert_eq!(c, n, "{line}"),
            }
        } else {
            columns = None;
        }
    }
    let svg_a = std::fs::read(a.join("results/proxy_added_then_ecmp_change.svg")).unwrap();
    let svg_text = String::from_utf8(svg_a.clone()).unwrap();
    assert!(svg_text.starts_with("<svg"));
    assert!(svg_text.contains("proxy_added proxy14") && svg_text.contains("ecmp_reordered"));
    assert!(svg_text.contains("connections active"));

    // The same page and chart, byte for byte, with one worker.
    let b = scratch("b");
    let out_b = b.join("results.md");
    let run_b = report(&["--quick", "--jobs", "1", "--out", out_b.to_str().unwrap()]);
    assert!(
        run_b.status.success(),
        "{}",
        String::from_utf8_lossy(&run_b.stderr)
    );
    assert_eq!(page, std::fs::read_to_string(&out_b).unwrap());
    assert_eq!(
        svg_a,
        std::fs::read(b.join("results/proxy_added_then_ecmp_change.svg")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let no_out = report(&["--quick"]);
    assert_eq!(no_out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_out.stderr).contains("--out"));

    let dir = scratch("bad");
    let no_jobs = report(&["--jobs", "0", "--out", dir.join("r.md").to_str().unwrap()]);
    assert_eq!(no_jobs.status.code(), Some(2));

    // An output folder that cannot be made (a file is in the way): refused before any run.
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (blocked, took) = timed(|| {
        report(&[
            "--quick",
            "--out",
            file.join("results.md").to_str().unwrap(),
        ])
    });
    assert_eq!(blocked.status.code(), Some(2));
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert!(err.contains("cannot write"), "{err}");
    assert!(took.as_secs() < 10, "failed before running anything");
    let folder = report(&["--quick", "--out", dir.to_str().unwrap()]);
    assert_eq!(folder.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&folder.stderr).contains("is a folder"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chart's data: every unsuccessful connection is counted once, in the bucket where it
/// ended, and the last bucket's active count is what the report says is open at the end.
#[test]
fn timeline_adds_up_to_the_report() {
    let mut s = Scenario::default();
    s.workload.clients = 100;
    s.duration_s = 8.0;
    s.window_s = 4.0;
    s.events = vec![Event {
        at_s: 3.0,
        action: Action::ProxyFailed {
            target: NodeNameField("proxy1".parse().unwrap()),
        },
    }];
    let stack = || ScriptedStack::new(ScriptedConfig::default());
    let (report, records) = run_recorded(&s, stack).unwrap();
    assert_eq!(report, run(&s, stack).unwrap(), "recording changes nothing");
    let t = timeline(&records, 0.5);
    assert_eq!(t.len(), 16);
    assert_eq!(t[0].from_s, 0.0);
    assert!((t[15].from_s - 7.5).abs() < 1e-9);
    let c = &report.connections;
    let unsuccessful = c.reset + c.refused + c.timed_out + c.other;
    assert!(unsuccessful > 0, "the dead proxy's connections break");
    assert_eq!(t.iter().map(|b| b.broken).sum::<u64>(), unsuccessful);
    assert_eq!(t[15].active, c.open_at_end);
    assert!(t.iter().all(|b| b.active <= 100), "{t:?}");
    assert!(timeline(&records, 0.0).is_empty());
    assert!(timeline(&records, f64::NAN).is_empty());
}
