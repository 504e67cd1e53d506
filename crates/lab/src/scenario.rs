//! The typed scenario. `Scenario::default()` is the seed lab of `../shared/seed/README.md` with
//! its exact parameters; every field can be changed in a scenario file (see
//! `docs/scenarios.md`, which lists every key with its default).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::names::NodeName;

/// A whole scenario: the lab, its workload and the disruption timeline.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Length of the run in seconds of virtual time.
    pub duration_s: f64,
    /// Connections still alive this long after an event count as having survived it.
    pub window_s: f64,
    /// Which TCP endpoints the hosts run.
    pub endpoint: EndpointKind,
    /// Nodes and addresses.
    pub topology: Topology,
    /// The routers' multipath behaviour.
    pub ecmp: Ecmp,
    /// IPVS settings of every director.
    pub director: Director,
    /// HAProxy settings of every proxy.
    pub proxy: Proxy,
    /// What the clients do.
    pub workload: Workload,
    /// The disruptions, in any order (they are applied in time order, ties in file order).
    pub events: Vec<Event>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "seed-lab".to_owned(),
            seed: 1,
            duration_s: 60.0,
            window_s: 10.0,
            endpoint: EndpointKind::Scripted,
            topology: Topology::default(),
            ecmp: Ecmp::default(),
            director: Director::default(),
            proxy: Proxy::default(),
            workload: Workload::default(),
            events: Vec::new(),
        }
    }
}

/// The kind of TCP endpoint hosts run.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// The light scripted TCP (handshake, data, FIN, RST, RTO; no congestion control).
    #[default]
    Scripted,
    /// Real TCP state machines (smoltcp).
    Smoltcp,
}

/// Node counts and address plan.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Client source addresses (the lab: 200).
    pub users: u32,
    /// First IPv4 user address; users take consecutive addresses.
    pub users_v4_start: Ipv4Addr,
    /// First IPv6 user address; users take consecutive addresses.
    pub users_v6_start: Ipv6Addr,
    /// Edge routers doing ECMP over the directors (the lab: 2).
    pub routers: u32,
    /// BGP route reflectors (the lab: 2).
    pub route_reflectors: u32,
    /// L4 directors (the lab: 7).
    pub directors: u32,
    /// L7 proxies (the lab: 13).
    pub proxies: u32,
    /// Backends (the lab: 10, IPv6 only).
    pub backends: u32,
    /// First backend address (the lab: 2001:db8:1:0:2::1); backends are consecutive.
    pub backends_start: Ipv6Addr,
    /// Port the backends listen on (the lab: 88).
    pub backend_port: u16,
    /// The virtual services.
    pub vips: Vec<Vip>,
    /// One-way latency of every link, in microseconds.
    pub link_latency_us: u64,
    /// IP MTU of every link.
    pub mtu: u16,
    /// IP MTU of the link between `internet` and the clients (none: `mtu`). Below `mtu`,
    /// `internet` answers larger packets toward the clients with an ICMP "fragmentation
    /// needed" / "packet too big" to their source (IPv4 without DF: it fragments them).
    pub client_mtu: Option<u16>,
}

impl Default for Topology {
    fn default() -> Self {
        let mut vips = Vec::new();
        for v6 in [false, true] {
            for i in 1..=4u8 {
                let addr = if v6 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        0xc633,
                        0x6400 + u16::from(i),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))
                };
                let scheduler = if i <= 2 {
                    SchedulerKind::Mh
                } else {
                    SchedulerKind::Sh
                };
                vips.push(Vip {
                    addr,
                    port: 80,
                    scheduler,
                    port_flag: true,
                    fallback: false,
                    table_size: None,
                });
            }
        }
        Self {
            users: 200,
            users_v4_start: Ipv4Addr::new(203, 0, 113, 1),
            users_v6_start: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xcb00, 0x7101),
            routers: 2,
            route_reflectors: 2,
            directors: 7,
            proxies: 13,
            backends: 10,
            backends_start: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 2, 0, 0, 1),
            backend_port: 88,
            vips,
            link_latency_us: 50,
            mtu: 1500,
            client_mtu: None,
        }
    }
}

/// IPVS schedulers.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// Maglev hashing as IPVS `mh` implements it.
    Mh,
    /// Source hashing (`sh`).
    Sh,
    /// The Maglev paper's own table.
    Maglev,
}

/// One virtual service.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Address.
    pub addr: IpAddr,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// `mh-port`/`sh-port`: hash the source port too (the lab: on).
    #[serde(default = "yes")]
    pub port_flag: bool,
    /// `mh-fallback`/`sh-fallback`.
    #[serde(default)]
    pub fallback: bool,
    /// Lookup table size: `mh` one of the kernel's primes (default 4093), `sh` a power of two
    /// (default 256), `maglev` a prime (default 65537).
    #[serde(default)]
    pub table_size: Option<u32>,
}

fn default_port() -> u16 {
    80
}

fn yes() -> bool {
    true
}

/// The routers' multipath settings (sysctls).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ecmp {
    /// `fib_multipath_hash_policy` (the lab: 1).
    pub policy: u8,
    /// `fib_multipath_hash_fields` (policy 3 only).
    pub hash_fields: Option<u32>,
    /// `fib_multipath_hash_seed`; absent: each router draws its own from the scenario seed, as
    /// a booted kernel would.
    pub seed: Option<u32>,
    /// Next-hop selection.
    pub algorithm: EcmpAlgorithm,
    /// Buckets of a resilient group.
    pub resilient_buckets: u32,
    /// BGP hold time: a director that dies without withdrawing keeps receiving traffic from
    /// the routers this long (the lab: 6 s for IPv4 sessions).
    pub hold_time_s: f64,
}

impl Default for Ecmp {
    fn default() -> Self {
        Self {
            policy: 1,
            hash_fields: None,
            seed: None,
            algorithm: EcmpAlgorithm::HashThreshold,
            resilient_buckets: 128,
            hold_time_s: 6.0,
        }
    }
}

/// Next-hop selection algorithms.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EcmpAlgorithm {
    /// Linux's default: hash-threshold with weights.
    HashThreshold,
    /// Modulo-N.
    Modulo,
    /// Resilient next-hop groups (buckets).
    Resilient,
}

/// IPVS sysctls of the directors.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Director {
    /// `net.ipv4.vs.sloppy_tcp` (the lab: 1).
    pub sloppy_tcp: bool,
    /// `net.ipv4.vs.pmtu_disc` (the lab: 0).
    pub pmtu_disc: bool,
    /// `net.ipv4.vs.expire_nodest_conn` (the lab: 0).
    pub expire_nodest_conn: bool,
    /// `net.ipv4.vs.expire_quiescent_template` (the lab: 0).
    pub expire_quiescent_template: bool,
}

impl Default for Director {
    fn default() -> Self {
        Self {
            sloppy_tcp: true,
            pmtu_disc: false,
            expire_nodest_conn: false,
            expire_quiescent_template: false,
        }
    }
}

/// HAProxy settings of the proxies.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    /// Backend selection.
    pub balance: Balance,
    /// Send a PROXY protocol v1 header to backends (`send-proxy`; the lab: on).
    pub send_proxy: bool,
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            balance: Balance::Roundrobin,
            send_proxy: true,
        }
    }
}

/// HAProxy `balance` algorithms.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin (the lab).
    Roundrobin,
    /// Fewest connections.
    Leastconn,
    /// Hash of the source address.
    Source,
}

/// The lab's client, as its Python version behaves.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Parallel clients; each opens a new connection as soon as its previous one ends.
    pub clients: u32,
    /// Size of the object each connection downloads (a large object, read slowly).
    pub object_bytes: u64,
    /// Bytes asked for by each read.
    pub read_bytes: u32,
    /// Shortest pause between reads, in milliseconds.
    pub read_interval_min_ms: u64,
    /// Longest pause between reads (the lab's two versions: 500 and 5000).
    pub read_interval_max_ms: u64,
    /// Chance to stop after each read (the lab: about 5 %).
    pub stop_probability: f64,
    /// A read that gets nothing for this long fails the connection (the Python client: 2 s).
    pub read_timeout_s: f64,
    /// Stop opening connections after this many (none: until the end of the run).
    pub max_connections: Option<u64>,
    /// Which address families clients use, as a share of IPv6 connections (0 to 1).
    pub ipv6_share: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 200,
            object_bytes: 100_000_000,
            read_bytes: 16_384,
            read_interval_min_ms: 0,
            read_interval_max_ms: 500,
            stop_probability: 0.05,
            read_timeout_s: 2.0,
            max_connections: None,
            ipv6_share: 0.5,
        }
    }
}

/// One disruption on the timeline: `at_s`, `action` and the action's own keys, in one table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// When, in seconds from the start.
    pub at_s: f64,
    /// What happens.
    #[serde(flatten)]
    pub action: Action,
}

impl<'de> Deserialize<'de> for Event {
    /// `at_s` is read first; the other keys must be exactly those of the action (unknown keys
    /// are refused, as everywhere in a scenario file).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            at_s: f64,
            #[serde(flatten)]
            rest: toml::Table,
        }
        let raw = Raw::deserialize(d)?;
        let action = Action::deserialize(toml::Value::Table(raw.rest)).map_err(|e| {
            <D::Error as serde::de::Error>::custom(format!("in event: {}", e.message()))
        })?;
        Ok(Self {
            at_s: raw.at_s,
            action,
        })
    }
}

/// The disruptions tierlab replays. Each names its target node where it has one.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A router joins the ECMP layer in front of the directors.
    RouterAdded {
        /// The new router.
        target: NodeNameField,
    },
    /// A router disappears.
    RouterLost {
        /// The router.
        target: NodeNameField,
    },
    /// The routers' next-hop groups list the directors in another order.
    EcmpReordered {},
    /// The routers get new hash seeds.
    EcmpReseeded {
        /// The new seed (absent: drawn from the scenario seed).
        #[serde(default)]
        seed: Option<u32>,
    },
    /// The routers switch hash policy.
    HashPolicyChanged {
        /// New `fib_multipath_hash_policy` (0 to 3).
        policy: u8,
    },
    /// A director starts announcing the VIPs.
    DirectorAdded {
        /// The new director.
        target: NodeNameField,
    },
    /// A director stops announcing the VIPs (gracefully).
    DirectorRemoved {
        /// The director.
        target: NodeNameField,
    },
    /// A director dies abruptly.
    DirectorFailed {
        /// The director.
        target: NodeNameField,
    },
    /// A proxy is added to every director's services.
    ProxyAdded {
        /// The new proxy.
        target: NodeNameField,
    },
    /// A proxy is deleted from every director's services.
    ProxyRemoved {
        /// The proxy.
        target: NodeNameField,
    },
    /// A proxy dies.
    ProxyFailed {
        /// The proxy.
        target: NodeNameField,
    },
    /// A proxy is drained (weight 0 in IPVS: no new flows, existing ones continue).
    ProxyDrained {
        /// The proxy.
        target: NodeNameField,
    },
    /// A backend is added to every proxy.
    BackendAdded {
        /// The new backend.
        target: NodeNameField,
    },
    /// A backend dies.
    BackendLost {
        /// The backend.
        target: NodeNameField,
    },
    /// A backend is drained (agent says `drain`).
    BackendDrained {
        /// The backend.
        target: NodeNameField,
    },
    /// A VIP's scheduler changes on every director.
    SchedulerChanged {
        /// The VIP.
        vip: IpAddr,
        /// The new scheduler.
        scheduler: SchedulerKind,
    },
    /// A VIP's table size changes on every director.
    TableSizeChanged {
        /// The VIP.
        vip: IpAddr,
        /// The new size.
        table_size: u32,
    },
}

/// A node name as written in a scenario file (parsed and checked at load time).
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeNameField(pub NodeName);

impl TryFrom<String> for NodeNameField {
    type Error = crate::names::BadName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(Self)
    }
}

impl From<NodeNameField> for String {
    fn from(n: NodeNameField) -> Self {
        n.0.to_string()
    }
}

impl Action {
    /// The action's name as written in files and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RouterAdded { .. } => "router_added",
            Self::RouterLost { .. } => "router_lost",
            Self::EcmpReordered {} => "ecmp_reordered",
            Self::EcmpReseeded { .. } => "ecmp_reseeded",
            Self::HashPolicyChanged { .. } => "hash_policy_changed",
            Self::DirectorAdded { .. } => "director_added",
            Self::DirectorRemoved { .. } => "director_removed",
            Self::DirectorFailed { .. } => "director_failed",
            Self::ProxyAdded { .. } => "proxy_added",
            Self::ProxyRemoved { .. } => "proxy_removed",
            Self::ProxyFailed { .. } => "proxy_failed",
            Self::ProxyDrained { .. } => "proxy_drained",
            Self::BackendAdded { .. } => "backend_added",
            Self::BackendLost { .. } => "backend_lost",
            Self::BackendDrained { .. } => "backend_drained",
            Self::SchedulerChanged { .. } => "scheduler_changed",
            Self::TableSizeChanged { .. } => "table_size_changed",
        }
    }

    /// The node the action targets, and whether it must exist before (`false`: it is new).
    pub fn target(&self) -> Option<(NodeName, bool)> {
        match self {
            Self::RouterAdded { target }
            | Self::DirectorAdded { target }
            | Self::ProxyAdded { target }
            | Self::BackendAdded { target } => Some((target.0, false)),
            Self::RouterLost { target }
            | Self::DirectorRemoved { target }
            | Self::DirectorFailed { target }
            | Self::ProxyRemoved { target }
            | Self::ProxyFailed { target }
            | Self::ProxyDrained { target }
            | Self::BackendLost { target }
            | Self::BackendDrained { target } => Some((target.0, true)),
            _ => None,
        }
    }
}
