//! # tierlab-control: the control plane, with its timers
//!
//! Disruptions in a real fleet do not act at once: a director that dies keeps receiving
//! traffic until the routers' BGP hold timer expires; a proxy that fails is removed by each
//! director when *its own* health check notices. This crate holds the sans-IO state machines
//! of those mechanisms (time in → decisions out; no clock, no I/O, randomness only from the
//! caller's seeded generator). `tierlab-lab` drives them and applies their decisions to the
//! tiers.
//!
//! - [`bgp`]: the BGP fabric reduced to what moves traffic: speakers (directors) announce or
//!   withdraw the VIPs with a MED to route reflectors, which reflect every path (add-paths) to
//!   the routers; keepalive and hold timers per session and family; propagation delay; the
//!   routers' ECMP set is the speakers holding the best (lowest) MED.
//! - [`exabgp`]: ExaBGP's `healthcheck` program (INIT, RISING, FALLING, UP, DOWN, DISABLED;
//!   rise/fall counts; interval and fast interval; MED per state or withdraw-on-down).
//! - [`keepalived`]: keepalived's HTTP_GET checker of each real server (delay loop, connect
//!   timeout, retries) and the virtual server's quorum.
//! - [`dns`]: gdnsd's `multifo` answers with per-address HTTP checks (interval, up/ok/down
//!   thresholds) and an admin state file, and a client-side cache honouring the TTL.
//!
//! What is approximated is said where it is: checks are not put on the wire (their result is
//! what the checked node would answer at that instant; a node that cannot answer costs the
//! checker its connect timeout), and BGP messages are not packets (they take a fixed
//! propagation delay per hop).

#![forbid(unsafe_code)]

pub mod bgp;
pub mod dns;
pub mod exabgp;
pub mod keepalived;

pub use bgp::{BgpConfig, Fabric, Family, SessionTimers};
pub use dns::{DnsConfig, Gdnsd, Resolver};
pub use exabgp::{Advert, HcState, Healthcheck, HealthcheckConfig};
pub use keepalived::{CheckerConfig, CheckerEvent, Keepalived, Probe};
