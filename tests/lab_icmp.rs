//! Path-MTU errors in the seed lab (`topology.client_mtu`, see `tierlab_lab::icmp`): the link
//! from `internet` to the clients is smaller than the proxies' segments; `internet` answers
//! each with an ICMP "fragmentation needed" / "packet too big" to the VIP, and the ECMP hash
//! of the edge routers decides which director gets it. Only the director on the flow's path
//! has a connection entry to forward it to the flow's proxy.
//!
//! What the kernel rules imply (crates/ecmp; `internet` hashes its own errors from the
//! offending packet, so they enter by the flow's edge router):
//! - policy 0 hashes an error by the header it quotes — for the lab's flows (IPv4, and IPv6
//!   with flow label 0 both ways) the flow's own hash: every error reaches the flow's director.
//! - policies 1 and 2 hash the error's own header (`internet` → VIP): one director per edge
//!   router and VIP gets all of them; a flow's errors reach its proxy only when its director
//!   happens to be that one — with equal weights, a 1/7 chance per flow with 7 directors.
//! - one director: every error reaches it, and it has every entry.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use tierlab::ecmp::HashInput;
use tierlab::l7::{ScriptedConfig, ScriptedStack, SmolConfig, SmolStack};
use tierlab::lab::build::Lab;
use tierlab::lab::icmp::{self, FlowId, FlowMarks};
use tierlab::lab::nodes::RouterNode;
use tierlab::lab::report::{RunReport, Trace, run, run_traced};
use tierlab::lab::scenario::{Action, Event, NodeNameField};
use tierlab::lab::{NodeKind, NodeName, Scenario};
use tierlab::wire::icmp::{IcmpError, build_error};
use tierlab::wire::{Instant, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq};

/// The seed lab (7 directors, 13 proxies, both families) with a small workload: 40 clients,
/// 120 connections of 200 kB, read to the end.
fn scenario(policy: u8, client_mtu: Option<u16>) -> Scenario {
    let mut s = Scenario::default();
    s.ecmp.policy = policy;
    s.topology.client_mtu = client_mtu;
    s.workload.clients = 40;
    s.workload.max_connections = Some(120);
    s.workload.object_bytes = 200_000;
    s.workload.stop_probability = 0.0;
    s.duration_s = 30.0;
    s.window_s = 30.0;
    s
}

fn scripted() -> ScriptedStack {
    ScriptedStack::new(ScriptedConfig::default())
}

fn go(s: &Scenario) -> RunReport {
    run(s, scripted).unwrap()
}

/// Every error is accounted for, and every connection ended.
fn check_totals(r: &RunReport) {
    let i = &r.icmp;
    assert_eq!(i.sent, i.reached_owner + i.dropped + i.in_flight, "{i:?}");
    assert_eq!(i.dropped, i.dropped_by_reason.values().sum::<u64>());
    assert_eq!(i.dropped, i.dropped_by_node.values().sum::<u64>());
    let c = &r.connections;
    assert_eq!((c.started, c.open_at_end), (120, 0), "{c:?}");
    // Each too-big segment `internet` refused is one error sent.
    assert_eq!(
        r.packets.dropped_by_reason.get("mtu_exceeded"),
        Some(&i.sent)
    );
}

/// Policy 0: every error reaches the proxy holding its flow; no connection breaks, although
/// every one of them met the small link (each flow got its errors).
#[test]
fn policy_0_every_error_reaches_the_owner() {
    let r = go(&scenario(0, Some(1400)));
    check_totals(&r);
    let i = &r.icmp;
    assert!(i.sent > 120 * 10, "{i:?}");
    assert_eq!((i.reached_owner, i.dropped), (i.sent, 0), "{i:?}");
    assert_eq!((i.flows, i.flows_reached_owner), (120, 120));
    assert_eq!(r.connections.completed, 120, "{:?}", r.connections);
    assert_eq!(i.broken_misrouted, 0);
}

/// Policy 1 (the lab): errors go to one director per edge router and VIP; most are dropped
/// there (no entry), their connections stall until the client's timeout: `icmp_misrouted`.
#[test]
fn policy_1_misroutes_most_errors_and_connections_break() {
    let mut s = scenario(1, Some(1400));
    // A harmless event early on, so the per-event attribution shows the cause too.
    s.events.push(Event {
        at_s: 0.5,
        action: Action::BackendAdded {
            target: NodeNameField(NodeName {
                kind: NodeKind::Backend,
                index: 11,
            }),
        },
    });
    let r = go(&s);
    check_totals(&r);
    let i = &r.icmp;
    assert_eq!(i.flows, 120);
    // A flow's errors reach its proxy when its director is the one the errors hash to: a 1/7
    // chance per flow. 120 flows: 17 expected, sd 3.8; these bounds are beyond 3 sd.
    let share = i.flows_reached_owner as f64 / i.flows as f64;
    assert!((0.05..=0.25).contains(&share), "{i:?}");
    let error_share = i.reached_owner as f64 / i.sent as f64;
    assert!((0.04..=0.25).contains(&error_share), "{i:?}");
    assert_eq!(
        i.dropped_by_reason.keys().collect::<Vec<_>>(),
        ["icmp_no_flow"],
        "{i:?}"
    );
    assert!(
        i.dropped_by_node.keys().all(|n| n.starts_with("director")),
        "{i:?}"
    );
    // Exactly the flows whose errors all went astray broke, all by timeout; the others
    // completed.
    assert_eq!(i.broken_misrouted, i.flows - i.flows_reached_owner, "{i:?}");
    let c = &r.connections;
    assert_eq!(c.timed_out, i.broken_misrouted, "{c:?}");
    assert_eq!(c.completed, i.flows_reached_owner, "{c:?}");
    let e = &r.events[0];
    assert!(e.broken > 0, "{e:?}");
    assert_eq!(e.broken_by_cause.icmp_misrouted, e.broken, "{e:?}");
    assert!(r.summary().contains("icmp_misrouted"));
}

/// Policy 2 hashes the error's outer addresses (the flow dissector does not look inside an
/// ICMP error): as policy 1, about 1/7 of the flows get their errors through.
#[test]
fn policy_2_hashes_the_outer_header_too() {
    let r = go(&scenario(2, Some(1400)));
    check_totals(&r);
    let i = &r.icmp;
    let share = i.flows_reached_owner as f64 / i.flows as f64;
    assert!((0.05..=0.25).contains(&share), "{i:?}");
    assert_eq!(i.broken_misrouted, i.flows - i.flows_reached_owner, "{i:?}");
}

/// One director holds every entry and gets every error.
#[test]
fn one_director_gets_every_error() {
    let mut s = scenario(1, Some(1400));
    s.topology.directors = 1;
    let r = go(&s);
    check_totals(&r);
    assert_eq!(r.icmp.reached_owner, r.icmp.sent);
    assert!(r.icmp.sent > 0);
    assert_eq!(r.connections.completed, 120);
}

/// The simulation agrees with the ECMP model flow by flow: a flow's errors reached its proxy
/// exactly when the edge router's hash sends the error to the flow's own director. And
/// `internet` sends each error by the flow's edge router (its hash is symmetric).
#[test]
fn each_flow_reaches_its_owner_exactly_when_the_hashes_agree() {
    for policy in [0, 1, 2] {
        let s = scenario(policy, Some(1400));
        let mut lab = Lab::build(&s, scripted).unwrap();
        lab.start();
        lab.net.run_until(Instant::from_secs(30));
        let ledger = icmp::collect::<ScriptedStack>(&lab);
        let with = |pick: fn(&FlowMarks) -> bool| -> BTreeSet<FlowId> {
            ledger
                .flows
                .iter()
                .filter(|(_, f)| pick(f))
                .map(|(k, _)| *k)
                .collect()
        };
        let reached = with(|f| !f.reached.is_empty());
        let flows = with(|f| !f.sent.is_empty());
        assert_eq!(flows.len(), 120);
        let inet = lab.net.node::<RouterNode>(lab.nodes.internet).unwrap();
        let edge = inet.mtu.as_deref().unwrap();
        let mut agree = 0;
        for &(client, vip) in &flows {
            let tcp = |sport, dport, flags| TcpRepr {
                sport,
                dport,
                seq: TcpSeq(1),
                ack: TcpSeq(1),
                flags,
                window: 1000,
                ..TcpRepr::default()
            };
            let request = PacketBuilder::new(client.ip(), vip.ip())
                .unwrap()
                .tcp(&tcp(client.port(), vip.port(), TcpFlags::ACK), b"GET")
                .unwrap();
            let reply = PacketBuilder::new(vip.ip(), client.ip())
                .unwrap()
                .tcp(&tcp(vip.port(), client.port(), TcpFlags::ACK), &[0; 1460])
                .unwrap();
            let src = if vip.is_ipv4() {
                edge.src_v4
            } else {
                edge.src_v6
            };
            let err = build_error(&reply, src, IcmpError::TooBig { mtu: 1400 }, 0)
                .unwrap()
                .unwrap();
            let parse = |b: &[u8]| HashInput::from_packet(&Packet::parse(b, false).unwrap());
            // internet: the flow's edge router, and the error's.
            let sel = inet.fwd.router.select(&parse(&request)).unwrap();
            let flow_hop = inet.fwd.hops[&sel.id];
            let err_hop = icmp::local_hop(&inet.fwd, vip.ip(), &parse(&reply)).unwrap();
            assert_eq!(flow_hop, err_hop, "the error enters by the flow's router");
            let r = match flow_hop.addr.unwrap() {
                IpAddr::V4(a) => u32::from(a.octets()[3]),
                IpAddr::V6(a) => u32::from(a.segments()[7]),
            };
            let router = lab
                .net
                .node::<RouterNode>(lab.nodes.routers[r as usize - 1])
                .unwrap();
            let director = |b: &[u8]| {
                let sel = router.fwd.router.select(&parse(b)).unwrap();
                router.fwd.hops[&sel.id].addr
            };
            let same = director(&request) == director(&err);
            assert_eq!(
                reached.contains(&(client, vip)),
                same,
                "policy {policy}, flow {client} -> {vip}"
            );
            agree += usize::from(same);
        }
        match policy {
            0 => assert_eq!(agree, 120),
            _ => assert!((6..=30).contains(&agree), "policy {policy}: {agree}"),
        }
    }
}

/// smoltcp endpoints: the path MTU is lowered too (the lost segments are resent by smoltcp's
/// timer, within the client's 2 s timeout): the same picture as with scripted TCP.
#[test]
fn smoltcp_endpoints_learn_the_path_mtu_too() {
    for policy in [0, 1] {
        let r = run(&scenario(policy, Some(1400)), || {
            SmolStack::new(SmolConfig::default())
        })
        .unwrap();
        check_totals(&r);
        let i = &r.icmp;
        assert_eq!(i.flows, 120);
        assert_eq!(r.connections.completed, i.flows_reached_owner, "{i:?}");
        assert_eq!(i.broken_misrouted, i.flows - i.flows_reached_owner, "{i:?}");
        if policy == 0 {
            assert_eq!(i.flows_reached_owner, 120);
        } else {
            let share = i.flows_reached_owner as f64 / i.flows as f64;
            assert!((0.05..=0.25).contains(&share), "{i:?}");
        }
    }
}

/// `client_mtu` equal to `mtu` (or absent) changes nothing: no error, the same report.
#[test]
fn client_mtu_equal_to_mtu_is_the_lab_as_before() {
    let mut s = scenario(1, None);
    s.workload.object_bytes = 100_000;
    s.workload.max_connections = Some(60);
    let a = go(&s);
    let b = go(&Scenario {
        topology: tierlab::lab::scenario::Topology {
            client_mtu: Some(s.topology.mtu),
            ..s.topology.clone()
        },
        ..s.clone()
    });
    assert_eq!(a, b);
    assert_eq!(a.icmp.sent + a.icmp.fragmented + a.icmp.dropped, 0);
    assert_eq!(a.icmp.client_mtu, 1500);
    assert!(!a.packets.dropped_by_reason.contains_key("mtu_exceeded"));
    assert_eq!(a.connections.completed, 60);
}

/// A pcap of such a run decodes cleanly in tcpdump: the errors from `internet`, and the same
/// errors tunnelled by a director to a proxy.
#[test]
fn pcap_of_a_misrouting_run_decodes_cleanly() {
    if !common::tcpdump::available() {
        return;
    }
    let mut s = scenario(1, Some(1400));
    s.workload.clients = 30;
    s.workload.max_connections = Some(30);
    s.workload.object_bytes = 20_000;
    s.duration_s = 5.0;
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
    let r = run_traced(&s, scripted, Some(trace)).unwrap();
    assert!(r.icmp.sent > 0 && r.icmp.reached_owner > 0, "{:?}", r.icmp);
    let bytes = buf.borrow().clone();
    let out = common::tcpdump::decode_cleanly(&bytes, r.packets.sent as usize, "lab-icmp");
    assert!(out.contains("need to frag (mtu 1400)"), "{out}");
    assert!(out.contains("packet too big, mtu 1400"), "{out}");
    assert!(out.contains("100.64.0.254 > 198.51.100."), "{out}");
    // Directors tunnel some to the flows' proxies: both headers are decoded (4in4: the
    // director's outer addresses, then the inner ICMP header; 6in6 on one line).
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("172.17.0.") && l.contains("proto ICMP (1)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("next-header IPv6 (41)") && l.contains("packet too big")),
        "{out}"
    );
    if std::env::var_os("TIERLAB_SHOW_TCPDUMP").is_some() {
        eprintln!("{out}");
    }
}
