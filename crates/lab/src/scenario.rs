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
    /// BGP, health checks and DNS, with their timers.
    pub control: Control,
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
            control: Control::default(),
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
}

impl Default for Ecmp {
    fn default() -> Self {
        Self {
            policy: 1,
            hash_fields: None,
            seed: None,
            algorithm: EcmpAlgorithm::HashThreshold,
            resilient_buckets: 128,
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
    /// `net.ipv4.icmp_ratelimit` in ms (Linux: 1000): per-client spacing of the port
    /// unreachables a director sends for flows with no destination, after a burst of 6.
    pub icmp_ratelimit_ms: u32,
    /// `net.ipv6.icmp.ratelimit` in ms (Linux 6.18: 100), divided by 16 for peers reached by
    /// the default route.
    pub icmpv6_ratelimit_ms: u32,
    /// `net.ipv4.icmp_msgs_per_sec` (Linux: 1000), the global refill rate.
    pub icmp_msgs_per_sec: u32,
    /// `net.ipv4.icmp_msgs_burst` (Linux: 50), the global burst.
    pub icmp_msgs_burst: u32,
}

impl Default for Director {
    fn default() -> Self {
        Self {
            sloppy_tcp: true,
            pmtu_disc: false,
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            icmp_ratelimit_ms: 1000,
            icmpv6_ratelimit_ms: 100,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
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
    /// Names the clients resolve (through `control.dns`) instead of picking a VIP; empty:
    /// a VIP at random, as the lab's client does.
    pub names: Vec<String>,
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
            names: Vec::new(),
        }
    }
}

/// The control plane (crate `tierlab-control`): BGP, ExaBGP's healthcheck, keepalived, the
/// proxies' checks of the backends and gdnsd. Defaults: the lab's values.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// Run the control plane. Off: disruptions act at once on every tier (an operator editing
    /// every node at the same instant), and a failed director leaves the routers after
    /// `bgp.hold_v4_s`.
    pub enabled: bool,
    /// BGP sessions between directors, route reflectors and routers.
    pub bgp: Bgp,
    /// ExaBGP's healthcheck on each director.
    pub healthcheck: Healthcheck,
    /// keepalived on each director.
    pub keepalived: Keepalived,
    /// HAProxy's checks of the backends on each proxy.
    pub haproxy: HaproxyChecks,
    /// gdnsd.
    pub dns: Dns,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            enabled: true,
            bgp: Bgp::default(),
            healthcheck: Healthcheck::default(),
            keepalived: Keepalived::default(),
            haproxy: HaproxyChecks::default(),
            dns: Dns::default(),
        }
    }
}

/// BGP timers.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bgp {
    /// Hold time of the IPv4 sessions (the lab: 6 s).
    pub hold_v4_s: f64,
    /// Keepalive interval of the IPv4 sessions (hold / 3: 2 s).
    pub keepalive_v4_s: f64,
    /// Hold time of the IPv6 sessions (the lab's IPv6 peer group: 3 s).
    pub hold_v6_s: f64,
    /// Keepalive interval of the IPv6 sessions (the lab: 1 s).
    pub keepalive_v6_s: f64,
    /// Delay of one BGP hop (director → reflector, reflector → routers), in milliseconds.
    pub propagation_ms: f64,
}

impl Default for Bgp {
    fn default() -> Self {
        Self {
            hold_v4_s: 6.0,
            keepalive_v4_s: 2.0,
            hold_v6_s: 3.0,
            keepalive_v6_s: 1.0,
            propagation_ms: 10.0,
        }
    }
}

/// ExaBGP `healthcheck` options.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Healthcheck {
    /// `--interval` (the lab: 10 s).
    pub interval_s: f64,
    /// `--fast-interval` while rising or falling (1 s).
    pub fast_interval_s: f64,
    /// `--rise` (3).
    pub rise: u32,
    /// `--fall` (3).
    pub fall: u32,
    /// `--up-metric` (100).
    pub up_med: u32,
    /// `--down-metric` (1000).
    pub down_med: u32,
    /// `--disabled-metric` (500).
    pub disabled_med: u32,
    /// `--withdraw-on-down` (the lab: off: the MED is raised instead).
    pub withdraw_on_down: bool,
}

impl Default for Healthcheck {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            fast_interval_s: 1.0,
            rise: 3,
            fall: 3,
            up_med: 100,
            down_med: 1000,
            disabled_med: 500,
            withdraw_on_down: false,
        }
    }
}

/// keepalived options of the directors' virtual servers.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Keepalived {
    /// `delay_loop` (the lab: 10 s).
    pub delay_loop_s: f64,
    /// `connect_timeout` (the lab: 2 s).
    pub connect_timeout_s: f64,
    /// `retry` (1).
    pub retry: u32,
    /// `delay_before_retry` (1 s).
    pub delay_before_retry_s: f64,
    /// `inhibit_on_failure`: weight 0 instead of removal (the lab: off).
    pub inhibit_on_failure: bool,
    /// `quorum` (1).
    pub quorum: u32,
}

impl Default for Keepalived {
    fn default() -> Self {
        Self {
            delay_loop_s: 10.0,
            connect_timeout_s: 2.0,
            retry: 1,
            delay_before_retry_s: 1.0,
            inhibit_on_failure: false,
            quorum: 1,
        }
    }
}

/// HAProxy's checks of the backends (`check inter 2s rise 2 fall 3`, `agent-check`).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxyChecks {
    /// `inter` (HAProxy default 2 s); also the agent's interval and the check's timeout.
    pub inter_s: f64,
    /// `rise` (2).
    pub rise: u8,
    /// `fall` (3).
    pub fall: u8,
}

impl Default for HaproxyChecks {
    fn default() -> Self {
        Self {
            inter_s: 2.0,
            rise: 2,
            fall: 3,
        }
    }
}

/// gdnsd `multifo` and its HTTP checks.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// TTL of the answers (the lab: 60 s).
    pub ttl_s: f64,
    /// Check interval (the lab: 5 s).
    pub interval_s: f64,
    /// Failed checks that take an address down (the lab: 5).
    pub down_thresh: u32,
    /// Successes that clear an up address's failures (gdnsd: 10).
    pub ok_thresh: u32,
    /// Successes in a row that bring an address back (gdnsd: 20).
    pub up_thresh: u32,
    /// The names (the lab: www and www1 → VIPs .1/.2, www2 → VIPs .3/.4, both families).
    pub names: Vec<DnsName>,
}

/// One name served by gdnsd.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsName {
    /// The name.
    pub name: String,
    /// Its addresses (VIPs).
    pub addrs: Vec<IpAddr>,
}

impl Default for Dns {
    fn default() -> Self {
        let vips = |a: u8, b: u8| -> Vec<IpAddr> {
            let mut v = Vec::new();
            for i in [a, b] {
                v.push(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)));
            }
            for i in [a, b] {
                v.push(IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0xc633,
                    0x6400 + u16::from(i),
                )));
            }
            v
        };
        let name = |n: &str, addrs| DnsName {
            name: n.to_owned(),
            addrs,
        };
        Self {
            ttl_s: 60.0,
            interval_s: 5.0,
            down_thresh: 5,
            ok_thresh: 10,
            up_thresh: 20,
            names: vec![
                name("www", vips(1, 2)),
                name("www1", vips(1, 2)),
                name("www2", vips(3, 4)),
            ],
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
    /// The director's maintenance file (`/etc/lb/disable`) is created: its healthcheck
    /// announces the disabled MED at its next iteration and the routers stop using it while
    /// others announce a better one.
    DirectorDisabled {
        /// The director.
        target: NodeNameField,
    },
    /// The director's maintenance file is removed.
    DirectorEnabled {
        /// The director.
        target: NodeNameField,
    },
    /// The proxy's local agent file says `state` (`down`, `drain` or `maint` make its
    /// `monitor-uri` fail, so the directors' checks remove it; `up` restores it).
    ProxyMaintenance {
        /// The proxy.
        target: NodeNameField,
        /// What the agent file says.
        state: AgentState,
    },
    /// The proxy fails one director's health checks (a path problem between the two) for a
    /// while; every other director still sees it healthy.
    ProxyCheckFailed {
        /// The proxy.
        target: NodeNameField,
        /// The director whose checks fail.
        director: NodeNameField,
        /// For how long, in seconds.
        duration_s: f64,
    },
    /// A backend's agent answers `reply` (`up`, `down`, `drain`, `maint`, `ready` or a weight
    /// `NN%`); proxies act on it at their next agent check.
    BackendAgent {
        /// The backend.
        target: NodeNameField,
        /// The agent's answer.
        reply: String,
    },
    /// gdnsd's admin state file forces a VIP down or up, or gives it back to its check.
    DnsAdmin {
        /// The VIP.
        vip: IpAddr,
        /// The forced state.
        state: DnsAdminState,
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

/// What a proxy's local agent file says.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// In service.
    Up,
    /// Down.
    Down,
    /// Drain.
    Drain,
    /// Maintenance.
    Maint,
}

/// A state forced by gdnsd's admin state file.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsAdminState {
    /// Forced up.
    Up,
    /// Forced down.
    Down,
    /// Back to the check's verdict.
    Auto,
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
            Self::DirectorDisabled { .. } => "director_disabled",
            Self::DirectorEnabled { .. } => "director_enabled",
            Self::ProxyMaintenance { .. } => "proxy_maintenance",
            Self::ProxyCheckFailed { .. } => "proxy_check_failed",
            Self::BackendAgent { .. } => "backend_agent",
            Self::DnsAdmin { .. } => "dns_admin",
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
            | Self::BackendDrained { target }
            | Self::DirectorDisabled { target }
            | Self::DirectorEnabled { target }
            | Self::ProxyMaintenance { target, .. }
            | Self::ProxyCheckFailed { target, .. }
            | Self::BackendAgent { target, .. } => Some((target.0, true)),
            _ => None,
        }
    }
}
