//! A virtual service and its destination list, kept as the kernel keeps it.
//!
//! Mirrors net/netfilter/ipvs/ip_vs_ctl.c (Linux v6.x):
//! - `ip_vs_add_dest` → `ip_vs_new_dest` or `ip_vs_trash_get_dest`, then `__ip_vs_update_dest`
//!   with `add = 1`: `last_weight = weight`, and `list_add_rcu(&dest->n_list,
//!   &svc->destinations)` puts the destination at the **head** of the list. A destination
//!   deleted and added again therefore moves to the head: two directors with different
//!   add/delete histories iterate their destinations in different orders, and `mh`/`sh` fill
//!   their tables in that order.
//! - `ip_vs_edit_dest` → `__ip_vs_update_dest` with `add = 0`: `last_weight` changes only for a
//!   non-zero weight ("keep the last_weight with latest non-0 weight"); the list order stays.
//! - `ip_vs_del_dest` → `__ip_vs_unlink_dest` (clears `IP_VS_DEST_F_AVAILABLE`, unlinks) and
//!   `__ip_vs_del_dest` (to the trash). Connection entries keep pointing at the trashed
//!   destination; adding it back takes the *same* destination from the trash, so its entries
//!   forward again.
//!
//! Every change calls the scheduler's rebuild (`add_dest`/`upd_dest`/`del_dest` hooks).
//! tierlab never frees a trashed destination (the kernel frees it after
//! `IP_VS_DEST_TRASH_PERIOD` once no entry uses it; a later add then creates a new one, which
//! behaves identically apart from its statistics).

use core::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tierlab_wire::{FlowKey, IpProto};

use crate::error::L4Error;
use crate::sched::{self, HashInput, SchedDest, SchedFlags, Scheduler, SchedulerKind};

/// A destination of a service: an index into the service's destination arena, stable for the
/// life of the service (a deleted destination keeps its id and gets it back when re-added).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct DestId(pub u32);

impl fmt::Display for DestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dest#{}", self.0)
    }
}

/// The configuration of a virtual service (`ipvsadm -A -t VIP:PORT -s SCHED -b FLAGS`).
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual port (host order).
    pub port: u16,
    /// Protocol (TCP or UDP).
    pub proto: IpProto,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Table size; `None` = the scheduler's default (4,093 for `mh`, 256 for `sh`).
    #[serde(default)]
    pub table_size: Option<usize>,
    /// Scheduler flags (`mh-port`, `mh-fallback`, `sh-port`, `sh-fallback`).
    #[serde(default)]
    pub flags: SchedFlags,
}

impl ServiceConfig {
    /// A TCP service with the port flag, as the lab configures its VIPs.
    pub const fn tcp_with_port_flag(vip: IpAddr, port: u16, scheduler: SchedulerKind) -> Self {
        Self {
            vip,
            port,
            proto: IpProto::Tcp,
            scheduler,
            table_size: None,
            flags: SchedFlags {
                port: true,
                fallback: false,
            },
        }
    }
}

/// Counters of one destination.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct DestStats {
    /// Connection entries created for this destination (`ipvsadm -L --stats` "Conns").
    pub flows: u64,
    /// Packets forwarded to it ("InPkts"), ICMP errors included.
    pub packets: u64,
    /// Bytes of those packets (inner packets, as received).
    pub bytes: u64,
    /// ICMP errors forwarded to it for one of its entries.
    pub icmp_errors: u64,
    /// Packets of its entries dropped because it was deleted from the service
    /// (`expire_nodest_conn=0`).
    pub dropped_unavailable: u64,
    /// Connection entries that currently point at it (active + inactive).
    pub entries: u64,
}

/// A destination (real server) as the kernel's `struct ip_vs_dest` holds it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Dest {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
    /// Current weight.
    pub weight: u32,
    /// Last non-zero weight (`last_weight`).
    pub last_weight: u32,
    /// `IP_VS_DEST_F_AVAILABLE`: in the service's list (false once deleted, in the trash).
    pub available: bool,
    /// Counters.
    pub stats: DestStats,
}

/// A virtual service: its destination list in kernel order and its scheduler.
#[derive(Debug)]
pub struct Service {
    config: ServiceConfig,
    dests: Vec<Dest>,
    /// The kernel's `svc->destinations`, head (newest) first.
    list: Vec<DestId>,
    sched: Box<dyn Scheduler>,
}

/// The largest weight the kernel accepts (`int`).
const MAX_WEIGHT: u32 = i32::MAX as u32;

impl Service {
    /// A service with no destinations (`ip_vs_add_service`).
    ///
    /// # Errors
    /// [`L4Error::BadTableSize`] when the scheduler cannot use the table size.
    pub fn new(config: ServiceConfig) -> Result<Self, L4Error> {
        let mut sched = sched::build(config.scheduler, config.table_size, config.flags)?;
        sched.rebuild(&[]);
        Ok(Self {
            config,
            dests: Vec::new(),
            list: Vec::new(),
            sched,
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &dyn Scheduler {
        self.sched.as_ref()
    }

    /// A destination by id (also a deleted one, which stays in the trash).
    pub fn dest(&self, id: DestId) -> Option<&Dest> {
        self.dests.get(id.0 as usize)
    }

    pub(crate) fn dest_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        self.dests.get_mut(id.0 as usize)
    }

    /// The destination list in the kernel's order: head (most recently added) first.
    pub fn list(&self) -> &[DestId] {
        &self.list
    }

    /// Every destination ever added (live and trashed), by id.
    pub fn all_dests(&self) -> impl Iterator<Item = (DestId, &Dest)> {
        self.dests
            .iter()
            .enumerate()
            .map(|(i, d)| (DestId(i as u32), d))
    }

    /// The id of the destination `addr:port`, live or trashed.
    pub fn find(&self, addr: IpAddr, port: u16) -> Option<DestId> {
        self.dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
            .map(|i| DestId(i as u32))
    }

    /// Changes the scheduler and its table size (`ipvsadm -E -s SCHED`, `ip_vs_edit_service`:
    /// the old scheduler is unbound, the new one builds its table from the destination list
    /// as it is). Connection entries are not touched. A table size the kernel fixes at build
    /// time (`mh`, `sh`) is a what-if here.
    ///
    /// # Errors
    /// [`L4Error::BadTableSize`]; [`L4Error::TooManyDests`] when the new table is smaller
    /// than the destination list.
    pub fn edit(
        &mut self,
        scheduler: SchedulerKind,
        table_size: Option<usize>,
    ) -> Result<(), L4Error> {
        let sched = sched::build(scheduler, table_size, self.config.flags)?;
        if scheduler != SchedulerKind::Sh && self.list.len() > sched.table_size() {
            return Err(L4Error::TooManyDests {
                scheduler: scheduler.name(),
                size: sched.table_size(),
                count: self.list.len(),
            });
        }
        self.sched = sched;
        self.config.scheduler = scheduler;
        self.config.table_size = table_size;
        self.rebuild();
        Ok(())
    }

    /// Adds a destination (`ipvsadm -a -r ADDR:PORT -w WEIGHT`): to the head of the list.
    ///
    /// # Errors
    /// [`L4Error::DestExists`], [`L4Error::BadWeight`], [`L4Error::FamilyMismatch`],
    /// [`L4Error::TooManyDests`].
    pub fn add_dest(&mut self, addr: IpAddr, port: u16, weight: u32) -> Result<DestId, L4Error> {
        if weight > MAX_WEIGHT {
            return Err(L4Error::BadWeight(u64::from(weight)));
        }
        if addr.is_ipv4() != self.config.vip.is_ipv4() {
            return Err(L4Error::FamilyMismatch { addr });
        }
        let limit = match self.sched.kind() {
            SchedulerKind::Sh => usize::MAX,
            SchedulerKind::Mh | SchedulerKind::Maglev => self.sched.table_size(),
        };
        if self.list.len() + 1 > limit {
            return Err(L4Error::TooManyDests {
                scheduler: self.sched.kind().name(),
                size: self.sched.table_size(),
                count: self.list.len() + 1,
            });
        }
        let id = match self.find(addr, port) {
            Some(id) if self.dests[id.0 as usize].available => {
                return Err(L4Error::DestExists { addr, port });
            }
            // ip_vs_trash_get_dest: the same destination comes back from the trash.
            Some(id) => id,
            None => {
                self.dests.push(Dest {
                    addr,
                    port,
                    weight: 0,
                    last_weight: 0,
                    available: false,
                    stats: DestStats::default(),
                });
                DestId(self.dests.len() as u32 - 1)
            }
        };
        let d = &mut self.dests[id.0 as usize];
        d.last_weight = weight;
        d.weight = weight;
        d.available = true;
        self.list.insert(0, id);
        self.rebuild();
        Ok(id)
    }

    /// Changes a destination's weight (`ipvsadm -e -r ADDR:PORT -w WEIGHT`). Weight 0 drains it:
    /// no new flows, its entries keep forwarding, `mh` keeps its slots.
    ///
    /// # Errors
    /// [`L4Error::NoSuchDest`], [`L4Error::BadWeight`].
    pub fn edit_dest(&mut self, addr: IpAddr, port: u16, weight: u32) -> Result<DestId, L4Error> {
        if weight > MAX_WEIGHT {
            return Err(L4Error::BadWeight(u64::from(weight)));
        }
        let id = self.live(addr, port)?;
        let d = &mut self.dests[id.0 as usize];
        if weight != 0 {
            d.last_weight = weight;
        }
        d.weight = weight;
        self.rebuild();
        Ok(id)
    }

    /// Deletes a destination (`ipvsadm -d -r ADDR:PORT`): out of the list and the table, into
    /// the trash; its entries stay and point at an unavailable destination.
    ///
    /// # Errors
    /// [`L4Error::NoSuchDest`].
    pub fn del_dest(&mut self, addr: IpAddr, port: u16) -> Result<DestId, L4Error> {
        let id = self.live(addr, port)?;
        self.dests[id.0 as usize].available = false;
        self.list.retain(|x| *x != id);
        self.rebuild();
        Ok(id)
    }

    fn live(&self, addr: IpAddr, port: u16) -> Result<DestId, L4Error> {
        match self.find(addr, port) {
            Some(id) if self.dests[id.0 as usize].available => Ok(id),
            _ => Err(L4Error::NoSuchDest { addr, port }),
        }
    }

    fn sched_dests(&self) -> Vec<SchedDest> {
        self.list
            .iter()
            .map(|id| {
                let d = &self.dests[id.0 as usize];
                SchedDest {
                    addr: d.addr,
                    port: d.port,
                    weight: d.weight,
                    last_weight: d.last_weight,
                    overloaded: false,
                }
            })
            .collect()
    }

    fn rebuild(&mut self) {
        let dests = self.sched_dests();
        self.sched.rebuild(&dests);
    }

    /// The destination the scheduler picks for a new flow (client → VIP), or `None`.
    #[inline]
    pub fn schedule(&self, flow: &FlowKey) -> Option<DestId> {
        let input = HashInput::from_flow(flow, self.sched.flags());
        self.sched.schedule(input).map(|i| self.list[i])
    }

    /// The lookup table, slot by slot.
    pub fn table(&self) -> Vec<Option<DestId>> {
        self.sched
            .table()
            .into_iter()
            .map(|s| s.map(|i| self.list[i]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(kind: SchedulerKind) -> Service {
        Service::new(ServiceConfig::tcp_with_port_flag(
            "198.51.100.1".parse().unwrap(),
            80,
            kind,
        ))
        .unwrap()
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn newest_first_and_readd_moves_to_head() {
        let mut s = svc(SchedulerKind::Mh);
        let d1 = s.add_dest(a("10.0.0.1"), 80, 1).unwrap();
        let d2 = s.add_dest(a("10.0.0.2"), 80, 1).unwrap();
        let d3 = s.add_dest(a("10.0.0.3"), 80, 1).unwrap();
        assert_eq!(s.list(), [d3, d2, d1]);
        s.del_dest(a("10.0.0.1"), 80).unwrap();
        assert!(!s.dest(d1).unwrap().available);
        assert_eq!(
            s.add_dest(a("10.0.0.1"), 80, 1).unwrap(),
            d1,
            "taken back from the trash"
        );
        assert_eq!(s.list(), [d1, d3, d2]);
    }

    #[test]
    fn history_changes_the_mh_table() {
        let mut x = svc(SchedulerKind::Mh);
        let mut y = svc(SchedulerKind::Mh);
        for i in 1..=5 {
            x.add_dest(a(&format!("10.0.0.{i}")), 80, 1).unwrap();
            y.add_dest(a(&format!("10.0.0.{i}")), 80, 1).unwrap();
        }
        y.del_dest(a("10.0.0.2"), 80).unwrap();
        y.add_dest(a("10.0.0.2"), 80, 1).unwrap();
        let tx: Vec<IpAddr> = x
            .table()
            .iter()
            .map(|d| x.dest(d.unwrap()).unwrap().addr)
            .collect();
        let ty: Vec<IpAddr> = y
            .table()
            .iter()
            .map(|d| y.dest(d.unwrap()).unwrap().addr)
            .collect();
        let differ = tx.iter().zip(&ty).filter(|(p, q)| p != q).count();
        assert!(differ > 0, "same set, different order → different table");
        assert!(differ < tx.len() / 5, "but mostly the same ({differ})");
    }

    #[test]
    fn edit_keeps_last_weight_and_errors_are_typed() {
        let mut s = svc(SchedulerKind::Mh);
        let d = s.add_dest(a("10.0.0.1"), 80, 3).unwrap();
        s.edit_dest(a("10.0.0.1"), 80, 0).unwrap();
        assert_eq!(
            (s.dest(d).unwrap().weight, s.dest(d).unwrap().last_weight),
            (0, 3)
        );
        assert_eq!(
            s.add_dest(a("10.0.0.1"), 80, 1),
            Err(L4Error::DestExists {
                addr: a("10.0.0.1"),
                port: 80
            })
        );
        assert_eq!(
            s.edit_dest(a("10.0.0.9"), 80, 1),
            Err(L4Error::NoSuchDest {
                addr: a("10.0.0.9"),
                port: 80
            })
        );
        assert!(matches!(
            s.add_dest(a("2001:db8::1"), 80, 1),
            Err(L4Error::FamilyMismatch { .. })
        ));
        assert!(matches!(
            s.add_dest(a("10.0.0.2"), 80, u32::MAX),
            Err(L4Error::BadWeight(_))
        ));
    }
}
