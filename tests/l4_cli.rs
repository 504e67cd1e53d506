//! `tierlab l4`: the command-line contract.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use tierlab_l4::{SchedFlags, SchedulerKind, Service, ServiceConfig};
use tierlab_wire::{FlowKey, IpProto};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierlab"))
        .arg("l4")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const DESTS: &str = "192.0.2.101,192.0.2.102:80@2,192.0.2.103,192.0.2.104";

fn flows(n: u16) -> (String, Vec<FlowKey>) {
    let mut s = String::new();
    let mut v = Vec::new();
    for i in 0..n {
        let src = format!("203.0.113.{}", 1 + i % 200);
        s.push_str(&format!(
            "{{\"src\":\"{src}\",\"sport\":{},\"dst\":\"198.51.100.1\",\"dport\":80,\"proto\":6}}\n",
            30000 + i
        ));
        v.push(
            FlowKey::new(
                src.parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
                IpProto::Tcp,
                30000 + i,
                80,
            )
            .unwrap(),
        );
    }
    (s, v)
}

fn library(kind: SchedulerKind, fallback: bool, drained: &[&str]) -> Service {
    let mut svc = Service::new(ServiceConfig {
        vip: "0.0.0.0".parse().unwrap(),
        port: 80,
        proto: IpProto::Tcp,
        scheduler: kind,
        table_size: None,
        flags: SchedFlags {
            port: true,
            fallback,
        },
    })
    .unwrap();
    for (a, w) in [
        ("192.0.2.101", 1),
        ("192.0.2.102", 2),
        ("192.0.2.103", 1),
        ("192.0.2.104", 1),
    ] {
        svc.add_dest(a.parse().unwrap(), 80, w).unwrap();
    }
    for a in drained {
        svc.edit_dest(a.parse::<IpAddr>().unwrap(), 80, 0).unwrap();
    }
    svc
}

fn expected(svc: &Service, flows: &[FlowKey]) -> String {
    flows
        .iter()
        .map(|f| match svc.schedule(f) {
            Some(id) => format!("{{\"dest\": {}}}\n", id.0),
            None => "{\"dest\": null}\n".to_owned(),
        })
        .collect()
}

#[test]
fn one_line_per_flow_with_the_index_into_dests() {
    let (input, fl) = flows(300);
    let out = run(&["--scheduler", "mh", "--port", "--dests", DESTS], &input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, expected(&library(SchedulerKind::Mh, false, &[]), &fl));
    // All four destinations appear, the weight-2 one most.
    for i in 0..4 {
        assert!(text.contains(&format!("{{\"dest\": {i}}}")));
    }
}

#[test]
fn drained_destinations_give_null_unless_fallback() {
    let (input, fl) = flows(300);
    let base = [
        "--scheduler",
        "mh",
        "--port",
        "--dests",
        DESTS,
        "--drained",
        "192.0.2.103",
    ];
    let out = run(&base, &input);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        expected(&library(SchedulerKind::Mh, false, &["192.0.2.103"]), &fl)
    );
    assert!(text.contains("null"));
    assert!(!text.contains("{\"dest\": 2}"));
    let mut fb = base.to_vec();
    fb.push("--fallback");
    let text = String::from_utf8(run(&fb, &input).stdout).unwrap();
    assert!(!text.contains("null"));
    assert_eq!(
        text,
        expected(&library(SchedulerKind::Mh, true, &["192.0.2.103"]), &fl)
    );
}

#[test]
fn dump_table_prints_every_slot() {
    let out = run(&["--scheduler", "sh", "--dests", DESTS, "--dump-table"], "");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 256);
    // Kernel list: 104, 103, 102 (weight 2), 101 → indices 3, 2, 1, 1, 0, repeating.
    assert_eq!(lines[0], "{\"slot\": 0, \"dest\": 3}");
    assert_eq!(lines[2], "{\"slot\": 2, \"dest\": 1}");
    assert_eq!(lines[3], "{\"slot\": 3, \"dest\": 1}");
    assert_eq!(lines[4], "{\"slot\": 4, \"dest\": 0}");
    let mh = run(
        &[
            "--scheduler",
            "mh",
            "--table-size",
            "251",
            "--dests",
            DESTS,
            "--dump-table",
        ],
        "",
    );
    assert_eq!(String::from_utf8(mh.stdout).unwrap().lines().count(), 251);
    let mg = run(
        &[
            "--scheduler",
            "maglev",
            "--table-size",
            "65537",
            "--dests",
            DESTS,
            "--dump-table",
        ],
        "",
    );
    assert_eq!(
        String::from_utf8(mg.stdout).unwrap().lines().count(),
        65_537
    );
}

#[track_caller]
fn bad(args: &[&str], stdin: &str, needle: &str) {
    let out = run(args, stdin);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr {err:?} should mention {needle:?}"
    );
}

#[test]
fn bad_input_exits_2_naming_line_or_flag() {
    let (good, _) = flows(1);
    bad(
        &["--scheduler", "mh", "--dests", DESTS],
        &format!("{good}not json\n"),
        "line 2",
    );
    bad(
        &["--scheduler", "mh", "--dests", DESTS],
        "{\"src\":\"2001:db8::1\",\"dst\":\"2001:db8::2\",\"proto\":6}\n",
        "line 1",
    );
    bad(
        &[
            "--scheduler",
            "mh",
            "--table-size",
            "4096",
            "--dests",
            DESTS,
        ],
        "",
        "--table-size",
    );
    bad(
        &["--scheduler", "sh", "--table-size", "100", "--dests", DESTS],
        "",
        "--table-size",
    );
    bad(
        &[
            "--scheduler",
            "maglev",
            "--table-size",
            "65536",
            "--dests",
            DESTS,
        ],
        "",
        "--table-size",
    );
    bad(
        &["--scheduler", "mh", "--dests", "192.0.2.1,nope"],
        "",
        "--dests: item 2",
    );
    bad(
        &["--scheduler", "mh", "--dests", "192.0.2.1@-1"],
        "",
        "--dests",
    );
    bad(
        &["--scheduler", "mh", "--dests", "192.0.2.1,192.0.2.1"],
        "",
        "--dests: item 2",
    );
    bad(
        &[
            "--scheduler",
            "mh",
            "--dests",
            DESTS,
            "--drained",
            "192.0.2.9",
        ],
        "",
        "--drained: item 1",
    );
    bad(&["--scheduler", "rr", "--dests", DESTS], "", "rr");
}
