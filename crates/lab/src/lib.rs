//! # tierlab-lab: the lab and its scenarios
//!
//! The seed lab in memory: scenarios, the topology wired into the `tierlab-net` engine, the
//! disruption timeline and its report. Module map:
//!
//! - [`scenario`]: the typed [`Scenario`] (topology, ECMP, directors, proxies, workload,
//!   disruption timeline) whose [`Default`] is the seed lab of `../shared/seed/README.md`.
//! - [`load`]: [`load::from_toml`] — strict parsing (unknown keys, wrong types) and validation
//!   (impossible topologies, dangling references), every error with file, line and column.
//! - [`names`]: node names (`router1`, `director3`, `proxy14`, `backend2`) and their kinds.
//! - [`nodes`]: each tier as a `tierlab-net` node (routing, TTL, timers around the tier).
//! - [`build`]: [`build::Lab`] — the topology and address plan, and disruptions applied to the
//!   tiers' state ([`build::Lab::apply`]; not every action is wired yet).
//! - [`report`]: [`report::run`] — a scenario run and its JSON report.
//! - [`icmp`]: path-MTU errors (`topology.client_mtu`): `internet`'s egress MTU check and the
//!   ICMP errors it sends, where they end up ([`icmp::collect`]), the report's `icmp` section.
//! - [`suite`]: the default suite — each disruption of the seed README on a warmed lab.

pub mod build;
pub mod control;
pub mod icmp;
pub mod load;
pub mod names;
pub mod nodes;
pub mod report;
pub mod scenario;
pub mod suite;

pub use load::{ScenarioError, from_toml};
pub use names::{NodeKind, NodeName};
pub use scenario::{Action, Event, Scenario};
