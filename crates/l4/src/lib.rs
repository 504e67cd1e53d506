//! # tierlab-l4: the L4 director tier (Linux IPVS in TUN mode)
//!
//! Module map:
//! - [`siphash`]: the kernel's `hsiphash` (SipHash-1-3 on 64-bit), proven on the kernel's
//!   published vectors.
//! - [`sched`]: the [`Scheduler`] trait and IPVS-exact [`Mh`] and [`Sh`], plus the Maglev paper's
//!   table ([`Maglev`]) for comparison.
//! - [`service`]: a virtual service and its destination list in the kernel's order (newest
//!   first; a re-added destination moves to the head), with `ipvsadm`'s add/edit/delete.
//! - [`conn`]: the connection table (IPVS keys, TCP states, timeouts on virtual time).
//! - [`analysis`]: remap shares and balance of tables (tests, docs/l4.md).
//! - [`icmp_limit`]: Linux's ICMP rate limits (per peer and global) on the director's port
//!   unreachable.
//! - [`director`]: the sans-IO [`Director`]: `handle_packet(now, bytes) → Verdict`,
//!   `handle_timeout`, `poll_timeout`, per-destination counters, typed drop reasons.
//!
//! Kernel mirrored: Linux v6.x mainline, as read for this work from torvalds/linux:
//! ip_vs_mh.c at commit 2cc2c3cb54de, lib/siphash.c at 24cbee66725e,
//! lib/tests/siphash_kunit.c at 4f9786035f9e, and ip_vs_sh.c, ip_vs_ctl.c, ip_vs_core.c
//! (`ip_vs_in_hook`), ip_vs_conn.c and ip_vs_proto_tcp.c of the v6.x series up to the 2025
//! change of `dest->flags` to an `atomic_t` (which alters no behaviour modelled here). The
//! machines of this project run Linux 6.18.
//!
//! ```
//! use tierlab_l4::{Director, DirectorConfig, SchedulerKind, ServiceConfig, Verdict};
//! use tierlab_wire::{Instant, PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
//!
//! let mut lb4 = Director::new(DirectorConfig {
//!     tunnel_src_v4: Some("192.0.2.11".parse()?),
//!     ..DirectorConfig::default() // the lab's sysctls
//! });
//! let vip = "198.51.100.1".parse()?;
//! let svc = lb4.add_service(ServiceConfig::tcp_with_port_flag(vip, 80, SchedulerKind::Mh))?;
//! for i in 1..=13 {
//!     lb4.add_dest(svc, format!("192.0.2.{}", 100 + i).parse()?, 80, 1)?;
//! }
//! let syn = TcpRepr { sport: 41000, dport: 80, seq: TcpSeq(1), flags: TcpFlags::SYN,
//!                     window: 64240, ..TcpRepr::default() };
//! let bytes = PacketBuilder::new("203.0.113.7".parse()?, vip)?.tcp(&syn, &[])?;
//! let Verdict::Forward { dest_addr, packets, new_entry, .. } = lb4.handle_packet(Instant::ZERO, &bytes)
//! else { panic!("a SYN to a VIP with 13 proxies is forwarded") };
//! assert!(new_entry);
//! assert_eq!(packets.len(), 1);
//! assert_eq!(packets[0][9], 4); // IPIP
//! assert!(dest_addr.to_string().starts_with("192.0.2.1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod analysis;
pub mod conn;
pub mod director;
pub mod error;
pub mod icmp_limit;
pub mod sched;
pub mod service;
pub mod siphash;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use conn::{Conn, ConnHandle, ConnKey, ConnState, ConnTable, ServiceId, TcpState, Timeouts};
pub use director::{Director, DirectorConfig, DropReason, Verdict};
pub use error::L4Error;
pub use sched::{HashInput, Maglev, Mh, SchedDest, SchedFlags, Scheduler, SchedulerKind, Sh};
pub use service::{Dest, DestId, DestStats, Service, ServiceConfig};

/// The lab's virtual services: TCP port 80 on 198.51.100.1-4 and 2001:db8::198.51.100.1-4;
/// `.1`/`.2` with `mh`, `.3`/`.4` with `sh`, all with the port flag and no fallback.
pub fn lab_services() -> Vec<ServiceConfig> {
    let mut out = Vec::with_capacity(8);
    for last in 1..=4u8 {
        let kind = if last <= 2 {
            SchedulerKind::Mh
        } else {
            SchedulerKind::Sh
        };
        let v4 = Ipv4Addr::new(198, 51, 100, last);
        let v6 = Ipv6Addr::from(
            0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | u128::from(u32::from(v4)),
        );
        out.push(ServiceConfig::tcp_with_port_flag(IpAddr::V4(v4), 80, kind));
        out.push(ServiceConfig::tcp_with_port_flag(IpAddr::V6(v6), 80, kind));
    }
    out
}

impl Director {
    /// A director configured as in the lab: the lab's sysctls ([`DirectorConfig::default`]),
    /// tunnel sources `src_v4`/`src_v6`, the eight [`lab_services`], and `proxies` (IPv4 and
    /// IPv6 address of each, port 80, weight 1) added in the given order to every service of
    /// the matching family.
    ///
    /// # Errors
    /// As [`Director::add_service`] and [`Director::add_dest`].
    pub fn lab(
        src_v4: Ipv4Addr,
        src_v6: Ipv6Addr,
        proxies: &[(Ipv4Addr, Ipv6Addr)],
    ) -> Result<Self, L4Error> {
        let mut d = Self::new(DirectorConfig {
            tunnel_src_v4: Some(src_v4),
            tunnel_src_v6: Some(src_v6),
            ..DirectorConfig::default()
        });
        for cfg in lab_services() {
            let svc = d.add_service(cfg)?;
            for (p4, p6) in proxies {
                let addr = if cfg.vip.is_ipv4() {
                    IpAddr::V4(*p4)
                } else {
                    IpAddr::V6(*p6)
                };
                d.add_dest(svc, addr, 80, 1)?;
            }
        }
        Ok(d)
    }
}
