//! Running a scenario's timeline and reporting what broke.
//!
//! The JSON shape is the one `docs/report.md` documents (scripts depend on its keys).
//!
//! Attribution: a connection counts against an event when it was open just before the event
//! and ended unsuccessfully within `window_s` after it; when several events qualify, only the
//! latest is blamed (no connection is counted twice). Its cause comes from how it ended: a
//! RST built by a proxy is `reset_by_proxy`; a connection that got nothing for the read
//! timeout is `proxy_lost` after a proxy failure, `backend_lost` after a backend loss and
//! `blackholed` otherwise; anything else unsuccessful (truncated body, HTTP error, RST from
//! another node) is `other`.
//!
//! `icmp_misrouted` (checked before the timeout causes): the connection timed out (the
//! client's read or connect timeout, or TCP giving up) and, while it was open, `internet`
//! sent at least one ICMP "fragmentation needed" / "packet too big" about its flow (client
//! address and port, VIP and port), none of those errors reached the proxy holding the flow
//! (none lowered its path MTU), and at least one was dropped by a node without state for the
//! flow: a director without a connection entry or a proxy that does not hold it
//! ([`crate::icmp::IcmpLedger::misrouted`]). Errors lost otherwise (a dead node, a dead link)
//! leave the connection to the other causes. The run's `icmp` section counts such
//! connections whether or not an event is blamed for them.

use std::collections::BTreeMap;

use serde::Serialize;
use tierlab_l7::TcpStack;
use tierlab_l7::client::{ConnRecord, Outcome};
use tierlab_net::{NodeId, TraceFilter};
use tierlab_wire::Instant;

use crate::build::{Lab, LabError};
use crate::control::ControlRecord;
use crate::nodes::ClientNode;
use crate::scenario::{Action, EndpointKind, Scenario};

/// Causes of broken connections.
#[derive(Clone, Debug, Default, Eq, PartialEq, Serialize)]
pub struct Causes {
    /// Reset by a proxy that did not know the flow.
    pub reset_by_proxy: u64,
    /// Its proxy failed.
    pub proxy_lost: u64,
    /// Its backend was lost.
    pub backend_lost: u64,
    /// No answer until the client's timeout.
    pub blackholed: u64,
    /// Its path-MTU errors went to nodes without state for the flow, never to its proxy,
    /// and it timed out (see the module documentation).
    pub icmp_misrouted: u64,
    /// Refused while connecting: a director had no destination for it and answered ICMP
    /// port unreachable.
    pub refused: u64,
    /// Any other unsuccessful end.
    pub other: u64,
}

/// One event of the timeline, measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventReport {
    /// When.
    pub at_s: f64,
    /// What (the scenario's action name).
    pub action: String,
    /// The node it targets, if any.
    pub target: Option<String>,
    /// Connections open just before.
    pub active_before: u64,
    /// Connections open before that ended unsuccessfully within the window after.
    pub broken: u64,
    /// Why they broke.
    pub broken_by_cause: Causes,
    /// Connections opened after the event (and before the next one) that ended
    /// unsuccessfully within the window after the event: the cost of a transient for new
    /// connections (e.g. SYNs blackholed until a hold timer expires).
    pub broken_later: u64,
    /// Why those broke.
    pub broken_later_by_cause: Causes,
    /// For an event that takes a VIP out of DNS: the new connections the VIP still got.
    pub vip_after: Option<VipAfter>,
    /// Connections held per node of each tier just before the event.
    pub load_before: Load,
    /// Packets dropped (by the network or by nodes) from this event until the next one (or
    /// the end of the run), per reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// What the control plane decided from this event until the next one (or the end).
    pub control: Vec<ControlRecord>,
    /// Distinct sets of lookup tables among the live directors just before the event (1:
    /// they all agree).
    pub director_views_before: usize,
    /// The same at the next event (or the end of the run): above 1, directors disagree and
    /// a flow that changes director may change proxy.
    pub director_views_after: usize,
    /// For how long, from this event to the next (or the end), the live directors held
    /// different tables (from the control log's `directors` records; with the control plane
    /// off, changes are simultaneous and this stays 0 unless the event itself split them).
    pub directors_disagreed_s: f64,
}

/// New connections a VIP received after an event that took it out of DNS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipAfter {
    /// The VIP.
    pub vip: std::net::IpAddr,
    /// Connections opened to it after the event.
    pub new_connections: u64,
    /// When the last of them was opened, in seconds from the start (`None`: none was).
    pub last_opened_s: Option<f64>,
}

/// Load of one tier: connections per live node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TierStats {
    /// Live nodes.
    pub nodes: usize,
    /// Most connections on one node.
    pub max: usize,
    /// Mean connections per node.
    pub mean: f64,
}

impl TierStats {
    fn of(v: &[usize]) -> Self {
        let mean = if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<usize>() as f64 / v.len() as f64
        };
        Self {
            nodes: v.len(),
            max: v.iter().copied().max().unwrap_or(0),
            mean,
        }
    }
}

/// Load per tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// Directors: connection entries.
    pub directors: TierStats,
    /// Proxies: sessions.
    pub proxies: TierStats,
    /// Backends: connections.
    pub backends: TierStats,
}

impl Load {
    fn of(l: &crate::build::TierLoad) -> Self {
        Self {
            directors: TierStats::of(&l.directors),
            proxies: TierStats::of(&l.proxies),
            backends: TierStats::of(&l.backends),
        }
    }
}

/// Connection totals (they add up: started = completed + reset + timed_out + other +
/// open_at_end).
#[derive(Clone, Debug, Default, Eq, PartialEq, Serialize)]
pub struct Connections {
    /// Opened.
    pub started: u64,
    /// Ended well: the whole object, or the client chose to stop.
    pub completed: u64,
    /// Ended by a RST.
    pub reset: u64,
    /// Refused by an ICMP error while connecting (a director with no destination for the
    /// flow answers port unreachable).
    pub refused: u64,
    /// Ended by the client's read timeout or TCP giving up.
    pub timed_out: u64,
    /// Ended otherwise (truncated, HTTP error, corrupt).
    pub other: u64,
    /// Still open at the end of the run.
    pub open_at_end: u64,
}

/// Packet totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Packets {
    /// Sent by nodes.
    pub sent: u64,
    /// Delivered by the network.
    pub delivered: u64,
    /// Dropped, by the network or by nodes.
    pub dropped: u64,
    /// Drops per reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Still travelling at the end.
    pub in_flight: u64,
}

/// The report of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Endpoint kind.
    pub endpoint: EndpointKind,
    /// Events, in time order.
    pub events: Vec<EventReport>,
    /// Connection totals.
    pub connections: Connections,
    /// Packet totals.
    pub packets: Packets,
    /// Path-MTU errors (`topology.client_mtu`): sent, reached the proxy holding the flow,
    /// dropped where.
    pub icmp: crate::icmp::IcmpReport,
}

impl Causes {
    /// The cause that broke the most connections (`"-"` when none broke).
    pub fn main(&self) -> &'static str {
        [
            ("reset_by_proxy", self.reset_by_proxy),
            ("proxy_lost", self.proxy_lost),
            ("backend_lost", self.backend_lost),
            ("blackholed", self.blackholed),
            ("icmp_misrouted", self.icmp_misrouted),
            ("refused", self.refused),
            ("other", self.other),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map_or("-", |(k, _)| k)
    }
}

/// `broken` as a percentage of `active` (0 when nothing was active).
pub fn percent(broken: u64, active: u64) -> f64 {
    if active == 0 {
        0.0
    } else {
        100.0 * broken as f64 / active as f64
    }
}

impl RunReport {
    /// The events as CSV (a header line, then one line per event): `scenario, seed, at_s,
    /// action, target, active_before, broken`, then one column per cause.
    pub fn csv(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "scenario,seed,at_s,action,target,active_before,broken,reset_by_proxy,proxy_lost,backend_lost,blackholed,icmp_misrouted,refused,other\n",
        );
        for e in &self.events {
            let c = &e.broken_by_cause;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                self.scenario,
                self.seed,
                e.at_s,
                e.action,
                e.target.as_deref().unwrap_or(""),
                e.active_before,
                e.broken,
                c.reset_by_proxy,
                c.proxy_lost,
                c.backend_lost,
                c.blackholed,
                c.icmp_misrouted,
                c.refused,
                c.other
            );
        }
        out
    }

    /// The report as a human-readable table: one line per event, then the totals.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} (seed {}, {:?} endpoints)",
            self.scenario, self.seed, self.endpoint
        );
        let _ = writeln!(
            out,
            "{:>8}  {:<22} {:<11} {:>7} {:>7} {:>8} {:>6}  main cause",
            "at (s)", "event", "target", "active", "broken", "broken %", "later"
        );
        for e in &self.events {
            let _ = writeln!(
                out,
                "{:>8.1}  {:<22} {:<11} {:>7} {:>7} {:>7.1}% {:>6}  {}",
                e.at_s,
                e.action,
                e.target.as_deref().unwrap_or("-"),
                e.active_before,
                e.broken,
                percent(e.broken, e.active_before),
                e.broken_later,
                e.broken_by_cause.main()
            );
            if let Some(v) = &e.vip_after {
                let _ = writeln!(
                    out,
                    "{:>10}{} still got {} new connections, the last at {}",
                    "",
                    v.vip,
                    v.new_connections,
                    v.last_opened_s
                        .map_or_else(|| "-".to_owned(), |t| format!("{t:.1} s"))
                );
            }
            for c in &e.control {
                let _ = writeln!(
                    out,
                    "{:>10}{:>8.3} s  {:<10} {}",
                    "", c.at_s, c.node, c.what
                );
            }
        }
        let c = &self.connections;
        let _ = writeln!(
            out,
            "connections: {} started, {} completed, {} reset, {} refused, {} timed out, {} other, {} open at the end",
            c.started, c.completed, c.reset, c.refused, c.timed_out, c.other, c.open_at_end
        );
        let p = &self.packets;
        let _ = writeln!(
            out,
            "packets: {} sent, {} delivered, {} dropped {:?}, {} in flight",
            p.sent, p.delivered, p.dropped, p.dropped_by_reason, p.in_flight
        );
        let i = &self.icmp;
        if i.sent > 0 || i.fragmented > 0 {
            let _ = writeln!(
                out,
                "icmp (client mtu {}): {} errors sent, {} reached the flow's proxy, {} dropped {:?}; {} connections broken by icmp_misrouted",
                i.client_mtu,
                i.sent,
                i.reached_owner,
                i.dropped,
                i.dropped_by_reason,
                i.broken_misrouted
            );
        }
        out
    }
}

/// Builds the lab of `s`, runs it with its timeline, and reports.
///
/// # Errors
/// [`LabError`] when the lab cannot be built or an event cannot be applied.
pub fn run<S: TcpStack + 'static, F: FnMut() -> S + 'static>(
    s: &Scenario,
    stack: F,
) -> Result<RunReport, LabError> {
    run_traced(s, stack, None)
}

/// Where to write a capture of a run, and of which nodes.
pub struct Trace {
    /// The pcap stream.
    pub out: Box<dyn std::io::Write>,
    /// Names of the nodes whose packets to record (`router1`, `director3`, …, and `clients`,
    /// `internet`); empty: every packet once, as it leaves its sender.
    pub nodes: Vec<String>,
}

/// [`run`], writing the packets to a pcap as the run goes.
///
/// # Errors
/// As [`run`]; a node name in the trace that does not exist; a pcap write error.
pub fn run_traced<S: TcpStack + 'static, F: FnMut() -> S + 'static>(
    s: &Scenario,
    stack: F,
    trace: Option<Trace>,
) -> Result<RunReport, LabError> {
    run_inner(s, stack, trace, None)
}

/// [`run`], also handing back the client's connection records (what [`timeline`] needs).
///
/// # Errors
/// As [`run`].
pub fn run_recorded<S: TcpStack + 'static, F: FnMut() -> S + 'static>(
    s: &Scenario,
    stack: F,
) -> Result<(RunReport, ClientRecords), LabError> {
    let mut out = ClientRecords::default();
    let report = run_inner(s, stack, None, Some(&mut out))?;
    Ok((report, out))
}

fn run_inner<S: TcpStack + 'static, F: FnMut() -> S + 'static>(
    s: &Scenario,
    stack: F,
    trace: Option<Trace>,
    out: Option<&mut ClientRecords>,
) -> Result<RunReport, LabError> {
    let mut lab = Lab::build(s, stack)?;
    // The report reads the clients' records only.
    lab.set_backend_records(false);
    let traced = trace.is_some();
    if let Some(t) = trace {
        let filter = if t.nodes.is_empty() {
            TraceFilter::All
        } else {
            let mut set = std::collections::BTreeSet::new();
            for n in &t.nodes {
                let id = match n.as_str() {
                    "clients" => lab.nodes.clients,
                    "internet" => lab.nodes.internet,
                    other => {
                        let name =
                            other
                                .parse()
                                .map_err(|e: crate::names::BadName| LabError::Config {
                                    what: "pcap nodes".into(),
                                    why: e.to_string(),
                                })?;
                        lab.node_id(name).ok_or(LabError::NoSuchNode(name))?
                    }
                };
                set.insert(id);
            }
            TraceFilter::Nodes(set)
        };
        lab.net
            .trace_pcap(t.out, filter)
            .map_err(|e| LabError::Config {
                what: "pcap".into(),
                why: e.to_string(),
            })?;
    }
    lab.start();
    let mut order: Vec<usize> = (0..s.events.len()).collect();
    order.sort_by(|&a, &b| {
        s.events[a]
            .at_s
            .total_cmp(&s.events[b].at_s)
            .then(a.cmp(&b))
    });
    let mut applied = Vec::new();
    // Drop counters, control-log lengths and director views just before each event, then at
    // the end.
    let mut drops_at: Vec<BTreeMap<String, u64>> = Vec::new();
    let mut log_at: Vec<usize> = Vec::new();
    let mut views_at: Vec<usize> = Vec::new();
    for i in order {
        let e = &s.events[i];
        let at = secs(e.at_s);
        lab.advance(at)?;
        let active = client::<S>(&mut lab).client.open() as u64;
        let load = Load::of(&lab.load());
        drops_at.push(drop_counts(&lab));
        log_at.push(lab.control_log().len());
        views_at.push(lab.distinct_director_views());
        lab.apply(&e.action)?;
        applied.push((at, e.action.clone(), active, load));
    }
    let end = secs(s.duration_s);
    lab.advance(end)?;
    drops_at.push(drop_counts(&lab));
    // The log from each event's own decisions on (logged as it was applied) to the next.
    let mut log_from: Vec<usize> = log_at.clone();
    log_from.push(lab.control_log().len());
    views_at.push(lab.distinct_director_views());
    let control_log = lab.control_log().to_vec();
    let proxies: Vec<NodeId> = lab.nodes.proxies.clone();
    let c = client::<S>(&mut lab);
    let open_at_end = c.client.open() as u64;
    let started = c.client.opened();
    let records = c.client.take_records();
    let still_open: Vec<(std::net::SocketAddr, Instant)> = c
        .client
        .open_connections()
        .map(|(_, vip, started)| (vip, started))
        .collect();
    let ledger = crate::icmp::collect::<S>(&lab);
    if let Some(out) = out {
        out.ended = records.clone();
        out.open_since = still_open.iter().map(|&(_, t)| t).collect();
        out.end = secs(s.duration_s);
    }
    let window = secs(s.window_s) - Instant::ZERO;
    // Each unsuccessful connection counts against one event at most: the latest that came
    // while it was open and less than a window before it ended.
    let mut blamed: Vec<Vec<&ConnRecord>> = vec![Vec::new(); applied.len()];
    for r in &records {
        let culprit = applied
            .iter()
            .rposition(|(at, _, _, _)| r.started < *at && r.ended >= *at && r.ended < *at + window);
        if let Some(i) = culprit {
            blamed[i].push(r);
        }
    }
    // Connections opened after an event (the latest one before they opened) that ended
    // unsuccessfully within its window.
    let mut later: Vec<Vec<&ConnRecord>> = vec![Vec::new(); applied.len()];
    for r in &records {
        let after = applied
            .iter()
            .rposition(|(at, _, _, _)| r.started >= *at)
            .filter(|&i| r.ended < applied[i].0 + window);
        if let Some(i) = after {
            later[i].push(r);
        }
    }
    let events = applied
        .iter()
        .zip(&blamed)
        .zip(drops_at.windows(2))
        .enumerate()
        .map(|(i, (((at, action, active, load), recs), w))| {
            let mut e = event_report(*at, action, *active, load.clone(), recs, &proxies, &ledger);
            let (n, causes) = classify(action, &later[i], &proxies, &ledger);
            e.broken_later = n;
            e.broken_later_by_cause = causes;
            if let Action::DnsAdmin {
                vip,
                state: crate::scenario::DnsAdminState::Down,
            } = action
            {
                let opened: Vec<Instant> = records
                    .iter()
                    .map(|r| (r.vip, r.started))
                    .chain(still_open.iter().copied())
                    .filter(|(v, t)| v.ip() == *vip && *t >= *at)
                    .map(|(_, t)| t)
                    .collect();
                e.vip_after = Some(VipAfter {
                    vip: *vip,
                    new_connections: opened.len() as u64,
                    last_opened_s: opened.iter().max().map(|t| t.as_secs_f64()),
                });
            }
            e.dropped_by_reason = w[1]
                .iter()
                .map(|(k, &n)| (k.clone(), n - w[0].get(k).copied().unwrap_or(0)))
                .filter(|&(_, n)| n > 0)
                .collect();
            e.control = control_log[log_from[i]..log_from[i + 1]].to_vec();
            e.director_views_before = views_at[i];
            e.director_views_after = views_at[i + 1];
            let until = applied.get(i + 1).map_or(end, |next| next.0);
            e.directors_disagreed_s = disagreement(*at, until, views_at[i] > 1, &e.control);
            e
        })
        .collect();
    let mut conns = Connections {
        started,
        open_at_end,
        ..Connections::default()
    };
    for r in &records {
        match r.outcome {
            Outcome::Completed | Outcome::Stopped => conns.completed += 1,
            Outcome::Reset { .. } => conns.reset += 1,
            Outcome::Refused { .. } => conns.refused += 1,
            Outcome::TimedOut => conns.timed_out += 1,
            _ => conns.other += 1,
        }
    }
    if traced {
        lab.net.finish_pcap().map_err(|e| LabError::Config {
            what: "pcap".into(),
            why: e.to_string(),
        })?;
    }
    let acct = lab.net.accounting();
    let by_reason = drops_at.last().cloned().unwrap_or_default();
    Ok(RunReport {
        scenario: s.name.clone(),
        seed: s.seed,
        endpoint: s.endpoint,
        events,
        connections: conns,
        packets: Packets {
            sent: acct.sent,
            delivered: acct.delivered,
            dropped: acct.dropped_in_network + acct.dropped_by_nodes,
            dropped_by_reason: by_reason,
            in_flight: acct.in_flight,
        },
        icmp: ledger.report(&records),
    })
}

fn client<S: TcpStack + 'static>(lab: &mut Lab) -> &mut ClientNode<S> {
    let id = lab.nodes.clients;
    lab.net
        .node_mut::<ClientNode<S>>(id)
        .expect("the clients' node runs the lab's stack kind")
}

fn secs(s: f64) -> Instant {
    Instant::from_nanos((s * 1e9).round() as u64)
}

fn event_report(
    at: Instant,
    action: &Action,
    active: u64,
    load_before: Load,
    records: &[&ConnRecord],
    proxies: &[NodeId],
    icmp: &crate::icmp::IcmpLedger,
) -> EventReport {
    let (broken, causes) = classify(action, records, proxies, icmp);
    EventReport {
        at_s: at.as_secs_f64(),
        action: action.name().to_owned(),
        target: action.target().map(|(n, _)| n.to_string()),
        active_before: active,
        broken,
        broken_by_cause: causes,
        broken_later: 0,
        broken_later_by_cause: Causes::default(),
        vip_after: None,
        load_before,
        dropped_by_reason: BTreeMap::new(),
        control: Vec::new(),
        director_views_before: 0,
        director_views_after: 0,
        directors_disagreed_s: 0.0,
    }
}

/// Seconds within `[from, until)` during which the directors disagreed, starting in state
/// `split` and following the `directors` records of `log`.
fn disagreement(from: Instant, until: Instant, mut split: bool, log: &[ControlRecord]) -> f64 {
    let mut total = 0.0;
    let mut since = from.as_secs_f64();
    for c in log.iter().filter(|c| c.node == "directors") {
        let now_split = c.what != "all hold the same tables";
        if split && !now_split {
            total += c.at_s - since;
        } else if !split && now_split {
            since = c.at_s;
        }
        split = now_split;
    }
    if split {
        total += until.as_secs_f64() - since;
    }
    total
}

/// How many of `records` ended unsuccessfully, and why (see the module's doc).
fn classify(
    action: &Action,
    records: &[&ConnRecord],
    proxies: &[NodeId],
    icmp: &crate::icmp::IcmpLedger,
) -> (u64, Causes) {
    let mut causes = Causes::default();
    let mut broken = 0;
    for r in records {
        let cause = match r.outcome {
            Outcome::Completed | Outcome::Stopped => continue,
            Outcome::Reset { by: Some(n) } if proxies.contains(&NodeId(n)) => {
                &mut causes.reset_by_proxy
            }
            Outcome::Refused { .. } => &mut causes.refused,
            Outcome::TimedOut if icmp.misrouted(r) => &mut causes.icmp_misrouted,
            Outcome::TimedOut => match action {
                Action::ProxyFailed { .. } => &mut causes.proxy_lost,
                Action::BackendLost { .. } => &mut causes.backend_lost,
                _ => &mut causes.blackholed,
            },
            _ => &mut causes.other,
        };
        *cause += 1;
        broken += 1;
    }
    (broken, causes)
}

/// Drops so far (network and nodes), per reason name.
fn drop_counts(lab: &Lab) -> BTreeMap<String, u64> {
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for (_, reason, n) in lab
        .net
        .network_drops()
        .iter()
        .chain(lab.net.node_drops().iter())
    {
        *by_reason.entry(reason.name().to_owned()).or_default() += n;
    }
    by_reason
}

/// The client's connections of one run, from [`run_recorded`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientRecords {
    /// Connections that ended, in the order they ended.
    pub ended: Vec<ConnRecord>,
    /// When each connection still open at the end of the run was opened.
    pub open_since: Vec<Instant>,
    /// The end of the run.
    pub end: Instant,
}

/// One bucket of a [`timeline`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TimelineBucket {
    /// Start of the bucket, seconds of virtual time.
    pub from_s: f64,
    /// Connections open at the end of the bucket.
    pub active: u64,
    /// Connections that ended unsuccessfully during the bucket (any outcome but completed
    /// or stopped by the client).
    pub broken: u64,
}

/// Connections active and broken over time, in buckets of `bucket_s` seconds from 0 to the
/// end of the run (the last bucket may be shorter): the data of the lab's client chart.
/// An empty timeline for a bucket width that is not positive.
pub fn timeline(records: &ClientRecords, bucket_s: f64) -> Vec<TimelineBucket> {
    if bucket_s.is_nan() || bucket_s <= 0.0 {
        return Vec::new();
    }
    let width = secs(bucket_s) - Instant::ZERO;
    if width.as_nanos() == 0 {
        return Vec::new();
    }
    let end = records.end;
    let mut out = Vec::new();
    let mut from = Instant::ZERO;
    while from < end {
        let to = (from + width).min(end);
        let active = records
            .ended
            .iter()
            .filter(|r| r.started <= to && r.ended > to)
            .count()
            + records.open_since.iter().filter(|&&t| t <= to).count();
        let broken = records
            .ended
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Completed | Outcome::Stopped))
            .filter(|r| r.ended >= from && r.ended < to)
            .count();
        out.push(TimelineBucket {
            from_s: from.as_secs_f64(),
            active: active as u64,
            broken: broken as u64,
        });
        from = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Event, NodeNameField};
    use tierlab_l7::{ScriptedConfig, ScriptedStack};

    fn scenario() -> Scenario {
        let mut s = Scenario::default();
        s.topology.vips.retain(|v| v.addr.is_ipv4());
        s.workload.ipv6_share = 0.0;
        s.workload.clients = 30;
        // Reads of 16 KiB drain the receive buffer fast: a dead proxy is noticed within a
        // second or two (with 1 KiB reads, 64 KiB of buffered data hide it for ~16 s).
        s.workload.read_bytes = 16_384;
        s.duration_s = 9.0;
        s.window_s = 5.0;
        s.events = vec![
            Event {
                at_s: 4.0,
                action: Action::ProxyFailed {
                    target: NodeNameField("proxy2".parse().unwrap()),
                },
            },
            Event {
                at_s: 2.0,
                action: Action::EcmpReordered {},
            },
        ];
        s
    }

    #[test]
    fn same_seed_same_report_and_totals_add_up() {
        let s = scenario();
        let a = run(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
        let b = run(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
        assert_eq!(a, b);
        let c = &a.connections;
        assert_eq!(
            c.started,
            c.completed + c.reset + c.refused + c.timed_out + c.other + c.open_at_end,
            "{c:?}"
        );
        assert_eq!(
            a.packets.sent,
            a.packets.delivered + a.packets.in_flight + a.packets.dropped - dropped_by_nodes(&a)
        );
        // Events come out in time order; the proxy failure breaks the connections it held.
        assert_eq!(
            a.events
                .iter()
                .map(|e| e.action.as_str())
                .collect::<Vec<_>>(),
            ["ecmp_reordered", "proxy_failed"]
        );
        assert_eq!(a.events[0].broken, 0, "{:?}", a.events);
        // Load before the proxy failure: every connection is on one proxy and one backend,
        // and the directors hold entries for them.
        let l = &a.events[1].load_before;
        assert_eq!(
            (l.directors.nodes, l.proxies.nodes, l.backends.nodes),
            (7, 13, 10)
        );
        let on_proxies = (l.proxies.mean * l.proxies.nodes as f64).round() as u64;
        assert!(
            on_proxies <= a.events[1].active_before && on_proxies + 5 >= a.events[1].active_before,
            "{l:?}"
        );
        assert!(l.proxies.max as f64 >= l.proxies.mean && l.directors.max > 0);
        // Per-event drops add up to at most the run's, and a dead proxy's packets are
        // dropped as node_down after its failure.
        for (k, &n) in &a.packets.dropped_by_reason {
            let per_event: u64 = a
                .events
                .iter()
                .filter_map(|e| e.dropped_by_reason.get(k))
                .sum();
            assert!(per_event <= n, "{k}");
        }
        assert!(
            a.events[1]
                .dropped_by_reason
                .get("node_down")
                .copied()
                .unwrap_or(0)
                > 0,
            "{:?}",
            a.events[1]
        );
        assert!(a.events[1].broken_by_cause.proxy_lost > 0, "{:?}", a.events);
        let other_seed = run(&Scenario { seed: 2, ..s }, || {
            ScriptedStack::new(ScriptedConfig::default())
        })
        .unwrap();
        assert_ne!(other_seed, a);
    }

    /// A capture is part of a run's output: the same scenario and seed give the same bytes.
    #[test]
    fn same_seed_same_pcap() {
        let mut s = scenario();
        s.workload.clients = 5;
        s.duration_s = 3.0;
        let capture = || {
            let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
            impl std::io::Write for Sink {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.borrow_mut().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let trace = Trace {
                out: Box::new(Sink(buf.clone())),
                nodes: vec![],
            };
            let r = run_traced(
                &s,
                || ScriptedStack::new(ScriptedConfig::default()),
                Some(trace),
            )
            .unwrap();
            let bytes = buf.borrow().clone();
            (r, bytes)
        };
        let (ra, a) = capture();
        let (rb, b) = capture();
        assert_eq!(ra, rb);
        assert!(a.len() > 10_000, "{} bytes", a.len());
        assert_eq!(a, b);
        // Every packet sent is in the capture, once.
        let records = tierlab_wire::pcap::read_all(a.as_slice()).unwrap();
        assert_eq!(records.len() as u64, ra.packets.sent);
        assert!(
            records.windows(2).all(|w| w[0].at <= w[1].at),
            "virtual-time order"
        );
    }

    /// Drops reported by nodes (the network's own drops are the rest of `dropped`).
    fn dropped_by_nodes(r: &RunReport) -> u64 {
        let network: u64 = [
            "no_link",
            "link_down",
            "node_down",
            "no_neighbor",
            "too_big",
        ]
        .iter()
        .filter_map(|k| r.packets.dropped_by_reason.get(*k))
        .sum();
        r.packets.dropped - network
    }
}
