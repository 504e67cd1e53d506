//! `tierlab ecmp` end to end: the binary answers like the kernel on recorded cases
//! (tests/data/ecmp), and a bad line stops it with exit status 2 and its line number.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn run(args: &[String], input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierlab"))
        .arg("ecmp")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tierlab runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("input written");
    let out = child.wait_with_output().expect("tierlab ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn answers_like_the_kernel_on_recorded_cases() {
    let data = include_str!("data/ecmp/route_get.jsonl");
    let mut checked = 0;
    // Every 7th configuration: all policies, families, next-hop counts are represented.
    for line in data.lines().step_by(7) {
        let cfg: Value = serde_json::from_str(line).expect("recorded line");
        let weights: Vec<String> = cfg["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|w| w.to_string())
            .collect();
        let mut args: Vec<String> = vec![
            "--family".into(),
            cfg["family"].to_string(),
            "--policy".into(),
            cfg["policy"].to_string(),
            "--hash-fields".into(),
            cfg["fields"].to_string(),
            "--seed".into(),
            cfg["seed"].to_string(),
            "--nexthops".into(),
            weights.len().to_string(),
            "--weights".into(),
            weights.join(","),
        ];
        if cfg["path"] == "route-lookup" {
            args.extend(["--path".into(), "route-lookup".into()]);
        }
        let cases = cfg["cases"].as_array().expect("cases");
        let input: String = cases.iter().map(|c| format!("{}\n", c["flow"])).collect();
        let (code, out, err) = run(&args, &input);
        assert_eq!(code, 0, "{args:?}: {err}");
        let got: Vec<String> = out.lines().map(str::to_string).collect();
        let want: Vec<String> = cases
            .iter()
            .map(|c| format!("{{\"nexthop\": {}}}", c["nexthop"]))
            .collect();
        assert_eq!(got, want, "{args:?}");
        checked += cases.len();
    }
    assert!(checked >= 200, "{checked}");
}

#[test]
fn a_bad_line_exits_2_naming_it() {
    let args: Vec<String> = [
        "--family",
        "6",
        "--policy",
        "1",
        "--seed",
        "3",
        "--nexthops",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let good = r#"{"src":"2001:db8::1","dst":"2001:db8::2","proto":17,"sport":5,"dport":53,"flowlabel":1}"#;
    let input = format!(
        "{good}\n{good}\n{{\"src\":\"2001:db8::1\",\"dst\":\"2001:db8::2\",\"proto\":6,\"sport\":70000}}\n{good}\n"
    );
    let (code, out, err) = run(&args, &input);
    assert_eq!(code, 2);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("stdin line 3"), "{err}");
    let (code, _, err) = run(&args[..6], "");
    assert_eq!(code, 2, "missing --nexthops is a usage error: {err}");
}
