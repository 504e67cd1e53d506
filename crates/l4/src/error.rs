//! Errors of the configuration API (services and destinations, as `ipvsadm` would report them).
//! Packets never produce errors: a packet the director cannot forward gets a
//! [`DropReason`](crate::director::DropReason).

use std::net::IpAddr;

use thiserror::Error;

/// What went wrong configuring a scheduler, a service or a destination.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum L4Error {
    /// The scheduler cannot use this table size. Hint: `mh` takes the kernel's primes
    /// (4,093 by default), `sh` a power of two (256), `maglev` any prime (65,537).
    #[error("{scheduler}: table size {size} is not usable: {reason}")]
    BadTableSize {
        /// Scheduler name.
        scheduler: &'static str,
        /// The size asked for.
        size: usize,
        /// Which sizes are allowed.
        reason: &'static str,
    },
    /// No scheduler of that name. Hint: `mh`, `sh` or `maglev`.
    #[error("unknown scheduler {0:?} (expected mh, sh or maglev)")]
    UnknownScheduler(String),
    /// A service with this protocol, VIP and port already exists (`ipvsadm -A` → EEXIST).
    #[error("service {proto} {vip} port {port} already exists")]
    ServiceExists {
        /// IP protocol number.
        proto: u8,
        /// Virtual address.
        vip: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// No such service (ESRCH).
    #[error("no service {proto} {vip} port {port}")]
    NoSuchService {
        /// IP protocol number.
        proto: u8,
        /// Virtual address.
        vip: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// No service with this id on the director.
    #[error("no service with id {0}")]
    UnknownServiceId(u32),
    /// The destination is already in the service (`ipvsadm -a` → EEXIST).
    #[error("destination {addr} port {port} already in the service")]
    DestExists {
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// The destination is not in the service (`ipvsadm -e`/`-d` → ENOENT).
    #[error("destination {addr} port {port} is not in the service")]
    NoSuchDest {
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// A weight out of range. Hint: the kernel takes 0..=i32::MAX (ERANGE below 0); ipvsadm
    /// accepts 0..=65535.
    #[error("weight {0} out of range 0..=2147483647")]
    BadWeight(u64),
    /// The destination's address family differs from the service's (tierlab models TUN mode
    /// per family: 4in4 and 6in6).
    #[error("destination {addr} is not of the service's address family")]
    FamilyMismatch {
        /// The destination address.
        addr: IpAddr,
    },
    /// More destinations than the scheduler's table has slots (the kernel's `mh` returns
    /// -EINVAL and keeps a stale table; tierlab refuses the add).
    #[error("{scheduler} table of {size} slots cannot hold {count} destinations")]
    TooManyDests {
        /// Scheduler name.
        scheduler: &'static str,
        /// Table size.
        size: usize,
        /// Destinations there would be.
        count: usize,
    },
}
