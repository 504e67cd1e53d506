//! A throw-away network namespace for the kernel-oracle tests (see
//! `../shared/kernel-oracle-notes.md`): deleted when dropped, or by a guard process in its own
//! session if the test process dies first (panic, SIGTERM, SIGKILL). Included by path
//! (`#[path = "common/netns.rs"] mod netns;`) by the tests that ask the kernel.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use tierlab::wire::Packet;

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

/// `sll_pkttype` of a packet the capturing host sent (a packet socket sees both ways).
pub(crate) const PACKET_OUTGOING: u8 = 4;

/// Sends a whole IP packet (header included) from raw sockets of the calling thread's
/// namespace (`IPPROTO_RAW`, one per family), to its destination address.
pub(crate) fn send_raw(raw4: &OwnedFd, raw6: &OwnedFd, p: &[u8]) -> Result<(), String> {
    let parsed = Packet::parse(p, false).map_err(|e| e.to_string())?;
    let sent = match parsed.dst() {
        IpAddr::V4(d) => sendto(
            raw4.as_raw_fd(),
            p,
            &SockaddrIn::from(SocketAddrV4::new(d, 0)),
            MsgFlags::empty(),
        ),
        IpAddr::V6(d) => sendto(
            raw6.as_raw_fd(),
            p,
            &SockaddrIn6::from(SocketAddrV6::new(d, 0, 0, 0)),
            MsgFlags::empty(),
        ),
    };
    sent.map(|_| ()).map_err(|e| format!("raw send: {e}"))
}

/// A packet socket on every interface of the calling thread's namespace (link headers
/// stripped), with an 8 MiB buffer and a receive timeout of `timeout_us` microseconds.
pub(crate) fn capture_socket(timeout_us: i64) -> Result<OwnedFd, String> {
    let cap = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(|e| format!("packet socket: {e}"))?;
    setsockopt(&cap, sockopt::ReceiveTimeout, &TimeVal::new(0, timeout_us))
        .map_err(|e| e.to_string())?;
    setsockopt(&cap, sockopt::RcvBufForce, &(8 << 20)).map_err(|e| e.to_string())?;
    Ok(cap)
}

/// Raw sockets (`IPPROTO_RAW`, header included) for IPv4 and IPv6 in the calling thread's
/// namespace, for [`send_raw`].
pub(crate) fn raw_sockets() -> Result<(OwnedFd, OwnedFd), String> {
    let raw = |fam| {
        socket(
            fam,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Raw,
        )
        .map_err(|e| format!("raw socket: {e}"))
    };
    Ok((raw(AddressFamily::Inet)?, raw(AddressFamily::Inet6)?))
}
