//! The real-tool check shared by the pcap tests: run `tcpdump -r FILE -vv -n -tt` on a
//! capture and check that it decodes every packet cleanly.

use std::process::Command;

/// Whether tcpdump can be run. Without it a test skips, except in CI (`CI` set), where
/// `.ci/run` installs it and its absence fails the test.
pub(crate) fn available() -> bool {
    if Command::new("tcpdump").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tcpdump is required in CI (.ci/run installs it)"
    );
    eprintln!("SKIPPED: tcpdump not installed (install the Debian package tcpdump)");
    false
}

/// tcpdump's verbose decoding of the capture `pcap`, after checking that it decoded exactly
/// `records` packets with no bad checksum, nothing truncated and nothing malformed. `label`
/// names the capture in failure messages.
pub(crate) fn decode_cleanly(pcap: &[u8], records: usize, label: &str) -> String {
    let path = std::env::temp_dir().join(format!("tierlab-{label}-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap).unwrap();
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(&path)
        .args(["-vv", "-n", "-tt"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{label}: tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With -tt each packet's first line starts with its timestamp at column 0.
    let lines = stdout
        .split('\n')
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(
        lines, records,
        "{label}: tcpdump saw another number of packets:\n{stdout}"
    );
    // tcpdump's text-protocol printer marks a line that does not end within the segment with
    // " [|http]" (print_txt_line: "no line ending after that point in the buffer; treat this
    // as if it were truncated"): an HTTP head and the start of the body in one segment always
    // shows it. The packet is whole (the capture holds every byte; checked by the other
    // markers and by tierlab's own reader).
    let checked = stdout.replace(" [|http]", "");
    for bad in [
        "bad cksum",
        "incorrect",
        "truncated",
        "[|",
        "bad-len",
        "malformed",
    ] {
        assert!(
            !checked.contains(bad),
            "{label}: tcpdump reports '{bad}':\n{stdout}"
        );
    }
    stdout
}
