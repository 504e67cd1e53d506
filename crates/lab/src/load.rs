//! Loading a scenario file: strict parsing, then validation, every error with file, line and
//! column.

use std::collections::BTreeSet;
use std::ops::Range;

use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::names::{NodeKind, NodeName};
use crate::scenario::{Action, Scenario, SchedulerKind};

/// `mh` table sizes the kernel accepts (net/netfilter/ipvs/ip_vs_mh.c `primes[]`).
pub const MH_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// A scenario file that cannot be used, and where.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The file (as the user named it).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A path to a value in the document, for locating validation errors.
#[derive(Clone, Debug)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Parses and validates a scenario. `file` is only used in error messages.
///
/// # Errors
/// A [`ScenarioError`] for a TOML syntax error, an unknown key, a wrong type, an impossible
/// topology, a value out of range or a reference to a node that does not exist at that time.
pub fn from_toml(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let at = |span: Option<Range<usize>>, message: String| {
        let (line, column) = line_col(text, span.map_or(0, |s| s.start));
        ScenarioError {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    };
    let scenario: Scenario =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().trim_end().to_owned()))?;
    if let Err((path, message)) = validate(&scenario) {
        let span = DeTable::parse(text)
            .ok()
            .and_then(|doc| locate(doc.get_ref(), &path));
        return Err(at(span, message));
    }
    Ok(scenario)
}

/// 1-based line and column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The span of the value at `path` (or of the deepest part of it that exists).
fn locate(doc: &DeTable<'_>, path: &[Seg]) -> Option<Range<usize>> {
    let mut table = doc;
    let mut best = None;
    let mut value: Option<&DeValue<'_>> = None;
    for seg in path {
        let next = match (seg, value) {
            (Seg::Key(k), None) => table
                .iter()
                .find(|(key, _)| key.get_ref() == k)
                .map(|(_, v)| v),
            (Seg::Key(k), Some(DeValue::Table(t))) => {
                t.iter().find(|(key, _)| key.get_ref() == k).map(|(_, v)| v)
            }
            (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(v) = next else { break };
        best = Some(v.span());
        if let DeValue::Table(t) = v.get_ref() {
            table = t;
            value = None;
        } else {
            value = Some(v.get_ref());
        }
        if let Some(DeValue::Table(t)) = value {
            table = t;
        }
    }
    best
}

type Invalid = (Vec<Seg>, String);

fn err<T>(path: &[Seg], message: impl Into<String>) -> Result<T, Invalid> {
    Err((path.to_vec(), message.into()))
}

fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    n >= 2
        && (2u64..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Checks everything serde cannot: ranges, impossible topologies, dangling references.
fn validate(s: &Scenario) -> Result<(), Invalid> {
    use Seg::{Index, Key};
    if !(s.duration_s.is_finite() && s.duration_s > 0.0) {
        return err(
            &[Key("duration_s")],
            "duration_s must be a positive number of seconds",
        );
    }
    if !(s.window_s.is_finite() && s.window_s > 0.0) {
        return err(
            &[Key("window_s")],
            "window_s must be a positive number of seconds",
        );
    }
    let t = &s.topology;
    for (key, n, min) in [
        ("users", t.users, 1),
        ("routers", t.routers, 1),
        ("directors", t.directors, 1),
        ("proxies", t.proxies, 1),
        ("backends", t.backends, 1),
        ("route_reflectors", t.route_reflectors, 0),
    ] {
        if n < min || n > 65_535 {
            return err(
                &[Key("topology"), Key(key)],
                format!("topology.{key} = {n}: must be between {min} and 65535"),
            );
        }
    }
    if u32::from(t.users_v4_start)
        .checked_add(t.users - 1)
        .is_none()
    {
        return err(
            &[Key("topology"), Key("users")],
            "users overflow the IPv4 address space from users_v4_start",
        );
    }
    if t.mtu < 1280 {
        return err(
            &[Key("topology"), Key("mtu")],
            format!("mtu {} is below 1280, the IPv6 minimum", t.mtu),
        );
    }
    if let Some(m) = t.client_mtu.filter(|&m| m < 1280) {
        return err(
            &[Key("topology"), Key("client_mtu")],
            format!("client_mtu {m} is below 1280, the IPv6 minimum"),
        );
    }
    if t.vips.is_empty() {
        return err(
            &[Key("topology"), Key("vips")],
            "at least one VIP is needed",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, v) in t.vips.iter().enumerate() {
        let here = [Key("topology"), Key("vips"), Index(i)];
        if !seen.insert((v.addr, v.port)) {
            return err(&here, format!("VIP {}:{} is listed twice", v.addr, v.port));
        }
        if let Some(size) = v.table_size
            && let Err(want) = table_size_ok(v.scheduler, size)
        {
            let path = [Key("topology"), Key("vips"), Index(i), Key("table_size")];
            return err(
                &path,
                format!("table_size {size} for {:?}: must be {want}", v.scheduler),
            );
        }
    }
    if s.ecmp.policy > 3 {
        return err(
            &[Key("ecmp"), Key("policy")],
            format!(
                "ecmp.policy {}: fib_multipath_hash_policy is 0, 1, 2 or 3",
                s.ecmp.policy
            ),
        );
    }
    if s.ecmp.hash_fields.is_some() && s.ecmp.policy != 3 {
        return err(
            &[Key("ecmp"), Key("hash_fields")],
            "ecmp.hash_fields only applies with policy 3",
        );
    }
    validate_control(s)?;
    if s.ecmp.resilient_buckets == 0 {
        return err(
            &[Key("ecmp"), Key("resilient_buckets")],
            "resilient_buckets must be at least 1",
        );
    }
    let w = &s.workload;
    if w.clients == 0 {
        return err(
            &[Key("workload"), Key("clients")],
            "at least one client is needed",
        );
    }
    if w.read_bytes == 0 {
        return err(
            &[Key("workload"), Key("read_bytes")],
            "read_bytes must be at least 1",
        );
    }
    if w.read_interval_min_ms > w.read_interval_max_ms {
        return err(
            &[Key("workload"), Key("read_interval_min_ms")],
            "read_interval_min_ms is above read_interval_max_ms",
        );
    }
    for (key, p) in [
        ("stop_probability", w.stop_probability),
        ("ipv6_share", w.ipv6_share),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return err(
                &[Key("workload"), Key(key)],
                format!("workload.{key} = {p}: must be between 0 and 1"),
            );
        }
    }
    if !(w.read_timeout_s.is_finite() && w.read_timeout_s > 0.0) {
        return err(
            &[Key("workload"), Key("read_timeout_s")],
            "read_timeout_s must be a positive number of seconds",
        );
    }
    validate_timeline(s)
}

/// Whether `size` is a table size `kind` can use; else what it must be.
fn table_size_ok(kind: SchedulerKind, size: u32) -> Result<(), &'static str> {
    let ok = match kind {
        SchedulerKind::Mh => MH_TABLE_SIZES.contains(&size),
        SchedulerKind::Sh => size.is_power_of_two() && (16..=1 << 20).contains(&size),
        SchedulerKind::Maglev => is_prime(size),
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        SchedulerKind::Mh => {
            "one of the kernel's primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071"
        }
        SchedulerKind::Sh => "a power of two from 16 to 1048576 (2^CONFIG_IP_VS_SH_TAB_BITS)",
        SchedulerKind::Maglev => "a prime",
    })
}

/// Whether every word of an agent reply is one HAProxy knows (HAProxy ignores unknown words;
/// in a scenario file they are typos).
fn agent_reply_ok(reply: &str) -> bool {
    let words = reply
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .count();
    words > 0 && tierlab_l7::http::parse_agent(reply).len() == words
}

/// Timers are positive numbers of seconds; counts are at least 1; names the workload resolves
/// exist.
fn validate_control(s: &Scenario) -> Result<(), Invalid> {
    use Seg::{Index, Key};
    let c = &s.control;
    let secs: [(&str, &str, f64); 13] = [
        ("bgp", "hold_v4_s", c.bgp.hold_v4_s),
        ("bgp", "keepalive_v4_s", c.bgp.keepalive_v4_s),
        ("bgp", "hold_v6_s", c.bgp.hold_v6_s),
        ("bgp", "keepalive_v6_s", c.bgp.keepalive_v6_s),
        ("healthcheck", "interval_s", c.healthcheck.interval_s),
        (
            "healthcheck",
            "fast_interval_s",
            c.healthcheck.fast_interval_s,
        ),
        ("keepalived", "delay_loop_s", c.keepalived.delay_loop_s),
        (
            "keepalived",
            "connect_timeout_s",
            c.keepalived.connect_timeout_s,
        ),
        (
            "keepalived",
            "delay_before_retry_s",
            c.keepalived.delay_before_retry_s,
        ),
        ("haproxy", "inter_s", c.haproxy.inter_s),
        ("dns", "ttl_s", c.dns.ttl_s),
        ("dns", "interval_s", c.dns.interval_s),
        (
            "bgp",
            "propagation_ms",
            c.bgp.propagation_ms / 1000.0 + 1e-9,
        ),
    ];
    for (section, key, v) in secs {
        if !(v.is_finite() && v > 0.0) {
            return err(
                &[Key("control"), Key(section), Key(key)],
                format!("control.{section}.{key} = {v}: must be a positive number"),
            );
        }
    }
    for (section, key, v) in [
        (
            "bgp",
            "keepalive_v4_s",
            c.bgp.keepalive_v4_s > c.bgp.hold_v4_s,
        ),
        (
            "bgp",
            "keepalive_v6_s",
            c.bgp.keepalive_v6_s > c.bgp.hold_v6_s,
        ),
    ] {
        if v {
            return err(
                &[Key("control"), Key(section), Key(key)],
                format!("control.{section}.{key} is longer than the hold time"),
            );
        }
    }
    for (section, key, v) in [
        ("healthcheck", "rise", c.healthcheck.rise),
        ("healthcheck", "fall", c.healthcheck.fall),
        ("dns", "down_thresh", c.dns.down_thresh),
        ("dns", "ok_thresh", c.dns.ok_thresh),
        ("dns", "up_thresh", c.dns.up_thresh),
        ("haproxy", "rise", u32::from(c.haproxy.rise)),
        ("haproxy", "fall", u32::from(c.haproxy.fall)),
    ] {
        if v == 0 {
            return err(
                &[Key("control"), Key(section), Key(key)],
                format!("control.{section}.{key} must be at least 1"),
            );
        }
    }
    for (i, name) in s.workload.names.iter().enumerate() {
        if !c.dns.names.iter().any(|n| &n.name == name) {
            return err(
                &[Key("workload"), Key("names"), Index(i)],
                format!("name {name:?} is not served by control.dns.names"),
            );
        }
        if !c.enabled {
            return err(
                &[Key("workload"), Key("names"), Index(i)],
                "names need the control plane (control.enabled = true) to resolve",
            );
        }
    }
    Ok(())
}

/// Replays the timeline on the set of existing nodes: a target must exist when it is removed,
/// failed or drained, and must not exist when it is added.
fn validate_timeline(s: &Scenario) -> Result<(), Invalid> {
    use Seg::{Index, Key};
    let t = &s.topology;
    let mut alive: BTreeSet<NodeName> = BTreeSet::new();
    for (kind, n) in [
        (NodeKind::Router, t.routers),
        (NodeKind::Director, t.directors),
        (NodeKind::Proxy, t.proxies),
        (NodeKind::Backend, t.backends),
    ] {
        alive.extend((1..=n).map(|index| NodeName { kind, index }));
    }
    let mut order: Vec<usize> = (0..s.events.len()).collect();
    order.sort_by(|&a, &b| {
        s.events[a]
            .at_s
            .total_cmp(&s.events[b].at_s)
            .then(a.cmp(&b))
    });
    let mut schedulers: std::collections::BTreeMap<std::net::IpAddr, SchedulerKind> =
        t.vips.iter().map(|v| (v.addr, v.scheduler)).collect();
    for i in order {
        let e = &s.events[i];
        match &e.action {
            Action::SchedulerChanged { vip, scheduler } => {
                schedulers.insert(*vip, *scheduler);
            }
            Action::TableSizeChanged { vip, table_size } => {
                if let Some(kind) = schedulers.get(vip)
                    && let Err(want) = table_size_ok(*kind, *table_size)
                {
                    return err(
                        &[Key("events"), Index(i), Key("table_size")],
                        format!(
                            "table_size {table_size} for {kind:?} at {} s: must be {want}",
                            e.at_s
                        ),
                    );
                }
            }
            _ => {}
        }
        if !(e.at_s.is_finite() && (0.0..=s.duration_s).contains(&e.at_s)) {
            return err(
                &[Key("events"), Index(i), Key("at_s")],
                format!(
                    "at_s {} is outside the run (0 to duration_s = {})",
                    e.at_s, s.duration_s
                ),
            );
        }
        if let Some((name, must_exist)) = e.action.target() {
            let expected = match e.action {
                Action::RouterAdded { .. } | Action::RouterLost { .. } => NodeKind::Router,
                Action::DirectorAdded { .. }
                | Action::DirectorRemoved { .. }
                | Action::DirectorFailed { .. }
                | Action::DirectorDisabled { .. }
                | Action::DirectorEnabled { .. } => NodeKind::Director,
                Action::ProxyAdded { .. }
                | Action::ProxyRemoved { .. }
                | Action::ProxyFailed { .. }
                | Action::ProxyDrained { .. }
                | Action::ProxyMaintenance { .. }
                | Action::ProxyCheckFailed { .. } => NodeKind::Proxy,
                _ => NodeKind::Backend,
            };
            let here = [Key("events"), Index(i), Key("target")];
            if name.kind != expected {
                return err(
                    &here,
                    format!(
                        "{} targets a {}, not {name}",
                        e.action.name(),
                        expected.prefix()
                    ),
                );
            }
            match (must_exist, alive.contains(&name)) {
                (true, false) => {
                    return err(
                        &here,
                        format!(
                            "{} at {} s: {name} does not exist at that time",
                            e.action.name(),
                            e.at_s
                        ),
                    );
                }
                (false, true) => {
                    return err(
                        &here,
                        format!("{} at {} s: {name} already exists", e.action.name(), e.at_s),
                    );
                }
                _ => {}
            }
            match e.action {
                Action::RouterLost { .. }
                | Action::DirectorRemoved { .. }
                | Action::DirectorFailed { .. }
                | Action::ProxyRemoved { .. }
                | Action::ProxyFailed { .. }
                | Action::BackendLost { .. } => {
                    alive.remove(&name);
                    if !alive.iter().any(|n| n.kind == name.kind) {
                        return err(
                            &here,
                            format!(
                                "{} at {} s leaves no {} at all",
                                e.action.name(),
                                e.at_s,
                                name.kind.prefix()
                            ),
                        );
                    }
                }
                Action::RouterAdded { .. }
                | Action::DirectorAdded { .. }
                | Action::ProxyAdded { .. }
                | Action::BackendAdded { .. } => {
                    alive.insert(name);
                }
                _ => {}
            }
        }
        match &e.action {
            Action::HashPolicyChanged { policy } if *policy > 3 => {
                return err(
                    &[Key("events"), Index(i), Key("policy")],
                    format!("policy {policy}: fib_multipath_hash_policy is 0, 1, 2 or 3"),
                );
            }
            Action::ProxyCheckFailed {
                director,
                duration_s,
                ..
            } => {
                if director.0.kind != NodeKind::Director {
                    return err(
                        &[Key("events"), Index(i), Key("director")],
                        format!("director must name a director, not {}", director.0),
                    );
                }
                if !alive.contains(&director.0) {
                    return err(
                        &[Key("events"), Index(i), Key("director")],
                        format!("{} does not exist at {} s", director.0, e.at_s),
                    );
                }
                if !(duration_s.is_finite() && *duration_s > 0.0) {
                    return err(
                        &[Key("events"), Index(i), Key("duration_s")],
                        "duration_s must be a positive number of seconds",
                    );
                }
            }
            Action::BackendAgent { reply, .. } if !agent_reply_ok(reply) => {
                return err(
                    &[Key("events"), Index(i), Key("reply")],
                    format!(
                        "agent reply {reply:?}: expected up, down, drain, maint, ready or a weight NN%"
                    ),
                );
            }
            Action::DnsAdmin { vip, .. }
                if !s.control.dns.names.iter().any(|n| n.addrs.contains(vip)) =>
            {
                return err(
                    &[Key("events"), Index(i), Key("vip")],
                    format!("dns_admin names {vip}, which no name in control.dns.names serves"),
                );
            }
            Action::SchedulerChanged { vip, .. } | Action::TableSizeChanged { vip, .. }
                if !t.vips.iter().any(|v| v.addr == *vip) =>
            {
                return err(
                    &[Key("events"), Index(i), Key("vip")],
                    format!(
                        "{} names VIP {vip}, which is not in topology.vips",
                        e.action.name()
                    ),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Scenario, ScenarioError> {
        from_toml(text, "test.toml")
    }

    #[test]
    fn empty_file_is_the_seed_lab() {
        let s = load("").unwrap();
        assert_eq!(s, Scenario::default());
        assert_eq!(
            (
                s.topology.directors,
                s.topology.proxies,
                s.topology.backends
            ),
            (7, 13, 10)
        );
        assert_eq!(s.topology.vips.len(), 8);
        assert_eq!(s.ecmp.policy, 1);
        assert!(s.director.sloppy_tcp && !s.director.pmtu_disc && !s.director.expire_nodest_conn);
    }

    #[test]
    fn full_file_round_trips() {
        let mut s = Scenario::default();
        s.events.push(crate::scenario::Event {
            at_s: 20.0,
            action: Action::ProxyAdded {
                target: crate::scenario::NodeNameField("proxy14".parse().unwrap()),
            },
        });
        s.events.push(crate::scenario::Event {
            at_s: 30.0,
            action: Action::EcmpReordered {},
        });
        let text = toml::to_string(&s).unwrap();
        assert_eq!(load(&text).unwrap(), s);
    }

    #[test]
    fn unknown_key_is_located() {
        let e = load("seed = 3\n[topology]\ndirectors = 7\nproxys = 13\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        assert!(e.message.contains("proxys"), "{e}");
        assert!(e.to_string().starts_with("test.toml:4:1: "));
    }

    #[test]
    fn client_mtu_defaults_to_mtu_and_is_checked() {
        assert_eq!(load("").unwrap().topology.client_mtu, None);
        let s = load("[topology]\nclient_mtu = 1400\n").unwrap();
        assert_eq!(s.topology.client_mtu, Some(1400));
        let e = load("[topology]\nclient_mtu = 576\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 14), "{e}");
        assert!(e.message.contains("client_mtu"), "{e}");
        let e = load("[topology]\nclient_mtu = 70000\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = load("[workload]\nclients = \"many\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn impossible_topology_is_located() {
        let e = load("[topology]\nusers = 20\ndirectors = 0\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 13), "{e}");
        assert!(e.message.contains("directors"));
        let e = load(
            "[[topology.vips]]\naddr = \"198.51.100.1\"\nscheduler = \"mh\"\ntable_size = 4000\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (4, 14), "{e}");
    }

    #[test]
    fn dangling_and_duplicate_references_are_located() {
        let text = "[[events]]\nat_s = 5\naction = \"proxy_removed\"\ntarget = \"proxy14\"\n";
        let e = load(text).unwrap_err();
        assert_eq!((e.line, e.column), (4, 10), "{e}");
        assert!(e.message.contains("proxy14 does not exist"), "{e}");
        // Added then removed: fine. Added twice: refused.
        let ok = "[[events]]\nat_s = 10\naction = \"proxy_removed\"\ntarget = \"proxy14\"\n\n[[events]]\nat_s = 5\naction = \"proxy_added\"\ntarget = \"proxy14\"\n";
        assert_eq!(load(ok).unwrap().events.len(), 2);
        let dup = "[[events]]\nat_s = 5\naction = \"director_added\"\ntarget = \"director3\"\n";
        assert!(load(dup).unwrap_err().message.contains("already exists"));
        let kind = "[[events]]\nat_s = 5\naction = \"director_failed\"\ntarget = \"proxy3\"\n";
        assert!(
            load(kind)
                .unwrap_err()
                .message
                .contains("targets a director")
        );
        let last = "[topology]\nbackends = 1\n[[events]]\nat_s = 5\naction = \"backend_lost\"\ntarget = \"backend1\"\n";
        assert!(
            load(last)
                .unwrap_err()
                .message
                .contains("leaves no backend")
        );
    }

    #[test]
    fn bad_event_shapes_are_refused() {
        let unknown_action =
            "[[events]]\nat_s = 5\naction = \"proxy_exploded\"\ntarget = \"proxy1\"\n";
        let e = load(unknown_action).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("proxy_exploded"), "{e}");
        let extra_key = "[[events]]\nat_s = 5\naction = \"ecmp_reordered\"\ntarget = \"router1\"\n";
        assert!(load(extra_key).unwrap_err().message.contains("target"));
        let bad_name = "[[events]]\nat_s = 5\naction = \"proxy_failed\"\ntarget = \"LB7-3\"\n";
        assert!(
            load(bad_name)
                .unwrap_err()
                .message
                .contains("not a node name")
        );
        let late = "duration_s = 10\n[[events]]\nat_s = 50\naction = \"ecmp_reordered\"\n";
        assert_eq!(load(late).unwrap_err().line, 3);
        let vip = "[[events]]\nat_s = 1\naction = \"table_size_changed\"\nvip = \"192.0.2.1\"\ntable_size = 251\n";
        assert_eq!(load(vip).unwrap_err().line, 4);
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(655_373) && is_prime(4_294_967_291));
        assert!(!is_prime(65535) && !is_prime(1) && !is_prime(u32::MAX));
    }

    #[test]
    fn syntax_error_is_located() {
        let e = load("seed = 1\nname = \"unterminated\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
