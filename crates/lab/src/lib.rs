//! # tierlab-lab: the lab and its scenarios
//!
//! Today this crate holds the scenario layer of the lab: what a user writes in a TOML file and
//! what tierlab checks before running anything. Module map:
//!
//! - [`scenario`]: the typed [`Scenario`] (topology, ECMP, directors, proxies, workload,
//!   disruption timeline) whose [`Default`] is the seed lab of `../shared/seed/README.md`.
//! - [`load`]: [`load::from_toml`] — strict parsing (unknown keys, wrong types) and validation
//!   (impossible topologies, dangling references), every error with file, line and column.
//! - [`names`]: node names (`router1`, `director3`, `proxy14`, `backend2`) and their kinds.
//!
//! The wiring of tiers into the `tierlab-net` engine, the workload driver and the reports come
//! with the lab issue's next steps (see `docs/architecture.md`).

pub mod load;
pub mod names;
pub mod scenario;

pub use load::{ScenarioError, from_toml};
pub use names::{NodeKind, NodeName};
pub use scenario::{Action, Event, Scenario};
