//! # tierlab-ipip: IP-in-IP tunnels
//!
//! Encapsulation and decapsulation as Linux builds and accepts them: IPv4-in-IPv4 and
//! IPv6-in-IPv4 (`ipip`/`sit`; outer protocol 4 or 41), IPv6-in-IPv6 and IPv4-in-IPv6
//! (`ip6tnl`; outer next header 41 or 4). The outer protocol number names the *inner* family:
//! 4 for an IPv4 inner packet, 41 for IPv6, whatever the outer family.
//!
//! - [`encap`]: the generic encapsulator ([`EncapParams`]: TTL inherited or fixed, DF copied,
//!   set or clear, DS field inherited with ECN handled as `INET_ECN_encapsulate` does).
//! - [`ipvs`]: what an IPVS director in TUN mode does to a packet it forwards
//!   ([`ipvs::tun_xmit`]): inner TTL decrement, the tunnel MTU (route MTU minus the outer
//!   header), `pmtu_disc` (fragment the outer packet silently, or answer "fragmentation
//!   needed"), IPv6 "packet too big".
//! - [`decap`]: a tunnel endpoint ([`TunnelEndpoint`]) as on the lab's L7 proxies: local outer
//!   address, the VIPs bound on the tunnel, typed refusals.
//!
//! Module map of errors: [`TunnelError`] (encapsulation), [`DecapError`] (decapsulation).

pub mod decap;
pub mod encap;
pub mod ipvs;

pub use decap::{DecapError, Decapsulated, TunnelEndpoint};
pub use encap::{
    DfMode, DsMode, EncapParams, TtlMode, TunnelError, encapsulate, encapsulate_into, overhead,
};
