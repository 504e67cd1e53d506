//! # tierlab-l7: the stateful L7 tier — proxy, backends, clients, and TCP to carry them
//!
//! Tier 3 of the simulated load balancer is stateful: a proxy accepts a SYN for a VIP or a
//! segment of a connection it knows; anything else gets a RST from its TCP layer and the
//! client's connection dies. This crate models that with real packets and real TCP.
//!
//! Module map:
//!
//! - [`stack`]: the [`TcpStack`] interface both endpoint kinds implement, its events
//!   ([`TcpEvent`]), and the shared TCP rules ([`stack::rst_for_unknown`], RFC 9293
//!   §3.10.7.1; [`stack::initial_seq`], Linux's `secure_tcp_seq`).
//! - [`scripted`]: [`ScriptedStack`], a light standards-correct TCP for a million connections
//!   (handshake, seq/ack, flow control, FIN, RST, RFC 6298 retransmission with backoff and
//!   Linux's retry limits; no congestion control).
//! - [`smol`]: [`SmolStack`], real TCP from smoltcp 0.13 (`Medium::Ip`, an in-memory device,
//!   one socket set per connection).
//! - [`http`]: PROXY v1 header, HTTP heads, agent words, the body pattern.
//! - [`pool`]: servers, agent-check and health-check states with HAProxy's meanings,
//!   `roundrobin` / `leastconn` / `source` balancing.
//! - [`proxy`]: [`Proxy`], the HAProxy-like node behind IPIP tunnels (direct return,
//!   `send-proxy`, `monitor-uri`).
//! - [`backend`]: [`BackendServer`], serving `GET /SIZE` and answering agent checks.
//! - [`client`]: [`ClientHost`], the lab's workload with one [`client::ConnRecord`] per
//!   connection.
//! - [`testbed`]: [`Testbed`], a tiny network (client, director, proxies, backends) for tests,
//!   benches and examples.
//!
//! Every node is sans-IO: packets and `now` in, packets, events and the next timer out; no
//! clock, no randomness inside (the client takes the caller's generator).
//!
//! ```
//! use tierlab_l7::{ClientConfig, ScriptedConfig, ScriptedStack, Testbed};
//! use tierlab_l7::client::Outcome;
//! use tierlab_wire::{Duration, Instant};
//!
//! let mut client = ClientConfig::lab();
//! client.parallel = 2;
//! client.max_connections = Some(2);
//! client.object_size = 20_000;
//! client.stop_probability = 0.0;
//! let mut bed = Testbed::new(1, 2, client, Duration::from_micros(50), 7,
//!     || ScriptedStack::new(ScriptedConfig::default()), |_| {})?;
//! bed.start();
//! bed.run_until(Instant::from_secs(30));
//! let records = bed.client.take_records();
//! assert_eq!(records.len(), 2);
//! assert!(records.iter().all(|r| r.outcome == Outcome::Completed && r.bytes == 20_000));
//! # Ok::<(), tierlab_l7::StackError>(())
//! ```

pub mod backend;
pub mod client;
pub mod http;
pub mod pool;
pub mod proxy;
pub mod scripted;
pub mod smol;
pub mod stack;
pub mod testbed;

pub use backend::{BackendConfig, BackendServer};
pub use client::{ClientConfig, ClientHost};
pub use pool::{Balance, CheckConfig, Pool, ServerConfig};
pub use proxy::{Proxy, ProxyConfig, ProxyEvent};
pub use scripted::{ScriptedConfig, ScriptedStack};
pub use smol::{SmolConfig, SmolStack};
pub use stack::{CloseCause, ConnId, StackError, TcpEvent, TcpStack};
pub use testbed::Testbed;
