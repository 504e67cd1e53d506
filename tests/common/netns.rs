//! A throw-away network namespace for the kernel-oracle tests (see
//! `../shared/kernel-oracle-notes.md`): deleted when dropped, or by a guard process in its own
//! session if the test process dies first (panic, SIGTERM, SIGKILL). Included by path
//! (`#[path = "common/netns.rs"] mod netns;`) by the tests that ask the kernel.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Namespaces made by this process so far (their names stay unique).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted when dropped, or by its guard process if this process
/// dies first.
pub(crate) struct Netns {
    /// The namespace's name (`ip netns` list).
    pub(crate) name: String,
    guard: Option<Child>,
}

impl Netns {
    /// A new namespace named `TAG-PID-N`.
    pub(crate) fn create(tag: &str) -> Result<Self, String> {
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let script = format!("cat >/dev/null; ip netns del {name} 2>/dev/null");
        let spawn = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        // setsid: a signal sent to the test's process group does not reach the guard.
        let guard = spawn("setsid", &["sh", "-c", &script])
            .or_else(|_| spawn("sh", &["-c", &script]))
            .ok();
        Ok(Self { name, guard })
    }

    /// Runs `ip -n NAME ARGS` (arguments split on whitespace); its standard output.
    pub(crate) fn ip(&self, args: &str) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args.split_whitespace());
        run("ip", &all)
    }

    /// Sets sysctls inside the namespace (`sysctl -qw`).
    pub(crate) fn sysctl(&self, settings: &[String]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), "sysctl", "-qw"];
        all.extend(settings.iter().map(String::as_str));
        run("ip", &all).map(|_| ())
    }

    /// Moves the calling thread into the namespace (the sockets it then opens live there).
    pub(crate) fn enter(&self) -> Result<(), String> {
        let f = File::open(format!("/run/netns/{}", self.name)).map_err(|e| e.to_string())?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        if let Some(mut g) = self.guard.take() {
            drop(g.stdin.take());
            let _ = g.wait();
        }
    }
}

/// Runs a program; its standard output, or what it said on failure.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
