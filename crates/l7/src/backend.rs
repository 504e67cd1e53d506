//! The backend server host: accepts the proxy's connections, reads the PROXY v1 header (and
//! records the real client address), serves `GET /SIZE` with a body of SIZE bytes at a
//! configurable pace, then closes; and answers the agent check on its agent port with its
//! current agent word (`up`, `drain`, `down`, `maint`, `ready`, `NN%`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};

use foldhash::fast::FixedState;
use tierlab_wire::{Duration, Instant};

use crate::http;
use crate::stack::{CloseCause, ConnId, StackError, TcpEvent, TcpStack};

/// How fast a backend writes a body.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pace {
    /// Bytes written per tick.
    pub bytes: u32,
    /// Tick length.
    pub every: Duration,
}

/// Configuration of a backend server.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The server's address (the lab: 2001:db8:1:0:2::N).
    pub addr: IpAddr,
    /// Service port (the lab: 88).
    pub port: u16,
    /// Agent port (the lab: 5555), if the agent responder runs.
    pub agent_port: Option<u16>,
    /// What the agent answers (`up`, `drain`, `down`, `maint`, `ready`, `75%`...).
    pub agent_reply: String,
    /// Expect a PROXY v1 header first (`accept-proxy`).
    pub accept_proxy: bool,
    /// Body pace; `None` writes as fast as the send buffer allows.
    pub pace: Option<Pace>,
    /// Largest body served (bigger requests get a 400).
    pub max_size: u64,
}

impl BackendConfig {
    /// The lab's backend `n` (1-based): `[2001:db8:1:0:2::n]:88`, agent on 5555 saying `up`.
    pub fn lab(n: u8) -> Self {
        Self {
            addr: IpAddr::from([0x2001, 0xdb8, 1, 0, 2, 0, 0, u16::from(n)]),
            port: 88,
            agent_port: Some(5555),
            agent_reply: "up".to_owned(),
            accept_proxy: true,
            pace: None,
            max_size: 1 << 32,
        }
    }
}

/// One request served, with what the PROXY header said.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Serialize)]
pub struct ServedRecord {
    /// When the request was parsed.
    pub at: Instant,
    /// The TCP peer (the proxy's backend-side address).
    pub peer: SocketAddr,
    /// The real client, from the PROXY header.
    pub client: Option<SocketAddr>,
    /// The address the client connected to (the VIP), from the PROXY header.
    pub proxied_to: Option<SocketAddr>,
    /// Body size requested.
    pub size: u64,
}

#[derive(Debug)]
enum Phase {
    Proxy,
    Request,
    Sending { sent: u64, total: u64 },
    Done,
}

#[derive(Debug)]
struct Conn {
    buf: Vec<u8>,
    phase: Phase,
    pending: Vec<u8>,
    client: Option<(SocketAddr, SocketAddr)>,
    peer: SocketAddr,
    budget: u64,
    tick_armed: bool,
}

/// A backend server over a TCP stack `S`.
#[derive(Debug)]
pub struct BackendServer<S: TcpStack> {
    cfg: BackendConfig,
    stack: S,
    conns: HashMap<ConnId, Conn, FixedState>,
    ticks: BinaryHeap<Reverse<(Instant, ConnId)>>,
    served: Vec<ServedRecord>,
    ended: Vec<(SocketAddr, CloseCause)>,
    /// Whether `served` and `ended` are kept (see [`BackendServer::set_recording`]).
    recording: bool,
    /// Body bytes being written (reused from one write to the next).
    chunk: Vec<u8>,
}

impl<S: TcpStack> BackendServer<S> {
    /// A backend listening on its service port (and agent port).
    ///
    /// # Errors
    /// The stack refuses to listen.
    pub fn new(cfg: BackendConfig, mut stack: S) -> Result<Self, StackError> {
        stack.add_address(cfg.addr);
        stack.listen(SocketAddr::new(cfg.addr, cfg.port))?;
        if let Some(p) = cfg.agent_port {
            stack.listen(SocketAddr::new(cfg.addr, p))?;
        }
        Ok(Self {
            cfg,
            stack,
            conns: HashMap::default(),
            ticks: BinaryHeap::new(),
            served: Vec::new(),
            ended: Vec::new(),
            recording: true,
            chunk: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BackendConfig {
        &self.cfg
    }

    /// Changes what the agent answers from now on.
    pub fn set_agent_reply(&mut self, reply: &str) {
        reply.clone_into(&mut self.cfg.agent_reply);
    }

    /// Whether each request served and each service connection ended is recorded (for
    /// [`BackendServer::take_served`] and [`BackendServer::take_ended`]); on by default. A
    /// long run that never reads the records turns it off, so they do not pile up (one per
    /// connection).
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
        if !on {
            self.served = Vec::new();
            self.ended = Vec::new();
        }
    }

    /// Requests served so far (drained).
    pub fn take_served(&mut self) -> Vec<ServedRecord> {
        std::mem::take(&mut self.served)
    }

    /// Service connections that ended, with how (drained).
    pub fn take_ended(&mut self) -> Vec<(SocketAddr, CloseCause)> {
        std::mem::take(&mut self.ended)
    }

    /// Open service connections.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// The TCP stack.
    pub fn stack(&self) -> &S {
        &self.stack
    }

    /// Takes a packet addressed to the server.
    ///
    /// # Errors
    /// The stack refuses the packet (not TCP, not for this host, malformed).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), StackError> {
        let r = self.stack.handle_packet(now, packet);
        self.process(now);
        r
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stack.handle_timeout(now);
        self.process(now);
        while let Some(&Reverse((at, id))) = self.ticks.peek() {
            if at > now {
                break;
            }
            self.ticks.pop();
            if let (Some(c), Some(p)) = (self.conns.get_mut(&id), self.cfg.pace) {
                c.budget = u64::from(p.bytes);
                c.tick_armed = false;
                self.fill(now, id);
            }
        }
        self.process(now);
    }

    /// The next instant [`BackendServer::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.stack.poll_timeout();
        let b = self.ticks.peek().map(|Reverse((t, _))| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stack.poll_transmit()
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.stack.poll_event() {
            match ev {
                TcpEvent::Accepted { id, local, remote } => {
                    if Some(local.port()) == self.cfg.agent_port {
                        let line = format!("{}\n", self.cfg.agent_reply);
                        let _ = self.stack.send(now, id, line.as_bytes());
                        let _ = self.stack.close(now, id);
                    } else {
                        self.conns.insert(
                            id,
                            Conn {
                                buf: Vec::new(),
                                phase: if self.cfg.accept_proxy {
                                    Phase::Proxy
                                } else {
                                    Phase::Request
                                },
                                pending: Vec::new(),
                                client: None,
                                peer: remote,
                                budget: u64::MAX,
                                tick_armed: false,
                            },
                        );
                    }
                }
                TcpEvent::Readable { id } | TcpEvent::PeerClosed { id } => self.readable(now, id),
                TcpEvent::Writable { id } => self.fill(now, id),
                TcpEvent::Closed { id, cause } => {
                    if let Some(c) = self.conns.remove(&id)
                        && self.recording
                    {
                        self.ended.push((c.peer, cause));
                    }
                }
                TcpEvent::Connected { .. } | TcpEvent::ResetSent { .. } => {}
            }
        }
    }

    fn readable(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            // Agent connections: discard anything the checker sends.
            let n = self.stack.recv_queue(id);
            let _ = self.stack.recv(now, id, &mut Vec::new(), n);
            return;
        };
        let n = self.stack.recv_queue(id);
        let _ = self.stack.recv(now, id, &mut c.buf, n);
        if matches!(c.phase, Phase::Proxy) {
            match http::parse_proxy_v1(&c.buf) {
                Ok((addrs, len)) => {
                    c.client = addrs;
                    c.buf.drain(..len);
                    c.phase = Phase::Request;
                }
                Err(http::ParseError::Incomplete) => return,
                Err(_) => {
                    // HAProxy's accept-proxy drops a connection with a bad header.
                    let _ = self.stack.abort(now, id);
                    return;
                }
            }
        }
        if matches!(c.phase, Phase::Request) {
            let Some(end) = http::head_end(&c.buf) else {
                if self.stack.peer_closed(id) {
                    let _ = self.stack.close(now, id);
                }
                return;
            };
            let size = http::request_path(&c.buf[..end])
                .ok()
                .and_then(|p| p.trim_start_matches('/').parse::<u64>().ok())
                .filter(|s| *s <= self.cfg.max_size);
            c.buf = Vec::new();
            let Some(size) = size else {
                let _ = self.stack.send(
                    now,
                    id,
                    b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                );
                let _ = self.stack.close(now, id);
                c.phase = Phase::Done;
                return;
            };
            if self.recording {
                self.served.push(ServedRecord {
                    at: now,
                    peer: c.peer,
                    client: c.client.map(|a| a.0),
                    proxied_to: c.client.map(|a| a.1),
                    size,
                });
            }
            c.pending = http::response_head(200, "OK", size).into_bytes();
            c.phase = Phase::Sending {
                sent: 0,
                total: size,
            };
            if let Some(p) = self.cfg.pace {
                c.budget = u64::from(p.bytes);
            }
            self.fill(now, id);
        } else {
            c.buf.clear();
        }
    }

    fn fill(&mut self, now: Instant, id: ConnId) {
        let pace = self.cfg.pace;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.pending.is_empty() {
            let n = self.stack.send(now, id, &c.pending).unwrap_or(0);
            c.pending.drain(..n);
            if !c.pending.is_empty() {
                return;
            }
        }
        let Phase::Sending { sent, total } = &mut c.phase else {
            return;
        };
        let mut chunk = std::mem::take(&mut self.chunk);
        while *sent < *total && c.budget > 0 {
            let room = self.stack.send_room(id);
            if room == 0 {
                let _ = self.stack.send(now, id, &[]);
                break;
            }
            let n = (room as u64).min(*total - *sent).min(c.budget) as usize;
            let piece = if n <= http::BODY_RUN {
                http::body(*sent, n)
            } else {
                chunk.clear();
                http::fill_body(&mut chunk, *sent, n);
                &chunk
            };
            let took = self.stack.send(now, id, piece).unwrap_or(0);
            *sent += took as u64;
            if pace.is_some() {
                c.budget -= took as u64;
            }
            if took == 0 {
                break;
            }
        }
        chunk.clear();
        self.chunk = chunk;
        if *sent >= *total {
            c.phase = Phase::Done;
            let _ = self.stack.close(now, id);
        } else if let Some(p) = pace
            && c.budget == 0
            && !c.tick_armed
        {
            c.tick_armed = true;
            self.ticks.push(Reverse((now + p.every, id)));
        }
    }
}
