//! The control plane in the lab (BGP hold timers, ExaBGP healthcheck, keepalived, gdnsd):
//! the checks the control-plane issue asks for, on the suite's runs with fewer clients.

use tierlab::l7::{ScriptedConfig, ScriptedStack};
use tierlab::lab::Scenario;
use tierlab::lab::control::ControlRecord;
use tierlab::lab::report::{EventReport, RunReport, run};
use tierlab::lab::suite::suite;

/// The suite run `name` (on the seed lab with `clients` clients), changed by `tweak`.
fn run_named(name: &str, clients: u32, tweak: impl FnOnce(&mut Scenario)) -> RunReport {
    let mut base = Scenario::default();
    base.workload.clients = clients;
    let mut s = suite(&base, 10.0)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no suite run {name}"))
        .scenario;
    tweak(&mut s);
    let r = run(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
    invariants(&r);
    r
}

/// Accounting adds up whatever the run.
fn invariants(r: &RunReport) {
    let c = &r.connections;
    assert_eq!(
        c.started,
        c.completed + c.reset + c.refused + c.timed_out + c.other + c.open_at_end,
        "{c:?}"
    );
    assert_eq!(
        r.packets.dropped_by_reason.values().sum::<u64>(),
        r.packets.dropped
    );
}

fn event(r: &RunReport) -> &EventReport {
    assert_eq!(r.events.len(), 1);
    &r.events[0]
}

/// When the routers' group of `family` ("ipv4"/"ipv6") changed, and to what.
fn router_changes<'a>(e: &'a EventReport, family: &str) -> Vec<&'a ControlRecord> {
    e.control
        .iter()
        .filter(|c| c.node == "routers" && c.what.starts_with(family))
        .collect()
}

#[test]
fn graceful_director_maintenance_breaks_nothing() {
    let r = run_named("director_disabled", 60, |_| {});
    let e = event(&r);
    assert_eq!((e.broken, e.broken_later), (0, 0), "{e:#?}");
    // The director announced the disabled MED at its next healthcheck (within the 10 s
    // interval), and the routers dropped it two BGP hops later.
    let announce = e
        .control
        .iter()
        .find(|c| c.node == "director7" && c.what.contains("MED 500"))
        .expect("director7 raised its MED");
    assert!(
        announce.at_s > 10.0 && announce.at_s <= 20.0,
        "{announce:?}"
    );
    for fam in ["ipv4", "ipv6"] {
        let ch = router_changes(e, fam);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert!(!ch[0].what.contains("director7"), "{ch:?}");
        assert!((ch[0].at_s - announce.at_s - 0.020).abs() < 1e-6, "{ch:?}");
    }
    // And the graceful removal (ExaBGP stopping) too.
    let r = run_named("director_removed", 60, |_| {});
    assert_eq!(event(&r).broken, 0);
}

#[test]
fn abrupt_director_death_blackholes_until_the_hold_timers_and_is_counted() {
    let r = run_named("director_died", 200, |_| {});
    let e = event(&r);
    let prop = 0.020;
    for (fam, hold, keepalive) in [("ipv4", 6.0, 2.0), ("ipv6", 3.0, 1.0)] {
        let ch = router_changes(e, fam);
        assert_eq!(ch.len(), 1, "{fam}: {ch:?}");
        let after = ch[0].at_s - e.at_s;
        // The hold timer started at the last keepalive before the death.
        assert!(
            after > hold - keepalive && after <= hold + prop + 1e-9,
            "{fam}: routers dropped the dead director after {after} s"
        );
    }
    // The blackhole cost connections, and the report says why.
    assert!(e.broken > 0, "{e:#?}");
    assert_eq!(e.broken_by_cause.blackholed, e.broken, "{e:#?}");
    assert!(e.dropped_by_reason.get("node_down").copied().unwrap_or(0) > 0);
}

#[test]
fn timers_come_from_the_scenario() {
    let r = run_named("director_died", 40, |s| {
        s.control.bgp.hold_v4_s = 3.0;
        s.control.bgp.keepalive_v4_s = 1.0;
        s.control.bgp.propagation_ms = 1.0;
    });
    let e = event(&r);
    let ch = router_changes(e, "ipv4");
    let after = ch[0].at_s - e.at_s;
    assert!(after > 2.0 && after <= 3.002 + 1e-9, "{after}");
}

#[test]
fn draining_a_proxy_with_inhibit_breaks_no_established_connection() {
    let r = run_named("proxy_drained_inhibit", 200, |_| {});
    let e = event(&r);
    assert_eq!(e.broken, 0, "{e:#?}");
    let set = e
        .control
        .iter()
        .filter(|c| c.what == "keepalived set weight 0 on proxy13")
        .count();
    assert_eq!(set, 7, "every director noticed, each at its own time");
    // New flows that hash to the weight-0 proxy find no destination (no mh-fallback): the
    // kernel answers port unreachable, and the client's connect fails at once
    // (ECONNREFUSED), not at its timeout: every later failure is a refusal, one ICMP error
    // each (the refused SYN is not sent again).
    assert!(e.broken_later > 0, "{e:#?}");
    assert_eq!(e.broken_later_by_cause.refused, e.broken_later, "{e:#?}");
    assert_eq!(r.connections.refused, e.broken_later, "{:?}", r.connections);
    assert_eq!(r.connections.timed_out, 0, "{:?}", r.connections);
    assert_eq!(
        r.packets.dropped_by_reason.get("no_destination").copied(),
        Some(r.connections.refused),
        "{:?}",
        r.packets.dropped_by_reason
    );
}

/// The README hopes a proxy in maintenance drains; keepalived deletes it, and with
/// `expire_nodest_conn=0` the kernel drops the packets of the flows still going to it.
#[test]
fn draining_a_proxy_by_deletion_drops_its_established_flows() {
    let r = run_named("proxy_drained", 200, |_| {});
    let e = event(&r);
    let deleted: Vec<f64> = e
        .control
        .iter()
        .filter(|c| c.what == "keepalived deleted proxy13")
        .map(|c| c.at_s)
        .collect();
    assert_eq!(deleted.len(), 7);
    // Each director on its own schedule: within one delay loop and a retry.
    assert!(
        deleted
            .iter()
            .all(|t| *t > 10.0 && *t <= 10.0 + 10.0 + 1.0 + 1e-9)
    );
    assert!(
        e.dropped_by_reason
            .get("dest_unavailable")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(e.broken > 0, "{e:#?}");
    assert_eq!(e.broken_by_cause.blackholed, e.broken);
    // Meanwhile the directors disagreed: from the first deletion to the last.
    assert!(
        e.control
            .iter()
            .any(|c| c.what == "hold 2 different sets of tables")
    );
    let (first, last) = (
        deleted.iter().copied().fold(f64::MAX, f64::min),
        deleted.iter().copied().fold(0.0, f64::max),
    );
    assert!(
        (e.directors_disagreed_s - (last - first)).abs() < 1e-6,
        "{} vs {first}..{last}",
        e.directors_disagreed_s
    );
}

#[test]
fn a_check_flap_on_one_director_shows_the_disagreement() {
    let r = run_named("proxy_check_flap", 60, |_| {});
    let e = event(&r);
    let what: Vec<(&str, &str)> = e
        .control
        .iter()
        .map(|c| (c.node.as_str(), c.what.as_str()))
        .collect();
    let deleted = what
        .iter()
        .position(|w| *w == ("director1", "keepalived deleted proxy1"))
        .expect("director1 deleted proxy1");
    assert_eq!(
        what[deleted + 1],
        ("directors", "hold 2 different sets of tables")
    );
    let back = what
        .iter()
        .position(|w| *w == ("director1", "keepalived added back proxy1"))
        .expect("and added it back");
    assert!(back > deleted);
    // No other director touched it.
    assert!(
        what.iter()
            .all(|(n, w)| !w.contains("proxy1") || *n == "director1"),
        "{what:?}"
    );
    // Added back at the head of director1's list, proxy1 changes its mh tables for good.
    assert_eq!(e.director_views_before, 1);
    assert_eq!(e.director_views_after, 2);
    let first = e.control[deleted].at_s;
    let end = 10.0 + 40.0;
    assert!(
        (e.directors_disagreed_s - (end - first)).abs() < 1e-6,
        "{}",
        e.directors_disagreed_s
    );
}

#[test]
fn dns_withdrawal_moves_new_connections_within_the_ttl() {
    // Caches are filled when the first connections open, at 0 s: they expire at 15 s.
    let ttl = 15.0;
    let r = run_named("dns_vip_down", 60, |s| {
        s.control.dns.ttl_s = ttl;
        s.duration_s = 40.0;
        s.window_s = 30.0;
    });
    let e = event(&r);
    assert_eq!(e.broken, 0);
    let v = e.vip_after.as_ref().expect("a DNS event reports its VIP");
    assert_eq!(v.vip.to_string(), "198.51.100.1");
    // Caches filled before the event kept sending new connections there…
    assert!(v.new_connections > 0, "{v:?}");
    // …until their TTL ran out (the admin state acts at once: no detection delay).
    let last = v.last_opened_s.unwrap();
    assert!(last < ttl, "{v:?}");
}

#[test]
fn without_the_control_plane_maintenance_acts_at_once() {
    let r = run_named("director_disabled", 40, |s| s.control.enabled = false);
    let e = event(&r);
    assert!(e.control.is_empty());
    assert_eq!(e.broken, 0);
    // dns_admin needs the control plane.
    let mut s = tierlab::lab::suite::by_name("dns_vip_down")
        .unwrap()
        .scenario;
    s.control.enabled = false;
    s.workload.names.clear();
    s.workload.clients = 10;
    let err = run(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap_err();
    assert!(err.to_string().contains("dns_admin"), "{err}");
}

/// A backend's agent says `drain`: each proxy acts on it at its next agent check (within
/// `inter`), after which no new request reaches it; the connections it holds go on.
#[test]
fn a_backend_drained_by_its_agent_gets_no_new_requests_after_the_agent_checks() {
    use tierlab::lab::build::Lab;
    use tierlab::lab::nodes::BackendNode;
    use tierlab::lab::scenario::{Action, NodeNameField};
    use tierlab::wire::Instant;

    let mut s = Scenario::default();
    s.workload.clients = 60;
    let mut lab = Lab::build(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
    lab.start();
    lab.advance(Instant::from_secs(5)).unwrap();
    let b1 = lab.node_id("backend1".parse().unwrap()).unwrap();
    let served = |lab: &mut Lab| {
        lab.net
            .node_mut::<BackendNode<ScriptedStack>>(b1)
            .unwrap()
            .server
            .take_served()
    };
    assert!(!served(&mut lab).is_empty(), "backend1 serves before");
    lab.apply(&Action::BackendAgent {
        target: NodeNameField("backend1".parse().unwrap()),
        reply: "drain".to_owned(),
    })
    .unwrap();
    // Agent checks every 2 s (inter): by 5 + 2 s every proxy has heard "drain"; a request
    // parsed later than that came from a connection the proxy opened before.
    lab.advance(Instant::from_secs(20)).unwrap();
    let late: Vec<_> = served(&mut lab)
        .into_iter()
        .filter(|r| r.at > Instant::from_secs(8))
        .collect();
    assert!(late.is_empty(), "{late:?}");
    // Draining broke nothing.
    let c = lab
        .net
        .node_mut::<tierlab::lab::nodes::ClientNode<ScriptedStack>>(lab.nodes.clients)
        .unwrap();
    assert!(c.client.take_records().iter().all(|r| matches!(
        r.outcome,
        tierlab::l7::client::Outcome::Completed | tierlab::l7::client::Outcome::Stopped
    )),);
}

/// keepalived's quorum gates the director's announcement: with a quorum of every proxy, the
/// director that loses one proxy's checks fails its healthcheck `fall` times (fast interval)
/// and announces the down MED; the routers stop using it while the others announce MED 100.
#[test]
fn a_lost_quorum_raises_the_med_and_the_routers_leave_that_director() {
    let r = run_named("proxy_check_flap", 40, |s| s.control.keepalived.quorum = 13);
    let e = event(&r);
    let deleted = e
        .control
        .iter()
        .find(|c| c.what == "keepalived deleted proxy1")
        .expect("director1 deleted proxy1")
        .at_s;
    let down = e
        .control
        .iter()
        .find(|c| c.node == "director1" && c.what == "announces the VIPs with MED 1000")
        .expect("director1 announced the down MED")
        .at_s;
    // The next healthcheck iteration (<= 10 s), then two more at the fast interval (1 s).
    assert!(
        down > deleted && down <= deleted + 10.0 + 2.0 + 1e-9,
        "{deleted} {down}"
    );
    let ch = router_changes(e, "ipv4");
    assert!(
        ch[0].at_s > down && !ch[0].what.contains("director1 "),
        "{ch:?}"
    );
}

/// `ipvsadm -E`: a VIP's scheduler or table size changes on every director; entries keep
/// their connections, and the directors still agree (they all rebuilt the same table).
#[test]
fn scheduler_and_table_size_changes_keep_established_connections() {
    use tierlab::lab::build::Lab;
    use tierlab::lab::nodes::DirectorNode;
    use tierlab::lab::scenario::{Action, SchedulerKind};
    use tierlab::wire::Instant;

    let mut s = Scenario::default();
    s.workload.clients = 60;
    let vip = s.topology.vips[0].addr;
    let mut lab = Lab::build(&s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
    lab.start();
    lab.advance(Instant::from_secs(4)).unwrap();
    lab.apply(&Action::SchedulerChanged {
        vip,
        scheduler: SchedulerKind::Sh,
    })
    .unwrap();
    lab.advance(Instant::from_secs(6)).unwrap();
    lab.apply(&Action::TableSizeChanged {
        vip,
        table_size: 1024,
    })
    .unwrap();
    lab.advance(Instant::from_secs(12)).unwrap();
    for &d in &lab.nodes.directors {
        let n = lab.net.node::<DirectorNode>(d).unwrap();
        let (_, svc) = n
            .director
            .services()
            .find(|(_, svc)| svc.config().vip == vip)
            .unwrap();
        assert_eq!(svc.config().table_size, Some(1024));
        assert_eq!(svc.table().len(), 1024);
    }
    assert_eq!(lab.distinct_director_views(), 1);
    let c = lab
        .net
        .node_mut::<tierlab::lab::nodes::ClientNode<ScriptedStack>>(lab.nodes.clients)
        .unwrap();
    let recs = c.client.take_records();
    assert!(recs.len() > 50);
    assert!(recs.iter().all(|r| matches!(
        r.outcome,
        tierlab::l7::client::Outcome::Completed | tierlab::l7::client::Outcome::Stopped
    )));
    // A size the new scheduler cannot use is refused with the VIP named.
    let err = lab
        .apply(&Action::TableSizeChanged {
            vip,
            table_size: 4093,
        })
        .unwrap_err();
    assert!(err.to_string().contains(&vip.to_string()), "{err}");
}
