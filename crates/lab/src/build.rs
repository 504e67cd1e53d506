//! Building the lab from a [`Scenario`]: nodes, links, routes and services in a
//! `tierlab-net` [`Network`], and disruptions applied to the tiers' state.
//!
//! ## Topology and address plan
//! ```text
//! clients ──p2p── internet ══edge══ router1..R ══core══ director1..D, proxy1..P ══backend══ backend1..B
//! ```
//! - `clients`: one host owning every user address (IPv4 and IPv6), linked to `internet`.
//! - `internet`: ECMP (static multipath, hash policy 1) over the routers for the VIPs; users
//!   on the point-to-point link. Edge segment: internet 100.64.0.254 / 2001:db8:ff::fe,
//!   router *i* 100.64.0.*i* / 2001:db8:ff::*i*.
//! - routers: ECMP over the directors for every VIP (IPv4 VIPs via the directors' IPv4
//!   addresses, IPv6 VIPs via their IPv6 ones), users via `internet`. Core segment: router *i*
//!   172.16.0.0+*i*, director *i* 172.17.0.0+*i*, proxy *i* 172.18.0.0+*i* (IPv6:
//!   2001:db8:0:1::*k*:*i*, *k* = 1, 2, 3 for routers, directors, proxies).
//! - directors: IPVS with one service per VIP and every proxy as a destination, in the order
//!   the proxies were added (IPv4 VIPs to the proxies' IPv4 tunnel addresses, IPv6 VIPs to
//!   their IPv6 ones).
//! - proxies: the VIPs bound on two tunnels (IPv4 outer 172.18.0.0+*i*, IPv6 outer
//!   2001:db8:0:1::3:*i*); replies to clients through the routers (a Linux
//!   default route over the routers, hash policy 0: direct return); backends on the backend
//!   segment (proxy *i* 2001:db8:1:0:1::*i*).
//! - backends: `topology.backends_start` + *i* − 1, port `topology.backend_port`.
//!
//! ## Control plane
//! With `control.enabled` (the default), BGP, ExaBGP's healthcheck, keepalived and gdnsd run
//! in virtual time (crate::control) and disruptions act through them; without it they act at
//! once on every tier. Known gaps: docs/architecture.md.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use rand::Rng as _;
use thiserror::Error;
use tierlab_ecmp::{
    Algorithm, HashConfig, HashFields, HashSeed, NextHop, NextHopGroup, NextHopId, Policy, Prefix,
    Router,
};
use tierlab_l4::icmp_limit::IcmpRateLimit;
use tierlab_l4::{Director, DirectorConfig, SchedFlags, ServiceConfig};
use tierlab_l7::{
    BackendConfig, BackendServer, ClientConfig, ClientHost, Proxy, ProxyConfig, ServerConfig,
    TcpStack,
};
use tierlab_net::{IfaceId, LinkId, LinkSpec, Network, Node, NodeId};
use tierlab_wire::{Duration, Instant, IpProto, SimRng, rng};

use crate::names::{NodeKind, NodeName};
use crate::nodes::{
    BackendNode, ClientNode, DirectorNode, Forwarding, Hop, HostRoutes, ProxyNode, RouterNode,
};
use crate::scenario::{Action, Balance, EcmpAlgorithm, Scenario, SchedulerKind};

/// Why a lab could not be built or changed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LabError {
    /// The action is not wired into the lab yet.
    #[error("action {0} is not wired into the lab yet")]
    Unsupported(&'static str),
    /// A node the action names does not exist (the scenario loader checks this; a caller of
    /// the library may not have).
    #[error("{0} does not exist")]
    NoSuchNode(NodeName),
    /// A tier refused part of the configuration.
    #[error("building {what}: {why}")]
    Config {
        /// What was being built.
        what: String,
        /// The tier's error.
        why: String,
    },
}

fn cfg_err(what: impl Into<String>, why: impl ToString) -> LabError {
    LabError::Config {
        what: what.into(),
        why: why.to_string(),
    }
}

/// Connections held by each live node of each tier, at one instant.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct TierLoad {
    /// Connection entries per director.
    pub directors: Vec<usize>,
    /// Sessions per proxy.
    pub proxies: Vec<usize>,
    /// Connections per backend.
    pub backends: Vec<usize>,
}

/// Node ids of a built lab, each list in creation order.
#[derive(Clone, Debug)]
pub struct LabNodes {
    /// The clients' host.
    pub clients: NodeId,
    /// The internet router.
    pub internet: NodeId,
    /// Routers.
    pub routers: Vec<NodeId>,
    /// Directors.
    pub directors: Vec<NodeId>,
    /// Proxies.
    pub proxies: Vec<NodeId>,
    /// Backends.
    pub backends: Vec<NodeId>,
}

type Factory = Box<dyn FnMut(u32, &mut SimRng) -> Result<Box<dyn Node>, LabError>>;

/// A built lab: the network and who is who in it.
pub struct Lab {
    /// The engine.
    pub net: Network,
    /// Node ids.
    pub nodes: LabNodes,
    names: BTreeMap<NodeName, NodeId>,
    scenario: Scenario,
    edge: LinkId,
    core: LinkId,
    back: LinkId,
    seeds: SimRng,
    algo: Algorithm,
    make_proxy: Factory,
    make_backend: Factory,
    /// Access to the nodes whose type depends on the stack kind.
    pub(crate) ops: Box<dyn StackOps>,
    /// Proxies in the directors' configuration (keepalived's), in the order they were added.
    pub(crate) in_service: Vec<u32>,
    /// The control plane (`control.enabled`).
    pub(crate) control: Option<crate::control::ControlPlane>,
    /// Without the control plane: failed directors the routers drop at their hold time.
    pub(crate) pending_withdrawals: Vec<(Instant, u32)>,
    /// Directors announcing the VIPs to the routers.
    announcing: Vec<u32>,
    /// Each router's hash seed.
    router_seeds: BTreeMap<NodeId, HashSeed>,
    /// Whether backends record each request served (see [`Lab::set_backend_records`]).
    backend_records: bool,
}

impl core::fmt::Debug for Lab {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lab")
            .field("net", &self.net)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Core-segment IPv4 address of node `i` (1-based) of kind `k` (1 router, 2 director, 3 proxy).
pub fn core_v4(k: u32, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + ((k - 1) << 16) + i)
}

/// Core-segment IPv6 address of node `i` of kind `k`.
pub fn core_v6(k: u32, i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, k as u16, i as u16)
}

fn core_for(k: u32, i: u32, v4: bool) -> IpAddr {
    if v4 {
        core_v4(k, i).into()
    } else {
        core_v6(k, i).into()
    }
}

fn edge_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
}

fn edge_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, i as u16)
}

fn edge_for(i: u32, v4: bool) -> IpAddr {
    if v4 {
        edge_v4(i).into()
    } else {
        edge_v6(i).into()
    }
}

const INTERNET: u32 = 0xfe;

/// Backend-side address of proxy `i`.
pub fn proxy_backend_side(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 1, 0, 0, i as u16)
}

fn backend_addr(s: &Scenario, i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(s.topology.backends_start) + u128::from(i - 1))
}

fn policy(p: u8) -> Policy {
    match p {
        0 => Policy::L3,
        2 => Policy::L3Inner,
        3 => Policy::Custom,
        _ => Policy::L4,
    }
}

fn algorithm(a: EcmpAlgorithm, buckets: u32) -> Algorithm {
    match a {
        EcmpAlgorithm::HashThreshold => Algorithm::HashThreshold,
        EcmpAlgorithm::Modulo => Algorithm::Modulo,
        EcmpAlgorithm::Resilient => Algorithm::Resilient(tierlab_ecmp::ResilientParams {
            buckets: u16::try_from(buckets).unwrap_or(u16::MAX),
            ..tierlab_ecmp::ResilientParams::default()
        }),
    }
}

/// A forwarding table with one multipath route per prefix over `hops` (equal weights).
fn multipath(
    router: Router,
    routes: &[(Prefix, Vec<Hop>)],
    algo: Algorithm,
) -> Result<Forwarding, LabError> {
    let mut fwd = Forwarding {
        router,
        hops: BTreeMap::new(),
        routes: BTreeMap::new(),
    };
    let mut next_id = 0u32;
    for (prefix, hops) in routes {
        let mut members = Vec::new();
        for hop in hops {
            let id = NextHopId(next_id);
            next_id += 1;
            fwd.hops.insert(id, *hop);
            members.push(NextHop { id, weight: 1 });
        }
        let group = NextHopGroup::new(algo, members.clone(), Instant::ZERO)
            .map_err(|e| cfg_err(format!("route {prefix}"), e))?;
        fwd.router.add_route(*prefix, group);
        fwd.routes
            .insert(*prefix, members.iter().map(|m| m.id).collect());
    }
    Ok(fwd)
}

fn host_prefix(a: IpAddr) -> Prefix {
    Prefix::new(a, if a.is_ipv4() { 32 } else { 128 }).expect("a full-length prefix is valid")
}

fn hash_fields(s: &Scenario) -> Result<HashFields, LabError> {
    match s.ecmp.hash_fields {
        Some(bits) => HashFields::new(bits).map_err(|e| cfg_err("ecmp.hash_fields", e)),
        None => Ok(HashFields::DEFAULT),
    }
}

/// A router's hash: the scenario's seed, or its own random one (a booted kernel's).
fn router_hash(
    s: &Scenario,
    policy: Policy,
    seeds: &mut SimRng,
) -> Result<(Router, HashSeed), LabError> {
    let seed = s
        .ecmp
        .seed
        .map_or_else(|| HashSeed::random(seeds), HashSeed::Fixed);
    Ok((
        Router::new(HashConfig::new(policy, hash_fields(s)?, seed)),
        seed,
    ))
}

/// The scenario's scheduler as `tierlab-l4` names it.
fn l4_kind(k: SchedulerKind) -> tierlab_l4::SchedulerKind {
    match k {
        SchedulerKind::Mh => tierlab_l4::SchedulerKind::Mh,
        SchedulerKind::Sh => tierlab_l4::SchedulerKind::Sh,
        SchedulerKind::Maglev => tierlab_l4::SchedulerKind::Maglev,
    }
}

/// A director with one service per VIP and `proxies` as destinations, added in that order.
fn make_director(s: &Scenario, i: u32, proxies: &[u32]) -> Result<DirectorNode, LabError> {
    let t = &s.topology;
    let mut d = Director::new(DirectorConfig {
        tunnel_src_v4: Some(core_v4(2, i)),
        tunnel_src_v6: Some(core_v6(2, i)),
        sloppy_tcp: s.director.sloppy_tcp,
        pmtu_disc: s.director.pmtu_disc,
        expire_nodest_conn: s.director.expire_nodest_conn,
        expire_quiescent_template: s.director.expire_quiescent_template,
        route_mtu: t.mtu,
        icmp_ratelimit: IcmpRateLimit {
            ratelimit_ms_v4: s.director.icmp_ratelimit_ms,
            ratelimit_ms_v6: s.director.icmpv6_ratelimit_ms,
            // The directors reach the clients by their default route.
            v6_route_prefix_len: 0,
            msgs_per_sec: s.director.icmp_msgs_per_sec,
            msgs_burst: s.director.icmp_msgs_burst,
        },
        ..DirectorConfig::default()
    });
    for v in &t.vips {
        d.add_local_address(v.addr);
        let svc = d
            .add_service(ServiceConfig {
                vip: v.addr,
                port: v.port,
                proto: IpProto::Tcp,
                scheduler: l4_kind(v.scheduler),
                table_size: v.table_size.map(|n| n as usize),
                flags: SchedFlags {
                    port: v.port_flag,
                    fallback: v.fallback,
                },
            })
            .map_err(|e| cfg_err(format!("director{i} service {}", v.addr), e))?;
        for &p in proxies {
            // Same-family destinations: tierlab-l4 does not take heterogeneous pools yet (the
            // kernel does in TUN mode since 3.18).
            d.add_dest(svc, core_for(3, p, v.addr.is_ipv4()), v.port, 1)
                .map_err(|e| cfg_err(format!("director{i} dest proxy{p}"), e))?;
        }
    }
    Ok(DirectorNode::new(d, IfaceId(0), Some(core_v4(1, 1).into())))
}

/// Backends that exist at some point of the run (at the start, or added by the timeline).
fn all_backends(s: &Scenario) -> u32 {
    let added = s.events.iter().filter_map(|e| match &e.action {
        Action::BackendAdded { target } => Some(target.0.index),
        _ => None,
    });
    added.fold(s.topology.backends, u32::max)
}

fn proxy_factory<S: TcpStack + 'static>(
    s: &Scenario,
    stack: Rc<RefCell<dyn FnMut() -> S>>,
) -> Factory {
    let s = s.clone();
    let balance = match s.proxy.balance {
        Balance::Roundrobin => tierlab_l7::Balance::RoundRobin,
        Balance::Leastconn => tierlab_l7::Balance::LeastConn,
        Balance::Source => tierlab_l7::Balance::Source,
    };
    // Every backend that will ever exist is configured; those not there at the start begin
    // down and come up when added.
    let servers = all_backends(&s);
    Box::new(move |i: u32, seeds: &mut SimRng| {
        let t = &s.topology;
        let mut cfg = ProxyConfig::lab(1, 1);
        cfg.tunnel_addr = core_v4(3, i).into();
        cfg.tunnel_addr_v6 = Some(core_v6(3, i).into());
        cfg.vips = t.vips.iter().map(|v| v.addr).collect();
        cfg.backend_addr = proxy_backend_side(i).into();
        cfg.mtu = t.mtu;
        cfg.balance = balance;
        cfg.send_proxy = s.proxy.send_proxy;
        let h = &s.control.haproxy;
        let inter = Duration::from_nanos((h.inter_s * 1e9).round() as u64);
        cfg.check = tierlab_l7::CheckConfig {
            enabled: true,
            inter,
            rise: h.rise,
            fall: h.fall,
        };
        cfg.agent_inter = inter;
        // HAProxy spreads its first checks over the interval; proxies are not synchronised.
        cfg.check_phase = Duration::from_nanos(seeds.random_range(0..inter.as_nanos().max(1)));
        cfg.servers = (1..=servers)
            .map(|b| ServerConfig {
                addr: SocketAddr::new(backend_addr(&s, b).into(), t.backend_port),
                weight: 1,
                agent_port: Some(5555),
            })
            .collect();
        let mut proxy =
            Proxy::new(cfg, (stack.borrow_mut())()).map_err(|e| cfg_err(format!("proxy{i}"), e))?;
        for b in t.backends + 1..=servers {
            proxy.pool_mut().set_up(b as usize - 1, false);
        }
        let default: Vec<(Prefix, Vec<Hop>)> = [true, false]
            .iter()
            .map(|&v4| {
                let hops = (1..=t.routers)
                    .map(|r| Hop {
                        iface: IfaceId(0),
                        addr: Some(core_for(1, r, v4)),
                    })
                    .collect();
                (Prefix::default_route(v4), hops)
            })
            .collect();
        // Linux's default policy (0) on a host, and a seed of its own, as a booted host has.
        let router = Router::new(HashConfig::new(
            Policy::L3,
            HashFields::DEFAULT,
            HashSeed::random(seeds),
        ));
        let fwd = multipath(router, &default, Algorithm::HashThreshold)?;
        let back_prefix = Prefix::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)),
            64,
        )
        .expect("valid prefix");
        let routes = HostRoutes {
            direct: vec![(back_prefix, IfaceId(1))],
            default: fwd,
        };
        Ok(Box::new(ProxyNode::new(proxy, routes)) as Box<dyn Node>)
    })
}

fn backend_factory<S: TcpStack + 'static>(
    s: &Scenario,
    stack: Rc<RefCell<dyn FnMut() -> S>>,
) -> Factory {
    let s = s.clone();
    Box::new(move |b: u32, _seeds: &mut SimRng| {
        let mut cfg = BackendConfig::lab(1);
        cfg.addr = backend_addr(&s, b).into();
        cfg.port = s.topology.backend_port;
        cfg.accept_proxy = s.proxy.send_proxy;
        cfg.max_size = cfg.max_size.max(s.workload.object_bytes);
        let server = BackendServer::new(cfg, (stack.borrow_mut())())
            .map_err(|e| cfg_err(format!("backend{b}"), e))?;
        Ok(Box::new(BackendNode::new(server, IfaceId(0))) as Box<dyn Node>)
    })
}

impl Lab {
    /// Builds the lab of `s` with endpoints from `stack` (called once per host).
    ///
    /// # Errors
    /// [`LabError`] when a tier refuses part of the configuration.
    pub fn build<S: TcpStack + 'static, F: FnMut() -> S + 'static>(
        s: &Scenario,
        stack: F,
    ) -> Result<Self, LabError> {
        let t = &s.topology;
        let link = LinkSpec {
            latency: Duration::from_micros(t.link_latency_us),
            mtu: t.mtu,
        };
        let stack: Rc<RefCell<dyn FnMut() -> S>> = Rc::new(RefCell::new(stack));
        let mut lab = Self {
            net: Network::new(),
            nodes: LabNodes {
                clients: NodeId(u32::MAX),
                internet: NodeId(u32::MAX),
                routers: Vec::new(),
                directors: Vec::new(),
                proxies: Vec::new(),
                backends: Vec::new(),
            },
            names: BTreeMap::new(),
            scenario: s.clone(),
            edge: LinkId(0),
            core: LinkId(0),
            back: LinkId(0),
            seeds: rng::stream(s.seed, 1),
            algo: algorithm(s.ecmp.algorithm, s.ecmp.resilient_buckets),
            make_proxy: proxy_factory(s, stack.clone()),
            make_backend: backend_factory(s, stack.clone()),
            ops: Box::new(Ops::<S>(std::marker::PhantomData)),
            in_service: (1..=t.proxies).collect(),
            announcing: (1..=t.directors).collect(),
            router_seeds: BTreeMap::new(),
            control: None,
            pending_withdrawals: Vec::new(),
            backend_records: true,
        };
        lab.edge = lab.net.add_segment(link);
        lab.core = lab.net.add_segment(link);
        lab.back = lab.net.add_segment(link);
        for i in 1..=t.routers {
            lab.add_router(i)?;
        }
        for i in 1..=t.directors {
            lab.add_director_node(i)?;
        }
        for i in 1..=t.proxies {
            lab.add_proxy_node(i)?;
        }
        for b in 1..=t.backends {
            lab.add_backend_node(b)?;
        }
        if s.control.enabled {
            let directors: Vec<u32> = (1..=t.directors).collect();
            lab.control = Some(crate::control::ControlPlane::new(
                s,
                &directors,
                &lab.in_service,
            ));
        }
        lab.build_edge(link, &stack)?;
        Ok(lab)
    }

    fn register(&mut self, kind: NodeKind, index: u32, id: NodeId) {
        self.names.insert(NodeName { kind, index }, id);
        match kind {
            NodeKind::Router => self.nodes.routers.push(id),
            NodeKind::Director => self.nodes.directors.push(id),
            NodeKind::Proxy => self.nodes.proxies.push(id),
            NodeKind::Backend => self.nodes.backends.push(id),
        }
    }

    /// The node id of a named node.
    pub fn node_id(&self, name: NodeName) -> Option<NodeId> {
        self.names.get(&name).copied()
    }

    /// Router `i`: VIPs over the announcing directors, users via the internet router.
    fn add_router(&mut self, i: u32) -> Result<(), LabError> {
        let s = &self.scenario;
        let (router, seed) = router_hash(s, policy(s.ecmp.policy), &mut self.seeds)?;
        let id = self.net.add_node(
            format!("router{i}"),
            Box::new(RouterNode::new(Forwarding {
                router,
                hops: BTreeMap::new(),
                routes: BTreeMap::new(),
            })),
        );
        let e = self
            .net
            .attach(self.edge, id, &[edge_v4(i).into(), edge_v6(i).into()])
            .map_err(|e| cfg_err("edge", e))?;
        let c = self
            .net
            .attach(self.core, id, &[core_v4(1, i).into(), core_v6(1, i).into()])
            .map_err(|e| cfg_err("core", e))?;
        let mut routes: Vec<(Prefix, Vec<Hop>)> = s
            .topology
            .vips
            .iter()
            .map(|v| {
                let hops = self
                    .announcing
                    .iter()
                    .map(|&d| Hop {
                        iface: c,
                        addr: Some(core_for(2, d, v.addr.is_ipv4())),
                    })
                    .collect();
                (host_prefix(v.addr), hops)
            })
            .collect();
        for v4 in [true, false] {
            routes.push((
                Prefix::default_route(v4),
                vec![Hop {
                    iface: e,
                    addr: Some(edge_for(INTERNET, v4)),
                }],
            ));
        }
        let node = self
            .net
            .node_mut::<RouterNode>(id)
            .expect("just added as a RouterNode");
        let router = node.fwd.router.clone();
        node.fwd = multipath(router, &routes, self.algo)?;
        self.register(NodeKind::Router, i, id);
        self.router_seeds.insert(id, seed);
        Ok(())
    }

    pub(crate) fn add_director_node(&mut self, i: u32) -> Result<(), LabError> {
        let node = make_director(&self.scenario, i, &self.in_service)?;
        let id = self.net.add_node(format!("director{i}"), Box::new(node));
        self.net
            .attach(self.core, id, &[core_v4(2, i).into(), core_v6(2, i).into()])
            .map_err(|e| cfg_err("core", e))?;
        self.register(NodeKind::Director, i, id);
        Ok(())
    }

    pub(crate) fn add_proxy_node(&mut self, i: u32) -> Result<(), LabError> {
        let node = (self.make_proxy)(i, &mut self.seeds)?;
        let id = self.net.add_node(format!("proxy{i}"), node);
        self.net
            .attach(self.core, id, &[core_v4(3, i).into(), core_v6(3, i).into()])
            .map_err(|e| cfg_err("core", e))?;
        self.net
            .attach(self.back, id, &[proxy_backend_side(i).into()])
            .map_err(|e| cfg_err("backend segment", e))?;
        self.register(NodeKind::Proxy, i, id);
        Ok(())
    }

    fn add_backend_node(&mut self, b: u32) -> Result<(), LabError> {
        let node = (self.make_backend)(b, &mut self.seeds)?;
        let id = self.net.add_node(format!("backend{b}"), node);
        self.net
            .attach(self.back, id, &[backend_addr(&self.scenario, b).into()])
            .map_err(|e| cfg_err("backend segment", e))?;
        self.register(NodeKind::Backend, b, id);
        if !self.backend_records {
            self.ops.backend_recording(&mut self.net, id, false);
        }
        Ok(())
    }

    /// Whether the backends, present and future, record each request served and each
    /// connection ended (`BackendServer::take_served`, `take_ended`; on by default). A run
    /// that never reads them turns this off: kept, they grow by one record per connection.
    pub fn set_backend_records(&mut self, on: bool) {
        self.backend_records = on;
        for &id in &self.nodes.backends {
            self.ops.backend_recording(&mut self.net, id, on);
        }
    }

    /// The internet router and the clients' host.
    fn build_edge<S: TcpStack + 'static>(
        &mut self,
        link: LinkSpec,
        stack: &Rc<RefCell<dyn FnMut() -> S>>,
    ) -> Result<(), LabError> {
        let s = self.scenario.clone();
        let t = &s.topology;
        let vip_routes: Vec<(Prefix, Vec<Hop>)> = t
            .vips
            .iter()
            .map(|v| {
                let hops = (1..=t.routers)
                    .map(|r| Hop {
                        iface: IfaceId(0),
                        addr: Some(edge_for(r, v.addr.is_ipv4())),
                    })
                    .collect();
                (host_prefix(v.addr), hops)
            })
            .collect();
        // The internet side hashes L4 (hash policy 1), with its own seed.
        let (router, _) = router_hash(&s, Policy::L4, &mut self.seeds)?;
        let mut inet = multipath(router, &vip_routes, Algorithm::HashThreshold)?;
        let internet = self
            .net
            .add_node("internet", Box::new(RouterNode::new(inet.clone())));
        self.net
            .attach(
                self.edge,
                internet,
                &[edge_for(INTERNET, true), edge_for(INTERNET, false)],
            )
            .map_err(|e| cfg_err("edge", e))?;
        let users_v4: Vec<IpAddr> = (0..t.users)
            .map(|k| IpAddr::V4(Ipv4Addr::from(u32::from(t.users_v4_start) + k)))
            .collect();
        let users_v6: Vec<IpAddr> = (0..t.users)
            .map(|k| IpAddr::V6(Ipv6Addr::from(u128::from(t.users_v6_start) + u128::from(k))))
            .collect();
        let w = &s.workload;
        let mut sources = users_v4.clone();
        if w.ipv6_share > 0.0 {
            sources.extend(users_v6.iter().copied());
        }
        let client_cfg = ClientConfig {
            sources,
            vips: t
                .vips
                .iter()
                .map(|v| SocketAddr::new(v.addr, v.port))
                .collect(),
            parallel: w.clients as usize,
            object_size: w.object_bytes,
            read_size: w.read_bytes as usize,
            think_max: Duration::from_millis(w.read_interval_max_ms),
            stop_probability: w.stop_probability,
            read_timeout: Duration::from_nanos((w.read_timeout_s * 1e9) as u64),
            max_connections: w.max_connections,
            ipv6_share: Some(w.ipv6_share),
        };
        let mut client = ClientHost::new(client_cfg, (stack.borrow_mut())());
        if let (Some(cp), false) = (&self.control, w.names.is_empty()) {
            client.set_destinations(Box::new(crate::control::DnsDestinations {
                dns: cp.dns.clone(),
                names: w.names.clone(),
                resolver: tierlab_control::Resolver::new(),
                ports: t.vips.iter().map(|v| (v.addr, v.port)).collect(),
                ipv6_share: w.ipv6_share,
            }));
        }
        let clients = self.net.add_node(
            "clients",
            Box::new(ClientNode::new(client, IfaceId(0), rng::stream(s.seed, 2))),
        );
        let (_, _, inet_iface) = self
            .net
            .connect(clients, internet, crate::icmp::client_link(&s, link))
            .map_err(|e| cfg_err("clients link", e))?;
        let id = NextHopId(u32::MAX);
        inet.hops.insert(
            id,
            Hop {
                iface: inet_iface,
                addr: None,
            },
        );
        for u in users_v4.iter().chain(users_v6.iter()) {
            let group = NextHopGroup::new(
                Algorithm::HashThreshold,
                vec![NextHop { id, weight: 1 }],
                Instant::ZERO,
            )
            .map_err(|e| cfg_err("user route", e))?;
            inet.router.add_route(host_prefix(*u), group);
        }
        self.net
            .node_mut::<RouterNode>(internet)
            .expect("just added as a RouterNode")
            .fwd = inet;
        let (v4, v6) = (edge_for(INTERNET, true), edge_for(INTERNET, false));
        crate::icmp::install(&mut self.net, internet, &s, inet_iface, v4, v6);
        self.nodes.clients = clients;
        self.nodes.internet = internet;
        Ok(())
    }

    /// Connections held now by each live node of each tier: directors (connection entries),
    /// proxies (sessions), backends (connections), in node order.
    pub fn load(&self) -> TierLoad {
        let live = |ids: &[NodeId]| -> Vec<NodeId> {
            ids.iter()
                .copied()
                .filter(|&id| self.net.node_is_up(id))
                .collect()
        };
        TierLoad {
            directors: live(&self.nodes.directors)
                .into_iter()
                .map(|d| {
                    self.net
                        .node::<DirectorNode>(d)
                        .map_or(0, |n| n.director.connections())
                })
                .collect(),
            proxies: live(&self.nodes.proxies)
                .into_iter()
                .map(|p| self.ops.proxy_sessions(&self.net, p))
                .collect(),
            backends: live(&self.nodes.backends)
                .into_iter()
                .map(|b| self.ops.backend_connections(&self.net, b))
                .collect(),
        }
    }

    /// The scenario the lab was built from.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Starts the workload: the clients open their first connections now.
    pub fn start(&mut self) {
        let now = self.net.now();
        self.net.schedule_timer(self.nodes.clients, now, u64::MAX);
    }

    pub(crate) fn id(&self, name: NodeName) -> Result<NodeId, LabError> {
        self.node_id(name).ok_or(LabError::NoSuchNode(name))
    }

    /// Runs `f` on the forwarding table of each of `ids` (routers).
    fn each_router(
        &mut self,
        ids: &[NodeId],
        mut f: impl FnMut(&mut Forwarding, Instant) -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        let now = self.net.now();
        for &id in ids {
            if let Some(n) = self.net.node_mut::<RouterNode>(id) {
                f(&mut n.fwd, now)?;
            }
        }
        Ok(())
    }

    /// Runs `f` on every proxy's default route.
    fn each_proxy_default(
        &mut self,
        mut f: impl FnMut(&mut Forwarding, Instant) -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        let now = self.net.now();
        for id in self.nodes.proxies.clone() {
            if let Some(routes) = self.ops.proxy_routes(&mut self.net, id) {
                f(&mut routes.default, now)?;
            }
        }
        Ok(())
    }

    /// Edits every director's services for proxy `i`: add it, delete it, or set its weight.
    fn each_director_dest(&mut self, i: u32, op: DestEdit) -> Result<(), LabError> {
        for d in 1..=self.nodes.directors.len() as u32 {
            self.director_dest(d, i, op)?;
        }
        Ok(())
    }

    /// Edits director `d`'s services for proxy `p` (adding what is there or deleting what is
    /// not does nothing: keepalived and an operator may both have acted).
    pub(crate) fn director_dest(&mut self, d: u32, p: u32, op: DestEdit) -> Result<(), LabError> {
        let name = NodeName {
            kind: NodeKind::Director,
            index: d,
        };
        let Some(id) = self.node_id(name) else {
            return Ok(());
        };
        let node = self
            .net
            .node_mut::<DirectorNode>(id)
            .expect("directors are DirectorNodes");
        let services: Vec<_> = node
            .director
            .services()
            .map(|(sid, svc)| (sid, svc.config().vip, svc.config().port))
            .collect();
        for (sid, vip, port) in services {
            let dest = core_for(3, p, vip.is_ipv4());
            let r = match op {
                DestEdit::Add => node.director.add_dest(sid, dest, port, 1).map(drop),
                DestEdit::Delete => node.director.del_dest(sid, dest, port).map(drop),
                DestEdit::Weight(w) => node.director.edit_dest(sid, dest, port, w).map(drop),
            };
            match r {
                Ok(())
                | Err(
                    tierlab_l4::L4Error::DestExists { .. } | tierlab_l4::L4Error::NoSuchDest { .. },
                ) => {}
                Err(e) => return Err(cfg_err(format!("proxy{p} on director{d}"), e)),
            }
        }
        Ok(())
    }

    /// Sets the routers' groups for the VIPs of one family to `directors`, in that order
    /// (an empty list removes the routes: the VIPs' packets then follow the default route).
    pub(crate) fn set_vip_directors(
        &mut self,
        v4: bool,
        directors: &[u32],
    ) -> Result<(), LabError> {
        if v4 {
            self.announcing = directors.to_vec();
        }
        let vips: Vec<IpAddr> = self
            .scenario
            .topology
            .vips
            .iter()
            .map(|v| v.addr)
            .filter(|a| a.is_ipv4() == v4)
            .collect();
        let routers = self.nodes.routers.clone();
        let algo = self.algo;
        self.each_router(&routers, |fwd, now| {
            for &v in &vips {
                let hops: Vec<Hop> = directors
                    .iter()
                    .map(|&d| Hop {
                        iface: IfaceId(1),
                        addr: Some(core_for(2, d, v4)),
                    })
                    .collect();
                fwd.set_members(host_prefix(v), &hops, algo, now)
                    .map_err(|e| cfg_err(format!("routes to {v}"), e))?;
            }
            Ok(())
        })
    }

    /// Routers stop sending VIP traffic to director `i` (its announcement is withdrawn, or its
    /// BGP session timed out).
    pub fn withdraw_director(&mut self, i: u32) -> Result<(), LabError> {
        self.announcing.retain(|&d| d != i);
        let vips: Vec<IpAddr> = self.scenario.topology.vips.iter().map(|v| v.addr).collect();
        let routers = self.nodes.routers.clone();
        self.each_router(&routers, |fwd, now| {
            for &v in &vips {
                fwd.remove_member(host_prefix(v), core_for(2, i, v.is_ipv4()), now)
                    .map_err(|e| cfg_err(format!("withdraw director{i}"), e))?;
            }
            Ok(())
        })
    }

    /// Routers start sending VIP traffic to director `i` too (appended to their groups).
    fn announce_director(&mut self, i: u32) -> Result<(), LabError> {
        self.announcing.push(i);
        let vips: Vec<IpAddr> = self.scenario.topology.vips.iter().map(|v| v.addr).collect();
        let routers = self.nodes.routers.clone();
        self.each_router(&routers, |fwd, now| {
            // A router's interfaces: 0 on the edge segment, 1 on the core segment.
            let iface = IfaceId(1);
            for &v in &vips {
                let hop = Hop {
                    iface,
                    addr: Some(core_for(2, i, v.is_ipv4())),
                };
                fwd.add_member(host_prefix(v), hop, now)
                    .map_err(|e| cfg_err(format!("announce director{i}"), e))?;
            }
            Ok(())
        })
    }

    /// New hash seeds (`Some`: that one for every router; `None`: each draws its own), or a
    /// new hash policy, on every router.
    fn rehash(
        &mut self,
        seed: Option<Option<u32>>,
        new_policy: Option<u8>,
    ) -> Result<(), LabError> {
        if let Some(p) = new_policy {
            self.scenario.ecmp.policy = p;
        }
        let p = policy(self.scenario.ecmp.policy);
        let fields = hash_fields(&self.scenario)?;
        let algo = self.algo;
        for id in self.nodes.routers.clone() {
            let seed = match seed {
                Some(Some(v)) => HashSeed::Fixed(v),
                Some(None) => HashSeed::random(&mut self.seeds),
                None => self.router_seeds[&id],
            };
            self.router_seeds.insert(id, seed);
            let router = Router::new(HashConfig::new(p, fields, seed));
            let now = self.net.now();
            let n = self
                .net
                .node_mut::<RouterNode>(id)
                .expect("routers are RouterNodes");
            n.fwd
                .rebuild(router, algo, now)
                .map_err(|e| cfg_err("rehash", e))?;
        }
        Ok(())
    }

    /// Applies a disruption now: through the control plane when it runs (its effects then
    /// come at the daemons' times, as [`Lab::advance`] runs them), else directly to every
    /// tier's state (a failed director then leaves the routers after `bgp.hold_v4_s`).
    ///
    /// # Errors
    /// [`LabError::Unsupported`] for actions not wired yet; [`LabError::NoSuchNode`];
    /// [`LabError::Config`] when a tier refuses the change.
    pub fn apply(&mut self, action: &Action) -> Result<(), LabError> {
        if self.apply_controlled(action)? {
            return Ok(());
        }
        match action {
            Action::EcmpReordered {} => {
                let routers = self.nodes.routers.clone();
                self.each_router(&routers, |fwd, now| {
                    let prefixes: Vec<Prefix> = fwd
                        .routes
                        .iter()
                        .filter(|(_, m)| m.len() > 1)
                        .map(|(p, _)| *p)
                        .collect();
                    for prefix in prefixes {
                        let members = fwd.routes.get_mut(&prefix).expect("listed above");
                        members.reverse();
                        let order = members.clone();
                        fwd.router
                            .update_route(&prefix, &tierlab_ecmp::GroupUpdate::Reorder(order), now)
                            .map_err(|e| cfg_err(format!("reorder {prefix}"), e))?;
                    }
                    Ok(())
                })
            }
            Action::EcmpReseeded { seed } => self.rehash(Some(*seed), None),
            Action::HashPolicyChanged { policy } => self.rehash(None, Some(*policy)),
            Action::RouterAdded { target } => {
                let i = target.0.index;
                self.add_router(i)?;
                let vips: Vec<IpAddr> =
                    self.scenario.topology.vips.iter().map(|v| v.addr).collect();
                let internet = [self.nodes.internet];
                self.each_router(&internet, |fwd, now| {
                    for &v in &vips {
                        let hop = Hop {
                            iface: IfaceId(0),
                            addr: Some(edge_for(i, v.is_ipv4())),
                        };
                        fwd.add_member(host_prefix(v), hop, now)
                            .map_err(|e| cfg_err(format!("router{i} on the internet side"), e))?;
                    }
                    Ok(())
                })?;
                self.each_proxy_default(|fwd, now| {
                    for v4 in [true, false] {
                        let hop = Hop {
                            iface: IfaceId(0),
                            addr: Some(core_for(1, i, v4)),
                        };
                        fwd.add_member(Prefix::default_route(v4), hop, now)
                            .map_err(|e| cfg_err(format!("router{i} on a proxy"), e))?;
                    }
                    Ok(())
                })
            }
            Action::RouterLost { target } => {
                let i = target.0.index;
                let id = self.id(target.0)?;
                self.set_up(id, false)?;
                // Neighbours stop using it at once (fib_multipath_use_neigh after the neighbour
                // entry fails; the few seconds that takes are not modelled yet).
                let vips: Vec<IpAddr> =
                    self.scenario.topology.vips.iter().map(|v| v.addr).collect();
                let internet = [self.nodes.internet];
                self.each_router(&internet, |fwd, now| {
                    for &v in &vips {
                        fwd.remove_member(host_prefix(v), edge_for(i, v.is_ipv4()), now)
                            .map_err(|e| cfg_err(format!("router{i} lost"), e))?;
                    }
                    Ok(())
                })?;
                self.each_proxy_default(|fwd, now| {
                    for v4 in [true, false] {
                        fwd.remove_member(Prefix::default_route(v4), core_for(1, i, v4), now)
                            .map_err(|e| cfg_err(format!("router{i} lost"), e))?;
                    }
                    Ok(())
                })
            }
            Action::DirectorAdded { target } => {
                self.add_director_node(target.0.index)?;
                self.announce_director(target.0.index)
            }
            Action::DirectorRemoved { target } => {
                self.id(target.0)?;
                self.withdraw_director(target.0.index)
            }
            Action::DirectorFailed { target } => {
                let id = self.id(target.0)?;
                let hold = self.scenario.control.bgp.hold_v4_s;
                let at = self.net.now() + Duration::from_nanos((hold * 1e9).round() as u64);
                self.pending_withdrawals.push((at, target.0.index));
                self.set_up(id, false)
            }
            Action::ProxyAdded { target } => {
                self.add_proxy_node(target.0.index)?;
                self.in_service.push(target.0.index);
                self.each_director_dest(target.0.index, DestEdit::Add)
            }
            Action::ProxyRemoved { target } => {
                self.id(target.0)?;
                self.in_service.retain(|&p| p != target.0.index);
                self.each_director_dest(target.0.index, DestEdit::Delete)
            }
            Action::ProxyDrained { target } => {
                self.id(target.0)?;
                self.each_director_dest(target.0.index, DestEdit::Weight(0))
            }
            Action::DirectorDisabled { target } => {
                self.id(target.0)?;
                self.withdraw_director(target.0.index)
            }
            Action::DirectorEnabled { target } => {
                self.id(target.0)?;
                if self.announcing.contains(&target.0.index) {
                    Ok(())
                } else {
                    self.announce_director(target.0.index)
                }
            }
            Action::ProxyMaintenance { target, state } => {
                // Every director's check fails at once: keepalived's default deletes it.
                let id = self.id(target.0)?;
                let up = *state == crate::scenario::AgentState::Up;
                self.ops.proxy_set_agent(&mut self.net, id, up);
                let op = match (up, self.scenario.control.keepalived.inhibit_on_failure) {
                    (true, false) => DestEdit::Add,
                    (true, true) => DestEdit::Weight(1),
                    (false, false) => DestEdit::Delete,
                    (false, true) => DestEdit::Weight(0),
                };
                self.each_director_dest(target.0.index, op)
            }
            Action::BackendAgent { target, reply } => {
                let id = self.id(target.0)?;
                self.ops.backend_agent(&mut self.net, id, reply);
                Ok(())
            }
            other @ (Action::ProxyCheckFailed { .. } | Action::DnsAdmin { .. }) => {
                Err(LabError::Unsupported(other.name()))
            }
            Action::ProxyFailed { target } | Action::BackendLost { target } => {
                let id = self.id(target.0)?;
                self.set_up(id, false)
            }
            Action::BackendAdded { target } => {
                let b = target.0.index;
                self.add_backend_node(b)?;
                for id in self.nodes.proxies.clone() {
                    self.ops
                        .proxy_server_up(&mut self.net, id, b as usize - 1, true);
                }
                Ok(())
            }
            Action::BackendDrained { target } => {
                let id = self.id(target.0)?;
                self.ops.backend_agent(&mut self.net, id, "drain");
                Ok(())
            }
            Action::SchedulerChanged { vip, scheduler } => {
                let kind = l4_kind(*scheduler);
                // Table sizes are each scheduler's own: the new one starts at its default.
                self.each_service(*vip, |_| (kind, None))
            }
            Action::TableSizeChanged { vip, table_size } => {
                let size = *table_size as usize;
                self.each_service(*vip, |svc| (svc.config().scheduler, Some(size)))
            }
        }
    }

    /// Edits the service of `vip` on every director (`ipvsadm -E`): `f` gives the new
    /// scheduler and table size from the current service.
    fn each_service(
        &mut self,
        vip: IpAddr,
        f: impl Fn(&tierlab_l4::Service) -> (tierlab_l4::SchedulerKind, Option<usize>),
    ) -> Result<(), LabError> {
        for &d in &self.nodes.directors {
            let node = self
                .net
                .node_mut::<DirectorNode>(d)
                .expect("directors are DirectorNodes");
            let found: Vec<_> = node
                .director
                .services()
                .filter(|(_, svc)| svc.config().vip == vip)
                .map(|(id, svc)| (id, f(svc)))
                .collect();
            if found.is_empty() {
                return Err(cfg_err(format!("VIP {vip}"), "no such service"));
            }
            for (id, (kind, size)) in found {
                node.director
                    .edit_service(id, kind, size)
                    .map_err(|e| cfg_err(format!("service {vip} on {d}"), e))?;
            }
        }
        Ok(())
    }

    pub(crate) fn set_up(&mut self, id: NodeId, up: bool) -> Result<(), LabError> {
        self.net
            .set_node_up(id, up)
            .map_err(|e| cfg_err(format!("{id}"), e))
    }
}

/// What the lab does to the nodes whose type depends on the stack kind (known only when the
/// lab is built).
pub(crate) trait StackOps {
    /// A proxy node's routes.
    fn proxy_routes<'a>(&self, net: &'a mut Network, id: NodeId) -> Option<&'a mut HostRoutes>;
    /// Marks a proxy's server up or down.
    fn proxy_server_up(&self, net: &mut Network, id: NodeId, server: usize, up: bool);
    /// Sets what a backend's agent answers.
    fn backend_agent(&self, net: &mut Network, id: NodeId, reply: &str);
    /// Sessions a proxy holds.
    fn proxy_sessions(&self, net: &Network, id: NodeId) -> usize;
    /// Connections a backend holds.
    fn backend_connections(&self, net: &Network, id: NodeId) -> usize;
    /// What a proxy's `monitor-uri` answers now (true: 200).
    fn proxy_monitor_ok(&self, net: &Network, id: NodeId) -> bool;
    /// Writes a proxy's local agent file (`up` or not).
    fn proxy_set_agent(&self, net: &mut Network, id: NodeId, up: bool);
    /// Turns a backend's records of requests served on or off.
    fn backend_recording(&self, net: &mut Network, id: NodeId, on: bool);
}

struct Ops<S>(std::marker::PhantomData<S>);

impl<S: TcpStack + 'static> StackOps for Ops<S> {
    fn proxy_routes<'a>(&self, net: &'a mut Network, id: NodeId) -> Option<&'a mut HostRoutes> {
        net.node_mut::<ProxyNode<S>>(id).map(|n| &mut n.routes)
    }

    fn proxy_server_up(&self, net: &mut Network, id: NodeId, server: usize, up: bool) {
        if let Some(n) = net.node_mut::<ProxyNode<S>>(id) {
            n.proxy.pool_mut().set_up(server, up);
        }
    }

    fn backend_agent(&self, net: &mut Network, id: NodeId, reply: &str) {
        if let Some(n) = net.node_mut::<BackendNode<S>>(id) {
            n.server.set_agent_reply(reply);
        }
    }

    fn proxy_sessions(&self, net: &Network, id: NodeId) -> usize {
        net.node::<ProxyNode<S>>(id)
            .map_or(0, |n| n.proxy.sessions())
    }

    fn backend_connections(&self, net: &Network, id: NodeId) -> usize {
        net.node::<BackendNode<S>>(id)
            .map_or(0, |n| n.server.open())
    }

    fn proxy_monitor_ok(&self, net: &Network, id: NodeId) -> bool {
        net.node::<ProxyNode<S>>(id)
            .is_some_and(|n| n.proxy.monitor_ok())
    }

    fn proxy_set_agent(&self, net: &mut Network, id: NodeId, up: bool) {
        if let Some(n) = net.node_mut::<ProxyNode<S>>(id) {
            n.proxy.set_agent_up(up);
        }
    }

    fn backend_recording(&self, net: &mut Network, id: NodeId, on: bool) {
        if let Some(n) = net.node_mut::<BackendNode<S>>(id) {
            n.server.set_recording(on);
        }
    }
}

use crate::control::DestEdit;
#[cfg(test)]
mod tests {
    use super::*;
    use tierlab_l7::client::Outcome;
    use tierlab_l7::{ScriptedConfig, ScriptedStack};
    use tierlab_wire::Instant;

    /// The lab of `s` with scripted endpoints, its clients started.
    fn started(s: &Scenario) -> Lab {
        let mut lab = Lab::build(s, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
        lab.start();
        lab
    }

    fn small() -> Scenario {
        let mut s = Scenario::default();
        // IPv4 only: the proxies' tunnels have one (IPv4) outer address today.
        s.topology.vips.retain(|v| v.addr.is_ipv4());
        s.workload.ipv6_share = 0.0;
        s.workload.clients = 6;
        s.workload.max_connections = Some(12);
        s.workload.object_bytes = 30_000;
        s.workload.stop_probability = 0.0;
        s
    }

    #[test]
    fn connections_cross_every_tier_and_complete() {
        let s = small();
        let mut lab = started(&s);
        lab.net.run_until(Instant::from_secs(60));
        let records = outcomes(&mut lab);
        assert_eq!(records.len(), 12, "{records:?}");
        for r in &records {
            assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
            assert_eq!(r.bytes, 30_000);
        }
        let acct = lab.net.accounting();
        assert!(acct.balanced(), "{acct:?}");
        assert!(acct.delivered > 12 * 20, "{acct:?}");
        // The flows were spread over the directors and proxies by the hashes.
        let forwarded: Vec<u64> = lab
            .nodes
            .directors
            .iter()
            .map(|&d| {
                let node = lab.net.node::<DirectorNode>(d).unwrap();
                node.director
                    .services()
                    .flat_map(|(_, svc)| svc.all_dests().map(|(_, dest)| dest.stats.packets))
                    .sum()
            })
            .collect();
        assert!(
            forwarded.iter().filter(|&&n| n > 0).count() >= 3,
            "{forwarded:?}"
        );
        eprintln!(
            "{acct:?} drops {:?} / {:?}",
            lab.net.network_drops().by_reason(),
            lab.net.node_drops().by_reason()
        );
    }

    /// The lab's IPv6 VIPs: 6in6 from the directors to the proxies' IPv6 tunnel addresses,
    /// IPv6 replies straight back to the clients.
    #[test]
    fn ipv6_vips_work_end_to_end() {
        let mut s = Scenario::default();
        s.topology.vips.retain(|v| !v.addr.is_ipv4());
        s.workload.clients = 6;
        s.workload.max_connections = Some(12);
        s.workload.object_bytes = 30_000;
        s.workload.stop_probability = 0.0;
        let mut lab = started(&s);
        lab.net.run_until(Instant::from_secs(60));
        let records = outcomes(&mut lab);
        assert_eq!(records.len(), 12, "{records:?}");
        for r in &records {
            assert!(r.src.is_ipv6() && r.vip.is_ipv6(), "{r:?}");
            assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
        }
        assert!(lab.net.accounting().balanced());
    }

    /// Long, slow downloads: connections are alive when the disruption comes.
    fn slow() -> Scenario {
        let mut s = small();
        s.workload.clients = 40;
        s.workload.max_connections = Some(40);
        s.workload.object_bytes = 400_000;
        s.workload.read_bytes = 4096;
        s
    }

    fn outcomes(lab: &mut Lab) -> Vec<tierlab_l7::client::ConnRecord> {
        let c = lab
            .net
            .node_mut::<ClientNode<ScriptedStack>>(lab.nodes.clients)
            .unwrap();
        c.client.take_records()
    }

    /// The seed README's first claim: with `mh`, an ECMP change in front of the directors sends
    /// flows to directors without an entry, which schedule them on the same proxy: nothing
    /// breaks (sloppy_tcp schedules the mid-stream segments).
    #[test]
    fn ecmp_reorder_with_mh_breaks_nothing() {
        let mut s = slow();
        s.topology.vips.retain(|v| v.scheduler == SchedulerKind::Mh);
        let mut lab = started(&s);
        lab.net.run_until(Instant::from_secs(3));
        lab.apply(&Action::EcmpReordered {}).unwrap();
        lab.net.run_until(Instant::from_secs(120));
        let recs = outcomes(&mut lab);
        assert_eq!(recs.len(), 40);
        assert!(
            recs.iter().all(|r| r.outcome == Outcome::Completed),
            "{recs:?}"
        );
        assert!(lab.net.accounting().balanced());

        // Counterfactual: the reorder really moved flows to directors without an entry. With
        // sloppy_tcp off, those directors drop the mid-stream segments and connections die.
        let mut strict = s.clone();
        strict.director.sloppy_tcp = false;
        let mut lab =
            Lab::build(&strict, || ScriptedStack::new(ScriptedConfig::default())).unwrap();
        lab.start();
        lab.net.run_until(Instant::from_secs(3));
        lab.apply(&Action::EcmpReordered {}).unwrap();
        lab.net.run_until(Instant::from_secs(120));
        let broken = outcomes(&mut lab)
            .iter()
            .filter(|r| r.outcome != Outcome::Completed)
            .count();
        assert!(broken > 10, "only {broken} of 40 broke without sloppy_tcp");
        let no_entry = lab
            .net
            .node_drops()
            .by_reason()
            .get(&tierlab_net::DropReason::NoEntry)
            .copied();
        assert!(no_entry.unwrap_or(0) > 0);
    }

    /// The seed README's weakness: a proxy added breaks nothing by itself (directors keep their
    /// entries), but a later ECMP change sends flows to directors without an entry, which
    /// schedule them on the new table: some land on the wrong proxy and are reset by it.
    #[test]
    fn proxy_added_then_ecmp_change_resets_some_connections() {
        let mut s = slow();
        s.topology.vips.retain(|v| v.scheduler == SchedulerKind::Mh);
        let mut lab = started(&s);
        lab.net.run_until(Instant::from_secs(2));
        let add = Action::ProxyAdded {
            target: crate::scenario::NodeNameField("proxy14".parse().unwrap()),
        };
        lab.apply(&add).unwrap();
        lab.net.run_until(Instant::from_secs(4));
        assert!(
            outcomes(&mut lab)
                .iter()
                .all(|r| r.outcome == Outcome::Completed),
            "adding a proxy alone breaks nothing"
        );
        lab.apply(&Action::EcmpReordered {}).unwrap();
        lab.net.run_until(Instant::from_secs(120));
        let recs = outcomes(&mut lab);
        let proxies: Vec<u32> = lab.nodes.proxies.iter().map(|p| p.0).collect();
        let reset_by_proxy = recs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Reset { by: Some(n) } if proxies.contains(&n)))
            .count();
        let other = recs
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Completed | Outcome::Reset { .. }))
            .count();
        assert!(reset_by_proxy > 0, "{recs:?}");
        assert_eq!(other, 0, "the only breakage is RSTs from proxies: {recs:?}");
    }

    /// With `sh`, the same reorder also keeps proxies: `sh` is deterministic too; what differs
    /// is adding proxies. A proxy failure breaks exactly its connections, reset or timed out.
    #[test]
    fn proxy_failure_breaks_only_its_connections() {
        let s = slow();
        let mut lab = started(&s);
        lab.net.run_until(Instant::from_secs(3));
        let victim = lab.nodes.proxies[0];
        let held = lab
            .net
            .node::<ProxyNode<ScriptedStack>>(victim)
            .unwrap()
            .proxy
            .sessions();
        assert!(held > 0, "proxy1 holds connections at t=3s");
        lab.apply(&Action::ProxyFailed {
            target: crate::scenario::NodeNameField("proxy1".parse().unwrap()),
        })
        .unwrap();
        lab.net.run_until(Instant::from_secs(120));
        let recs = outcomes(&mut lab);
        let broken = recs
            .iter()
            .filter(|r| r.outcome != Outcome::Completed)
            .count();
        assert_eq!(broken, held, "{recs:?}");
        assert!(
            recs.iter()
                .filter(|r| r.outcome != Outcome::Completed)
                .all(|r| r.outcome == Outcome::TimedOut)
        );
    }
}
