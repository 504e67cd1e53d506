//! Schedulers: the lookup tables a director consults for a flow it has no entry for.
//!
//! - [`Mh`]: IPVS `mh` (net/netfilter/ipvs/ip_vs_mh.c), bit-exact.
//! - [`Sh`]: IPVS `sh` (net/netfilter/ipvs/ip_vs_sh.c), bit-exact.
//! - [`Maglev`]: the Maglev paper's table (Eisenbud et al., NSDI 2016, §3.4), for comparison.
//!
//! Every scheduler is rebuilt from the service's destination list **in the kernel's list order**
//! (newest first, see [`crate::service`]) whenever a destination is added, edited or deleted, as
//! the kernel's `add_dest`/`upd_dest`/`del_dest` hooks do. A lookup returns the index, in the
//! slice given to the last [`Scheduler::rebuild`], of the chosen destination.

mod maglev;
mod mh;
mod sh;

use core::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tierlab_wire::{FlowKey, IpProto};

pub use maglev::Maglev;

/// A destination's (offset, skip) in `mh` or the paper's table of `size` slots (`None` for
/// `sh`, which has no permutations). Two destinations with the same skip walk translates of
/// the same preference list and shadow each other.
pub fn offset_skip(
    kind: SchedulerKind,
    size: usize,
    addr: IpAddr,
    port: u16,
) -> Option<(u32, u32)> {
    let m = u32::try_from(size).ok()?;
    if m < 3 {
        return None;
    }
    match kind {
        SchedulerKind::Mh => {
            let fold = addr_fold(addr);
            Some((
                mh_hashkey(fold, port, MH_HASH1, 0) % m,
                mh_hashkey(fold, port, MH_HASH2, 0) % (m - 1) + 1,
            ))
        }
        SchedulerKind::Maglev => Some(maglev::offset_skip(addr, port, m)),
        SchedulerKind::Sh => None,
    }
}
pub use mh::{MH_HASH1, MH_HASH2, MH_PRIMES, Mh, mh_hashkey};
pub use sh::{Sh, hash_32};

use crate::error::L4Error;

/// A destination as a scheduler sees it at rebuild time.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SchedDest {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (host order).
    pub port: u16,
    /// Current weight (`dest->weight`); 0 = drained, takes no new flows.
    pub weight: u32,
    /// Last non-zero weight (`dest->last_weight`): what `mh` builds its table from, so a drained
    /// destination keeps its slots.
    pub last_weight: u32,
    /// `IP_VS_DEST_F_OVERLOAD` (set by connection thresholds; tierlab never sets it on its own).
    pub overloaded: bool,
}

impl SchedDest {
    /// `is_unavailable()` of ip_vs_mh.c / ip_vs_sh.c: weight <= 0 or overloaded.
    pub const fn is_unavailable(&self) -> bool {
        self.weight == 0 || self.overloaded
    }
}

/// Which scheduler.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// IPVS Maglev hashing (`ipvsadm -s mh`).
    Mh,
    /// IPVS source hashing (`ipvsadm -s sh`).
    Sh,
    /// The Maglev paper's table.
    Maglev,
}

impl SchedulerKind {
    /// The name `ipvsadm -s` (or tierlab's CLI) uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mh => "mh",
            Self::Sh => "sh",
            Self::Maglev => "maglev",
        }
    }

    /// The table size the scheduler uses when none is given: the kernel's default build for
    /// `mh` (`CONFIG_IP_VS_MH_TAB_INDEX=12` → 4,093) and `sh` (`CONFIG_IP_VS_SH_TAB_BITS=8` →
    /// 256); the paper's 65,537 for `maglev`.
    pub const fn default_table_size(self) -> usize {
        match self {
            Self::Mh => mh::DEFAULT_SIZE,
            Self::Sh => sh::DEFAULT_SIZE,
            Self::Maglev => maglev::DEFAULT_SIZE,
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for SchedulerKind {
    type Err = L4Error;
    fn from_str(s: &str) -> Result<Self, L4Error> {
        match s {
            "mh" => Ok(Self::Mh),
            "sh" => Ok(Self::Sh),
            "maglev" => Ok(Self::Maglev),
            other => Err(L4Error::UnknownScheduler(other.to_owned())),
        }
    }
}

/// The scheduler flags of a service (`ipvsadm -b`): `IP_VS_SVC_F_SCHED1` is `mh-fallback` /
/// `sh-fallback`, `IP_VS_SVC_F_SCHED2` is `mh-port` / `sh-port`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedFlags {
    /// Hash the client's source port too (TCP, UDP, SCTP; 0 for other protocols).
    pub port: bool,
    /// When the chosen destination is unavailable (weight 0 or overloaded), walk the table
    /// for another one instead of giving up.
    pub fallback: bool,
}

/// The part of a flow the IPVS hashing schedulers look at: the client address and, with the
/// port flag, the client port (`ip_vs_mh_get_port`/`ip_vs_sh_get_port`: TCP, UDP and SCTP
/// only, 0 otherwise).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct HashInput {
    /// Client (source) address.
    pub addr: IpAddr,
    /// Client port, or 0 without the port flag or for a protocol without ports.
    pub port: u16,
}

impl HashInput {
    /// What a scheduler with `flags` hashes for `flow` (a packet from the client to the VIP).
    pub fn from_flow(flow: &FlowKey, flags: SchedFlags) -> Self {
        let has_ports = matches!(
            flow.proto(),
            IpProto::Tcp | IpProto::Udp | IpProto::Unknown(132)
        );
        let port = if flags.port && has_ports {
            flow.sport()
        } else {
            0
        };
        Self {
            addr: flow.src(),
            port,
        }
    }
}

/// `ntohl(addr_fold)` of ip_vs_mh.c/ip_vs_sh.c `*_hashkey`: an IPv4 address as a host-order
/// `u32`; an IPv6 address as the XOR of its four 32-bit words (`ip6[0]^ip6[1]^ip6[2]^ip6[3]`).
#[inline]
pub fn addr_fold(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v >> 96) as u32 ^ (v >> 64) as u32 ^ (v >> 32) as u32 ^ v as u32
        }
    }
}

/// Marks an empty slot in the tables below.
pub(crate) const NONE: u32 = u32::MAX;

/// A scheduler: a lookup table rebuilt from the destination list.
pub trait Scheduler: fmt::Debug + Send {
    /// Which algorithm.
    fn kind(&self) -> SchedulerKind;

    /// The number of slots (buckets) of the table.
    fn table_size(&self) -> usize;

    /// The flags this scheduler was built with.
    fn flags(&self) -> SchedFlags;

    /// Rebuilds the table from `dests`, given in the service's list order (head first).
    fn rebuild(&mut self, dests: &[SchedDest]);

    /// The destination for a new flow: an index into the slice of the last rebuild, or `None`
    /// when no destination can take it (the kernel then logs "no destination available").
    fn schedule(&self, input: HashInput) -> Option<usize>;

    /// The table: for each slot, the index of the destination it holds (`None` = empty).
    fn table(&self) -> Vec<Option<usize>>;
}

/// Builds a scheduler of `kind` with `table_size` slots (`None` = the default size).
///
/// # Errors
/// [`L4Error::BadTableSize`] when the algorithm cannot use that size.
pub fn build(
    kind: SchedulerKind,
    table_size: Option<usize>,
    flags: SchedFlags,
) -> Result<Box<dyn Scheduler>, L4Error> {
    let size = table_size.unwrap_or_else(|| kind.default_table_size());
    Ok(match kind {
        SchedulerKind::Mh => Box::new(Mh::new(size, flags)?),
        SchedulerKind::Sh => Box::new(Sh::new(size, flags)?),
        SchedulerKind::Maglev => Box::new(Maglev::new(size, flags)?),
    })
}

/// Greatest common divisor (lib/math/gcd.c semantics for positive inputs).
pub(crate) const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_the_kernels() {
        assert_eq!(addr_fold("198.51.100.1".parse().unwrap()), 0xc633_6401);
        // 2001:0db8:0000:0000:0000:0000:c633:6401 → 0x20010db8 ^ 0 ^ 0 ^ 0xc6336401.
        assert_eq!(
            addr_fold("2001:db8::198.51.100.1".parse().unwrap()),
            0x2001_0db8 ^ 0xc633_6401
        );
    }

    #[test]
    fn port_flag_only_for_protocols_with_ports() {
        let tcp = FlowKey::v4(
            [1, 2, 3, 4].into(),
            [5, 6, 7, 8].into(),
            IpProto::Tcp,
            4000,
            80,
        );
        let icmp = FlowKey::v4(
            [1, 2, 3, 4].into(),
            [5, 6, 7, 8].into(),
            IpProto::Icmp,
            4000,
            80,
        );
        let on = SchedFlags {
            port: true,
            fallback: false,
        };
        assert_eq!(HashInput::from_flow(&tcp, on).port, 4000);
        assert_eq!(HashInput::from_flow(&tcp, SchedFlags::default()).port, 0);
        assert_eq!(HashInput::from_flow(&icmp, on).port, 0);
    }
}
