//! The running Linux kernel as the oracle for `tierlab-ecmp`.
//!
//! Two network namespaces: R, the router, with a multipath default route over veth next hops
//! (`nh0`..`nh12`), and E, the edge, holding the other end of every veth. For each
//! configuration (family, `fib_multipath_hash_policy`, `fib_multipath_hash_fields`, seed,
//! number of next hops, weights) the test:
//!
//! - asks the kernel with RTM_GETROUTE over netlink (what `ip route get DST from SRC iif in0
//!   ipproto P sport S dport D` sends, plus RTA_FLOWLABEL, which this iproute2 cannot send)
//!   which next hop it picks for 2,000 random flows; IPv4 lookups with `iif` take the kernel's
//!   forwarding path, IPv6 lookups its route-lookup path, and the model is asked the same;
//! - forwards 2,000 real packets per configuration: injected from E through a raw socket into
//!   R's `in0` (a single-queue veth, so they carry no `skb->hash`), captured leaving R on an
//!   `nhI` with a packet socket; this checks the forwarding path, where IPv6 policy 2 with flow
//!   labels and policy 3 differ from the route lookup, and ICMP errors.
//!
//! Agreement must be 100 %. The namespaces are deleted in every exit path: by `Drop`, and by a
//! guard process in its own session that deletes them when this process's end of a pipe closes
//! (panic, SIGTERM, SIGKILL). Without root (no namespaces), the test fails when `CI` is set and
//! says it skipped otherwise.

#[path = "common/netns.rs"]
mod netns;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use netns::{Netns, PACKET_OUTGOING, capture_socket, raw_sockets, send_raw};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv,
    recvfrom, sendto, socket,
};
use rand::{Rng, RngCore};
use tierlab::ecmp::{
    Algorithm, HashConfig, HashFields, HashInput, HashPath, HashSeed, NextHop, NextHopGroup,
    Policy, Prefix, Router,
};
use tierlab::wire::icmp::{IcmpError, build_error};
use tierlab::wire::rng::{SimRng, seeded};
use tierlab::wire::{
    FlowKey, Instant, IpProto, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, UdpRepr,
};

const FLOWS: usize = 2000;
const MAX_NH: usize = 13;

/// R and E, wired.
struct Lab {
    r: Netns,
    e: Netns,
    in0: u32,
    nh_ifindex: Vec<u32>,
}

fn ifindex(ns: &Netns, dev: &str) -> Result<(u32, String), String> {
    let j = ns.ip(&format!("-j link show dev {dev}"))?;
    let v: serde_json::Value = serde_json::from_str(&j).map_err(|e| e.to_string())?;
    let idx = v[0]["ifindex"].as_u64().ok_or("no ifindex")? as u32;
    let mac = v[0]["address"].as_str().ok_or("no address")?.to_string();
    Ok((idx, mac))
}

impl Lab {
    fn new() -> Result<Self, String> {
        let r = Netns::create("tlecmp-r")?;
        let e = Netns::create("tlecmp-e")?;
        r.ip("link set lo up")?;
        e.ip("link set lo up")?;
        r.ip(&format!(
            "link add in0 numtxqueues 1 numrxqueues 1 type veth peer name in0p \
             numtxqueues 1 numrxqueues 1 netns {}",
            e.name
        ))?;
        for i in 0..MAX_NH {
            r.ip(&format!(
                "link add nh{i} type veth peer name nh{i}p address 02:00:00:00:01:{i:02x} netns {}",
                e.name
            ))?;
            r.ip(&format!("link set nh{i} up"))?;
            e.ip(&format!("link set nh{i}p up"))?;
            let mac = format!("02:00:00:00:01:{i:02x}");
            r.ip(&format!(
                "neigh replace 169.254.{i}.2 lladdr {mac} dev nh{i} nud permanent"
            ))?;
            r.ip(&format!(
                "-6 neigh replace fe80::2 lladdr {mac} dev nh{i} nud permanent"
            ))?;
        }
        r.ip("link set in0 up")?;
        e.ip("link set in0p up")?;
        r.sysctl(&[
            "net.ipv4.ip_forward=1".into(),
            "net.ipv6.conf.all.forwarding=1".into(),
            "net.ipv4.conf.all.rp_filter=0".into(),
            "net.ipv4.conf.default.rp_filter=0".into(),
            "net.ipv4.conf.in0.rp_filter=0".into(),
        ])?;
        let (in0, in0_mac) = ifindex(&r, "in0")?;
        e.ip("addr add 192.0.2.2/24 dev in0p")?;
        e.ip("-6 addr add 2001:db8:ffff::2/64 dev in0p nodad")?;
        e.ip(&format!(
            "neigh replace 192.0.2.1 lladdr {in0_mac} dev in0p nud permanent"
        ))?;
        e.ip("route add default via 192.0.2.1 dev in0p onlink")?;
        e.ip(&format!(
            "-6 neigh replace fe80::1 lladdr {in0_mac} dev in0p nud permanent"
        ))?;
        e.ip("-6 route add default via fe80::1 dev in0p")?;
        let nh_ifindex = (0..MAX_NH)
            .map(|i| ifindex(&r, &format!("nh{i}")).map(|x| x.0))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            r,
            e,
            in0,
            nh_ifindex,
        })
    }

    /// Replaces the default route of a family by a multipath route over `nh0..nhN`.
    fn route(&self, v4: bool, weights: &[u32]) -> Result<(), String> {
        let fam = if v4 { "-4" } else { "-6" };
        while self.r.ip(&format!("{fam} route del default")).is_ok() {}
        let mut cmd = format!("{fam} route add default");
        for (i, w) in weights.iter().enumerate() {
            if v4 {
                cmd += &format!(" nexthop via 169.254.{i}.2 dev nh{i} onlink weight {w}");
            } else {
                cmd += &format!(" nexthop via fe80::2 dev nh{i} weight {w}");
            }
        }
        self.r.ip(&cmd).map(|_| ())
    }

    fn hash_sysctls(&self, policy: Policy, fields: HashFields, seed: u32) -> Result<(), String> {
        let p = policy.number();
        let f = fields.bits();
        self.r.sysctl(&[
            format!("net.ipv4.fib_multipath_hash_policy={p}"),
            format!("net.ipv6.fib_multipath_hash_policy={p}"),
            format!("net.ipv4.fib_multipath_hash_fields={f}"),
            format!("net.ipv6.fib_multipath_hash_fields={f}"),
            format!("net.ipv4.fib_multipath_hash_seed={seed}"),
        ])
    }

    fn nh_of(&self, oif: u32) -> Result<usize, String> {
        self.nh_ifindex
            .iter()
            .position(|&i| i == oif)
            .ok_or_else(|| format!("left by ifindex {oif}"))
    }

    /// RTM_GETROUTE for each flow, from `in0`, in R: the index of the next hop chosen.
    fn route_get(&self, flows: &[FlowKey]) -> Result<Vec<usize>, String> {
        let oifs = std::thread::scope(|s| {
            s.spawn(|| -> Result<Vec<u32>, String> {
                self.r.enter()?;
                let fd = socket(
                    AddressFamily::Netlink,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::NetlinkRoute,
                )
                .map_err(|e| format!("netlink socket: {e}"))?;
                bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| e.to_string())?;
                flows
                    .iter()
                    .enumerate()
                    .map(|(seq, f)| getroute(&fd, seq as u32 + 1, f, self.in0))
                    .collect()
            })
            .join()
            .map_err(|_| "netlink thread panicked".to_string())?
        })?;
        oifs.into_iter().map(|o| self.nh_of(o)).collect()
    }

    /// Sends each packet from E into R's `in0` and returns the next hop it left R by.
    fn forward(&self, packets: &[Vec<u8>]) -> Result<Vec<usize>, String> {
        let oifs = std::thread::scope(|s| {
            s.spawn(|| -> Result<Vec<u32>, String> {
                self.r.enter()?;
                let cap = capture_socket(200_000)?;
                self.e.enter()?;
                let (raw4, raw6) = raw_sockets()?;
                inject(&cap, &raw4, &raw6, packets, &self.nh_ifindex)
            })
            .join()
            .map_err(|_| "forwarding thread panicked".to_string())?
        })?;
        oifs.into_iter().map(|o| self.nh_of(o)).collect()
    }
}

fn rtattr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_IIF: u16 = 3;
const RTA_OIF: u16 = 4;
const RTA_IP_PROTO: u16 = 27;
const RTA_SPORT: u16 = 28;
const RTA_DPORT: u16 = 29;
const RTA_FLOWLABEL: u16 = 31;

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// One RTM_GETROUTE request and its answer's RTA_OIF.
fn getroute(fd: &OwnedFd, seq: u32, f: &FlowKey, iif: u32) -> Result<u32, String> {
    let v4 = f.is_ipv4();
    let alen: u8 = if v4 { 32 } else { 128 };
    let mut body = vec![
        if v4 { 2 } else { 10 },
        alen,
        alen,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    rtattr(&mut body, RTA_DST, &addr_bytes(f.dst()));
    rtattr(&mut body, RTA_SRC, &addr_bytes(f.src()));
    rtattr(&mut body, RTA_IIF, &iif.to_ne_bytes());
    rtattr(&mut body, RTA_IP_PROTO, &[f.proto().number()]);
    rtattr(&mut body, RTA_SPORT, &f.sport().to_be_bytes());
    rtattr(&mut body, RTA_DPORT, &f.dport().to_be_bytes());
    if !v4 {
        rtattr(&mut body, RTA_FLOWLABEL, &f.flow_label().to_be_bytes());
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("netlink send: {e}"))?;
    let mut buf = vec![0u8; 8192];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| e.to_string())?;
    let buf = &buf[..n];
    let u16at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
    let u32at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    if n < 16 || u32at(8) != seq {
        return Err(format!("netlink: short or out-of-sequence answer for {f}"));
    }
    match u16at(4) {
        NLMSG_ERROR => Err(format!(
            "kernel refused the lookup of {f}: errno {}",
            -(u32at(16) as i32)
        )),
        RTM_NEWROUTE => {
            let end = (u32at(0) as usize).min(n);
            let mut o = 16 + 12;
            while o + 4 <= end {
                let (len, kind) = (usize::from(u16at(o)), u16at(o + 2));
                if len < 4 {
                    break;
                }
                if kind == RTA_OIF && o + 8 <= end {
                    return Ok(u32at(o + 4));
                }
                o += len.next_multiple_of(4);
            }
            Err(format!("no RTA_OIF in the answer for {f}"))
        }
        other => Err(format!("unexpected netlink message type {other}")),
    }
}

/// What identifies a packet on both sides of R: addresses and everything from the transport
/// header on (TTL and checksums change, those bytes do not).
fn packet_key(bytes: &[u8]) -> Option<Vec<u8>> {
    let p = Packet::parse(bytes, false).ok()?;
    let mut k = addr_bytes(p.src());
    k.extend(addr_bytes(p.dst()));
    k.extend_from_slice(bytes.get(p.transport_offset..p.len)?);
    Some(k)
}

/// Sends the packets in chunks and records the device each leaves R by. A packet not seen
/// within a timeout is sent again (the choice is deterministic, so a resend is harmless); the
/// capture socket sees each packet twice (entering `in0`, leaving `nhI`), which a burst could
/// overflow.
fn inject(
    cap: &OwnedFd,
    raw4: &OwnedFd,
    raw6: &OwnedFd,
    packets: &[Vec<u8>],
    nh: &[u32],
) -> Result<Vec<u32>, String> {
    const CHUNK: usize = 32;
    let mut out = vec![0u32; packets.len()];
    let mut buf = vec![0u8; 4096];
    for (chunk_no, chunk) in packets.chunks(CHUNK).enumerate() {
        let mut pending: HashMap<Vec<u8>, usize> = HashMap::new();
        for (j, p) in chunk.iter().enumerate() {
            let key = packet_key(p).ok_or("test packet does not parse")?;
            pending.insert(key, chunk_no * CHUNK + j);
            send_raw(raw4, raw6, p)?;
        }
        let mut timeouts = 0;
        while !pending.is_empty() {
            match recvfrom::<LinkAddr>(cap.as_raw_fd(), &mut buf) {
                Ok((n, Some(addr))) => {
                    let oif = addr.ifindex() as u32;
                    if addr.pkttype() != PACKET_OUTGOING || !nh.contains(&oif) {
                        continue;
                    }
                    if let Some(i) = packet_key(&buf[..n]).and_then(|k| pending.remove(&k)) {
                        out[i] = oif;
                    }
                }
                Ok((_, None)) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    timeouts += 1;
                    if timeouts > 5 {
                        return Err(format!("{} packets never left R", pending.len()));
                    }
                    let mut again: Vec<usize> = pending.values().copied().collect();
                    again.sort_unstable();
                    for i in again {
                        send_raw(raw4, raw6, &packets[i])?;
                    }
                }
                Err(e) => return Err(format!("capture: {e}")),
            }
        }
    }
    Ok(out)
}

fn random_flow(rng: &mut SimRng, v4: bool, labels: bool) -> FlowKey {
    let proto = if rng.random_bool(0.5) {
        IpProto::Tcp
    } else {
        IpProto::Udp
    };
    let sport = rng.random_range(1..=65535u16);
    let dport = rng.random_range(1..=65535u16);
    if v4 {
        // Unicast, not loopback, link-local or the edge's 192.x: addresses the kernel routes.
        let mut addr = || loop {
            let a: u32 = rng.random();
            let first = (a >> 24) as u8;
            if (1..=223).contains(&first) && ![127, 169, 192].contains(&first) {
                break Ipv4Addr::from(a);
            }
        };
        let (s, d) = (addr(), addr());
        FlowKey::v4(s, d, proto, sport, dport)
    } else {
        // Global unicast (2000::/3).
        let mut addr = || {
            let a: u128 = rng.random();
            Ipv6Addr::from((a & !(0b111 << 125)) | (0b001 << 125))
        };
        let (s, d) = (addr(), addr());
        let label = if labels && rng.random_bool(0.8) {
            rng.random_range(1..=0xf_ffffu32)
        } else {
            0
        };
        FlowKey::v6(s, d, proto, sport, dport, label)
    }
}

fn packet_of(f: &FlowKey) -> Vec<u8> {
    let b = PacketBuilder::new(f.src(), f.dst())
        .expect("same family")
        .flow_label(f.flow_label());
    let r = match f.proto() {
        IpProto::Tcp => b.tcp(
            &TcpRepr {
                sport: f.sport(),
                dport: f.dport(),
                seq: TcpSeq(1),
                flags: TcpFlags::SYN,
                window: 64240,
                ..TcpRepr::default()
            },
            &[],
        ),
        _ => b.udp(
            &UdpRepr {
                sport: f.sport(),
                dport: f.dport(),
            },
            b"tierlab",
        ),
    };
    r.expect("test packet builds")
}

fn group(weights: &[u32]) -> NextHopGroup {
    let ms = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| NextHop::weighted(i as u32, w))
        .collect();
    NextHopGroup::new(Algorithm::HashThreshold, ms, Instant::ZERO).expect("valid group")
}

struct Config {
    v4: bool,
    policy: Policy,
    fields: HashFields,
    seed: u32,
    weights: Vec<u32>,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IPv{} policy {} fields {:#x} seed {:#x} weights {:?}",
            if self.v4 { 4 } else { 6 },
            self.policy.number(),
            self.fields.bits(),
            self.seed,
            self.weights
        )
    }
}

fn compare(
    cfg: &Config,
    what: &str,
    inputs: &[HashInput],
    kernel: &[usize],
    path: HashPath,
) -> Result<(), String> {
    let hc = HashConfig::new(cfg.policy, cfg.fields, HashSeed::Fixed(cfg.seed)).with_path(path);
    let mut r = Router::new(hc);
    r.add_route(Prefix::default_route(cfg.v4), group(&cfg.weights));
    let mut bad = Vec::new();
    for (i, (inp, &k)) in inputs.iter().zip(kernel).enumerate() {
        let m = r.select(inp).map_err(|e| e.to_string())?.index;
        if m != k {
            bad.push(format!(
                "#{i} {} (quote {:?}): kernel nh{k}, model nh{m}",
                inp.flow, inp.icmp_quote
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}, {cfg}: {} of {} differ, e.g.\n  {}",
            bad.len(),
            inputs.len(),
            bad[..bad.len().min(5)].join("\n  ")
        ))
    }
}

/// Kernel answers kept for machines without namespaces: when `TIERLAB_ECMP_RECORD` names a
/// directory, each test writes the first `keep` cases of every configuration there as JSON
/// lines; `tests/ecmp_golden.rs` replays them (see tests/data/ecmp/README.md).
struct Recorder {
    file: Option<std::path::PathBuf>,
    keep: usize,
    lines: Vec<String>,
}

impl Recorder {
    fn from_env(name: &str, keep: usize) -> Self {
        let file =
            std::env::var_os("TIERLAB_ECMP_RECORD").map(|d| std::path::Path::new(&d).join(name));
        Self {
            file,
            keep,
            lines: Vec::new(),
        }
    }

    fn add(&mut self, cfg: &Config, path: HashPath, inputs: &[HashInput], kernel: &[usize]) {
        if self.file.is_none() {
            return;
        }
        let cases: Vec<serde_json::Value> = inputs
            .iter()
            .zip(kernel)
            .take(self.keep)
            .map(|(i, k)| {
                let quote = i.icmp_quote.map(|q| {
                    serde_json::json!({"src": q.src, "dst": q.dst, "flowlabel": q.flow_label,
                                       "next_header": q.next_header})
                });
                serde_json::json!({"flow": i.flow, "next_header": i.next_header,
                                   "quote": quote, "nexthop": k})
            })
            .collect();
        let line = serde_json::json!({
            "family": if cfg.v4 { 4 } else { 6 },
            "policy": cfg.policy.number(),
            "fields": cfg.fields.bits(),
            "seed": cfg.seed,
            "weights": cfg.weights,
            "path": if path == HashPath::Forwarding { "forwarding" } else { "route-lookup" },
            "cases": cases,
        });
        self.lines.push(line.to_string());
    }

    fn write(self) {
        if let Some(f) = self.file {
            let mut text = self.lines.join("\n");
            text.push('\n');
            std::fs::write(&f, text).unwrap_or_else(|e| panic!("writing {}: {e}", f.display()));
        }
    }
}

/// Creates the lab, or says why the test cannot run here.
fn lab_or_skip() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but network namespaces cannot be used (run as root): {e}")
        }
        Err(e) => {
            eprintln!("linux_ecmp: skipped, network namespaces unavailable (not root?): {e}");
            None
        }
    }
}

fn weights_for(rng: &mut SimRng, n: usize, equal: bool) -> Vec<u32> {
    (0..n)
        .map(|_| if equal { 1 } else { rng.random_range(1..=16) })
        .collect()
}

fn field_sets(v4: bool) -> Vec<(Policy, u32)> {
    let mut v = vec![
        (Policy::L3, HashFields::DEFAULT.bits()),
        (Policy::L4, HashFields::DEFAULT.bits()),
        (Policy::L3Inner, HashFields::DEFAULT.bits()),
        (Policy::Custom, 0x07),
        (Policy::Custom, 0x37),
        (Policy::Custom, 0x30),
        (Policy::Custom, 0x13),
        (Policy::Custom, 0xfff),
    ];
    if !v4 {
        v.push((Policy::Custom, 0x0b));
        v.push((Policy::Custom, 0x08));
    }
    v
}

/// Route lookups: every family, policy, field set, next-hop count, weighting and seed.
#[test]
fn kernel_route_lookups_agree_with_the_model() {
    let Some(lab) = lab_or_skip() else { return };
    let mut rng = seeded(0xec3f);
    let seeds = [1u32, 0x9e37_79b9, rng.next_u32() | 1];
    let mut rec = Recorder::from_env("route_get.jsonl", 4);
    let (mut configs, mut flows_checked) = (0, 0);
    let mut failures = Vec::new();
    for v4 in [true, false] {
        for n in [2usize, 3, 7, 13] {
            for equal in [true, false] {
                let weights = weights_for(&mut rng, n, equal);
                lab.route(v4, &weights).expect("multipath route");
                for (policy, fields) in field_sets(v4) {
                    for &seed in &seeds {
                        let cfg = Config {
                            v4,
                            policy,
                            fields: HashFields::new(fields).expect("valid fields"),
                            seed,
                            weights: weights.clone(),
                        };
                        lab.hash_sysctls(cfg.policy, cfg.fields, seed)
                            .expect("sysctls");
                        let flows: Vec<FlowKey> = (0..FLOWS)
                            .map(|_| random_flow(&mut rng, v4, true))
                            .collect();
                        let kernel = lab.route_get(&flows).expect("kernel answers");
                        let inputs: Vec<HashInput> =
                            flows.iter().map(|f| HashInput::flow(*f)).collect();
                        // `ip route get ... iif` forwards a built packet for IPv4; IPv6 looks
                        // the route up from the flow.
                        let path = if v4 {
                            HashPath::Forwarding
                        } else {
                            HashPath::RouteLookup
                        };
                        if let Err(e) = compare(&cfg, "route lookup", &inputs, &kernel, path) {
                            failures.push(e);
                        }
                        rec.add(&cfg, path, &inputs, &kernel);
                        configs += 1;
                        flows_checked += flows.len();
                    }
                }
            }
        }
    }
    eprintln!("linux_ecmp: {configs} route-lookup configurations, {flows_checked} flows checked");
    rec.write();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Real forwarding: TCP/UDP packets (IPv6 with flow labels) and ICMP errors.
#[test]
fn kernel_forwarding_agrees_with_the_model() {
    let Some(lab) = lab_or_skip() else { return };
    let mut rng = seeded(0xf0d);
    let seeds = [0x0bad_cafe_u32, rng.next_u32() | 1];
    let mut rec = Recorder::from_env("forwarding.jsonl", 8);
    let mut failures = Vec::new();
    let (mut configs, mut packets_checked) = (0, 0);
    for v4 in [false, true] {
        let counts: &[usize] = if v4 { &[3, 7] } else { &[2, 7, 13] };
        for &n in counts {
            let weights = weights_for(&mut rng, n, n != 7);
            lab.route(v4, &weights).expect("multipath route");
            for (policy, fields) in field_sets(v4) {
                for &seed in &seeds {
                    let cfg = Config {
                        v4,
                        policy,
                        fields: HashFields::new(fields).expect("valid fields"),
                        seed,
                        weights: weights.clone(),
                    };
                    lab.hash_sysctls(cfg.policy, cfg.fields, seed)
                        .expect("sysctls");
                    // Half flows, half ICMP errors about flows (a router on the way answering
                    // "too big" to the client).
                    let mut packets = Vec::with_capacity(FLOWS);
                    while packets.len() < FLOWS {
                        let f = random_flow(&mut rng, v4, true);
                        let p = packet_of(&f);
                        if packets.len() % 2 == 0 {
                            packets.push(p);
                        } else {
                            let from = random_flow(&mut rng, v4, false).src();
                            let err = build_error(&p, from, IcmpError::TooBig { mtu: 1280 }, 7);
                            if let Ok(Some(e)) = err {
                                packets.push(e);
                            }
                        }
                    }
                    let kernel = lab.forward(&packets).expect("packets forwarded");
                    let inputs: Vec<HashInput> = packets
                        .iter()
                        .map(|p| HashInput::from_packet(&Packet::parse(p, true).expect("parses")))
                        .collect();
                    if let Err(e) =
                        compare(&cfg, "forwarding", &inputs, &kernel, HashPath::Forwarding)
                    {
                        failures.push(e);
                    }
                    rec.add(&cfg, HashPath::Forwarding, &inputs, &kernel);
                    configs += 1;
                    packets_checked += packets.len();
                }
            }
        }
    }
    eprintln!("linux_ecmp: {configs} forwarding configurations, {packets_checked} packets checked");
    rec.write();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The kernel's bucket table of a resilient group: the next-hop object id of each bucket.
fn kernel_buckets(lab: &Lab, group_id: u32) -> Vec<u32> {
    let j = lab
        .r
        .ip(&format!("-j nexthop bucket show id {group_id}"))
        .expect("bucket dump");
    let v: serde_json::Value = serde_json::from_str(&j).expect("bucket json");
    let mut b: Vec<(u64, u32)> = v
        .as_array()
        .expect("bucket list")
        .iter()
        .map(|e| {
            let idx = e["bucket"]["index"].as_u64().expect("index");
            let nh = e["bucket"]["nhid"].as_u64().expect("nhid") as u32;
            (idx, nh)
        })
        .collect();
    b.sort_unstable();
    b.into_iter().map(|(_, nh)| nh).collect()
}

/// Next-hop objects (`ip nexthop`): hash-threshold (`mpath`) and resilient groups, before and
/// after a member leaves and comes back; bucket tables and route lookups.
#[test]
fn kernel_nexthop_groups_agree_with_the_model() {
    let Some(lab) = lab_or_skip() else { return };
    let mut rng = seeded(0x9e5);
    // Next-hop object k + base uses device nh{k}.
    for v4 in [true, false] {
        let base = if v4 { 1 } else { 101 };
        for k in 0..MAX_NH {
            let via = if v4 {
                format!("169.254.{k}.2")
            } else {
                "fe80::2".to_string()
            };
            let onlink = if v4 { " onlink" } else { "" };
            lab.r
                .ip(&format!(
                    "nexthop add id {} via {via} dev nh{k}{onlink}",
                    base + k as u32
                ))
                .expect("next-hop object");
        }
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for v4 in [true, false] {
        let fam = if v4 { "-4" } else { "-6" };
        let base = if v4 { 1u32 } else { 101 };
        for resilient in [false, true] {
            for n in [3usize, 7] {
                let weights = weights_for(&mut rng, n, n == 3);
                let buckets: u16 = if n == 3 { 32 } else { 128 };
                let alg = if resilient {
                    Algorithm::Resilient(tierlab::ecmp::ResilientParams {
                        buckets,
                        idle_timer: tierlab::wire::Duration::ZERO,
                        unbalanced_timer: tierlab::wire::Duration::ZERO,
                    })
                } else {
                    Algorithm::HashThreshold
                };
                let gid = 1000 + u32::from(v4) * 10 + u32::from(resilient) * 5 + n as u32;
                let spec = |members: &[NextHop]| {
                    let list: Vec<String> = members
                        .iter()
                        .map(|m| format!("{},{}", base + m.id.0, m.weight))
                        .collect();
                    let kind = if resilient {
                        format!(" type resilient buckets {buckets} idle_timer 0")
                    } else {
                        String::new()
                    };
                    format!("nexthop replace id {gid} group {}{kind}", list.join("/"))
                };
                let mut members: Vec<NextHop> = weights
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| NextHop::weighted(i as u32, w))
                    .collect();
                let mut model =
                    NextHopGroup::new(alg, members.clone(), Instant::ZERO).expect("group");
                lab.r.ip(&spec(&members)).expect("group created");
                while lab.r.ip(&format!("{fam} route del default")).is_ok() {}
                lab.r
                    .ip(&format!("{fam} route add default nhid {gid}"))
                    .expect("route via group");
                let seed = rng.next_u32() | 1;
                let policy = if n == 3 { Policy::L3 } else { Policy::L4 };
                lab.hash_sysctls(policy, HashFields::DEFAULT, seed)
                    .expect("sysctls");
                let path = if v4 {
                    HashPath::Forwarding
                } else {
                    HashPath::RouteLookup
                };
                let hasher = HashConfig::new(policy, HashFields::DEFAULT, HashSeed::Fixed(seed))
                    .with_path(path);
                // Three steps: as created, member 1 removed, member 1 appended again.
                for step in 0..3 {
                    let now = Instant::from_secs(step);
                    if step == 1 {
                        members.retain(|m| m.id.0 != 1);
                        model
                            .apply(
                                &tierlab::ecmp::GroupUpdate::Remove(tierlab::ecmp::NextHopId(1)),
                                now,
                            )
                            .expect("remove");
                    } else if step == 2 {
                        let back = NextHop::weighted(1, weights[1]);
                        members.push(back);
                        model
                            .apply(&tierlab::ecmp::GroupUpdate::Add(back), now)
                            .expect("add");
                    }
                    if step > 0 {
                        lab.r.ip(&spec(&members)).expect("group replaced");
                    }
                    let what = format!(
                        "{} group of {n} ({weights:?}), policy {}, step {step}",
                        if resilient { "resilient" } else { "mpath" },
                        policy.number()
                    );
                    if resilient {
                        let want: Vec<u32> = model
                            .buckets()
                            .iter()
                            .map(|b| base + b.expect("occupied").0)
                            .collect();
                        let got = kernel_buckets(&lab, gid);
                        if got != want {
                            failures.push(format!(
                                "{what}: buckets\n  kernel {got:?}\n  model  {want:?}"
                            ));
                        }
                    }
                    let flows: Vec<FlowKey> = (0..FLOWS)
                        .map(|_| random_flow(&mut rng, v4, true))
                        .collect();
                    let kernel = lab.route_get(&flows).expect("kernel answers");
                    let bad = flows
                        .iter()
                        .zip(&kernel)
                        .filter(|(f, k)| {
                            let m = model.members()
                                [model.select(hasher.hash(&HashInput::flow(**f)))]
                            .id
                            .0;
                            m as usize != **k
                        })
                        .count();
                    if bad > 0 {
                        failures.push(format!("{what}: {bad} of {FLOWS} flows differ"));
                    }
                    checked += flows.len();
                }
            }
        }
    }
    eprintln!("linux_ecmp: {checked} flows checked through next-hop groups");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
