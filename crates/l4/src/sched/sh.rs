//! IPVS source hashing (`sh`), bit-exact with net/netfilter/ipvs/ip_vs_sh.c (Linux v6.x: the
//! `hash_32()` bucket hash and the `sh-port`/`sh-fallback` flags).

use super::{HashInput, NONE, SchedDest, SchedFlags, Scheduler, SchedulerKind, addr_fold};
use crate::error::L4Error;

/// `IP_VS_SH_TAB_SIZE` of the kernel's default build (`CONFIG_IP_VS_SH_TAB_BITS=8`).
pub(crate) const DEFAULT_SIZE: usize = 256;

/// include/linux/hash.h `GOLDEN_RATIO_32`.
const GOLDEN_RATIO_32: u32 = 0x61c8_8647;

/// include/linux/hash.h `hash_32(val, bits)` (generic version; x86 and arm64 have no
/// architecture override): the top `bits` bits of `val * GOLDEN_RATIO_32`.
#[inline]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The IPVS `sh` scheduler: a table of `2^bits` buckets (256 by default) filled in list order,
/// each destination taking `weight` consecutive buckets, cycling until the table is full.
///
/// Mirrors ip_vs_sh.c (Linux v6.x) `ip_vs_sh_hashkey`, `ip_vs_sh_reassign`, `ip_vs_sh_get`,
/// `ip_vs_sh_get_fallback`. Unlike `mh`, the fill uses the *current* weight: a destination at
/// weight 0 still takes one bucket per cycle (`++d_count >= weight` moves on at once) and is
/// then unavailable there.
#[derive(Clone, Debug)]
pub struct Sh {
    bits: u32,
    flags: SchedFlags,
    buckets: Vec<u32>,
    available: Vec<bool>,
}

impl Sh {
    /// An empty `sh` table of `size` buckets: a power of two from 2^4 to 2^20 (the Kconfig
    /// range of `CONFIG_IP_VS_SH_TAB_BITS`).
    ///
    /// # Errors
    /// [`L4Error::BadTableSize`] otherwise.
    pub fn new(size: usize, flags: SchedFlags) -> Result<Self, L4Error> {
        if !size.is_power_of_two() || !(16..=1 << 20).contains(&size) {
            return Err(L4Error::BadTableSize {
                scheduler: "sh",
                size,
                reason: "must be a power of two from 16 to 1048576 (CONFIG_IP_VS_SH_TAB_BITS 4..20)",
            });
        }
        Ok(Self {
            bits: size.trailing_zeros(),
            flags,
            buckets: vec![NONE; size],
            available: Vec::new(),
        })
    }

    /// ip_vs_sh.c `ip_vs_sh_hashkey`: `(offset + hash_32(port + addr_fold, BITS)) & MASK`.
    #[inline]
    pub fn hashkey(&self, fold: u32, port: u16, offset: u32) -> u32 {
        let mask = (1u32 << self.bits) - 1;
        offset.wrapping_add(hash_32(u32::from(port).wrapping_add(fold), self.bits)) & mask
    }
}

impl Scheduler for Sh {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn table_size(&self) -> usize {
        self.buckets.len()
    }

    fn flags(&self) -> SchedFlags {
        self.flags
    }

    /// ip_vs_sh.c `ip_vs_sh_reassign` (Linux v6.x).
    fn rebuild(&mut self, dests: &[SchedDest]) {
        self.available = dests.iter().map(|d| !d.is_unavailable()).collect();
        if dests.is_empty() {
            self.buckets.fill(NONE);
            return;
        }
        let mut p = 0usize;
        let mut d_count = 0u32;
        for b in &mut self.buckets {
            *b = p as u32;
            // "Don't move to next dest until filling weight".
            d_count += 1;
            if d_count >= dests[p].weight {
                p = (p + 1) % dests.len();
                d_count = 0;
            }
        }
    }

    /// ip_vs_sh.c `ip_vs_sh_get` / `ip_vs_sh_get_fallback`.
    fn schedule(&self, input: HashInput) -> Option<usize> {
        let fold = addr_fold(input.addr);
        let ihash = self.hashkey(fold, input.port, 0);
        let dest = self.buckets[ihash as usize];
        if dest == NONE {
            return None;
        }
        if self.available[dest as usize] {
            return Some(dest as usize);
        }
        if !self.flags.fallback {
            return None;
        }
        let size = self.buckets.len() as u32;
        for offset in 0..size {
            let roffset = (offset + ihash) % size;
            let hash = self.hashkey(fold, input.port, roffset);
            let dest = self.buckets[hash as usize];
            if dest == NONE {
                break;
            }
            if self.available[dest as usize] {
                return Some(dest as usize);
            }
        }
        None
    }

    fn table(&self) -> Vec<Option<usize>> {
        self.buckets
            .iter()
            .map(|d| (*d != NONE).then_some(*d as usize))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(a: &str, w: u32) -> SchedDest {
        SchedDest {
            addr: a.parse().unwrap(),
            port: 80,
            weight: w,
            last_weight: w.max(1),
            overloaded: false,
        }
    }

    #[test]
    fn hash_32_is_the_kernels() {
        // hash_32(1, 8) = (0x61c88647 >> 24) = 0x61.
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(2, 32), 0xc391_0c8e);
    }

    #[test]
    fn fill_order_follows_weights_and_weight_zero_takes_one_bucket() {
        let mut sh = Sh::new(16, SchedFlags::default()).unwrap();
        sh.rebuild(&[
            dest("10.0.0.1", 2),
            dest("10.0.0.2", 0),
            dest("10.0.0.3", 1),
        ]);
        let t: Vec<usize> = sh.table().into_iter().map(Option::unwrap).collect();
        assert_eq!(t, [0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn fallback_skips_a_drained_destination() {
        let dests = [dest("10.0.0.1", 1), dest("10.0.0.2", 0)];
        let mut plain = Sh::new(256, SchedFlags::default()).unwrap();
        let mut fb = Sh::new(
            256,
            SchedFlags {
                port: true,
                fallback: true,
            },
        )
        .unwrap();
        plain.rebuild(&dests);
        fb.rebuild(&dests);
        let mut refused = 0;
        for i in 0..512u32 {
            let input = HashInput {
                addr: std::net::Ipv4Addr::from(0xcb00_7100 + i).into(),
                port: 0,
            };
            if plain.schedule(input).is_none() {
                refused += 1;
            }
            assert_eq!(fb.schedule(HashInput { port: 0, ..input }), Some(0));
        }
        assert!(refused > 0);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(Sh::new(256, SchedFlags::default()).is_ok());
        assert!(Sh::new(255, SchedFlags::default()).is_err());
        assert!(Sh::new(8, SchedFlags::default()).is_err());
    }
}
