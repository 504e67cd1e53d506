//! # tierlab
//!
//! A packet-level simulator of multi-tier load balancers: ECMP routers → Maglev-hashing L4
//! directors (IPVS semantics, IPIP, direct return) → stateful L7 proxies → backends. It
//! rebuilds the Linux lab of `../shared/seed/README.md` in memory and measures which
//! connections survive each disruption. This facade re-exports the component crates:
//!
//! - [`wire`]: packets as bytes, `FlowKey`, ICMP errors, fragments, pcap, virtual time, RNG.
//! - [`ipip`]: IP-in-IP tunnels and IPVS TUN mode forwarding.
//! - [`ecmp`]: Linux-exact multipath hashing and next-hop groups.
//! - [`l4`]: the IPVS director (`mh`, `sh`, connection table).
//! - [`l7`]: the HAProxy-like proxy, backends, clients, scripted and smoltcp TCP.
//! - [`net`]: the discrete-event engine.
//! - [`lab`]: scenarios, the lab's topology, runs and reports.
//!
//! See `docs/architecture.md` for the crate map and the direction of dependencies.

pub use tierlab_ecmp as ecmp;
pub use tierlab_ipip as ipip;
pub use tierlab_l4 as l4;
pub use tierlab_l7 as l7;
pub use tierlab_lab as lab;
pub use tierlab_net as net;
pub use tierlab_wire as wire;
