//! IPVS Maglev hashing (`mh`), bit-exact with net/netfilter/ipvs/ip_vs_mh.c (Linux v6.x; the
//! algorithm is unchanged since its introduction in v4.18 and the 2025 change of `dest->flags` to
//! an `atomic_t` does not alter it).

use super::{HashInput, NONE, SchedDest, SchedFlags, Scheduler, SchedulerKind, addr_fold, gcd};
use crate::error::L4Error;
use crate::siphash::{SipKey, hsiphash_u32};

/// ip_vs_mh.c `primes[]`: the table sizes `CONFIG_IP_VS_MH_TAB_INDEX` = 8..=17 select.
pub const MH_PRIMES: [usize; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131_071,
];

/// `IP_VS_MH_TAB_SIZE` of the kernel's default build (`CONFIG_IP_VS_MH_TAB_INDEX=12`).
pub(crate) const DEFAULT_SIZE: usize = 4093;

/// ip_vs_mh.c `generate_hash_secret`: `hash1` (table position of a flow, offset of a
/// destination); both key words are 2654435761.
pub const MH_HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
/// ip_vs_mh.c `generate_hash_secret`: `hash2` (skip of a destination); both words 2654446892.
pub const MH_HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

/// `x % d` for 32-bit `x` without a division (Lemire, Kaser & Kurz 2019, "Faster remainder by
/// direct computation"): exact for every `u32` `x` and non-zero `d`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastMod {
    d: u32,
    m: u64,
}

impl FastMod {
    pub(crate) const fn new(d: u32) -> Self {
        let d = if d == 0 { 1 } else { d };
        Self {
            d,
            m: (u64::MAX / d as u64).wrapping_add(1),
        }
    }

    #[inline(always)]
    pub(crate) const fn rem(self, x: u32) -> u32 {
        let low = self.m.wrapping_mul(x as u64);
        ((low as u128 * self.d as u128) >> 64) as u32
    }
}

/// ip_vs_mh.c `ip_vs_mh_hashkey`: `hsiphash` of `offset + port + addr_fold` (host order,
/// wrapping 32-bit arithmetic).
#[inline]
pub fn mh_hashkey(addr_fold: u32, port: u16, key: SipKey, offset: u32) -> u32 {
    hsiphash_u32(
        offset.wrapping_add(u32::from(port)).wrapping_add(addr_fold),
        key,
    )
}

/// The IPVS `mh` scheduler.
///
/// Mirrors, function by function (ip_vs_mh.c, Linux v6.x): `ip_vs_mh_gcd_weight`,
/// `ip_vs_mh_shift_weight`, `ip_vs_mh_permutate`, `ip_vs_mh_populate`, `ip_vs_mh_get` and
/// `ip_vs_mh_get_fallback`. Weights are the destinations' *last* non-zero weights, so a
/// destination drained to weight 0 keeps its slots; flows landing there get no destination
/// unless the fallback flag is set.
#[derive(Clone, Debug)]
pub struct Mh {
    size: u32,
    modulo: FastMod,
    tab_bits: u32,
    flags: SchedFlags,
    lookup: Vec<u32>,
    available: Vec<bool>,
}

impl Mh {
    /// An empty `mh` table of `size` slots, which must be one of [`MH_PRIMES`].
    ///
    /// # Errors
    /// [`L4Error::BadTableSize`] for any other size.
    pub fn new(size: usize, flags: SchedFlags) -> Result<Self, L4Error> {
        let Some(index) = MH_PRIMES.iter().position(|p| *p == size) else {
            return Err(L4Error::BadTableSize {
                scheduler: "mh",
                size,
                reason: "must be one of the kernel's primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071",
            });
        };
        // CONFIG_IP_VS_MH_TAB_INDEX = index + 8; IP_VS_MH_TAB_BITS = CONFIG_.. / 2.
        let tab_bits = (index as u32 + 8) / 2;
        let size = size as u32;
        Ok(Self {
            size,
            modulo: FastMod::new(size),
            tab_bits,
            flags,
            lookup: vec![NONE; size as usize],
            available: Vec::new(),
        })
    }

    /// ip_vs_mh.c `ip_vs_mh_get` / `ip_vs_mh_get_fallback` for a client address (already
    /// folded with [`addr_fold`](super::addr_fold)) and port.
    #[inline]
    pub fn lookup_folded(&self, fold: u32, port: u16) -> Option<usize> {
        let ihash = self.modulo.rem(mh_hashkey(fold, port, MH_HASH1, 0));
        let dest = self.lookup[ihash as usize];
        if dest < UNAVAILABLE {
            return Some(dest as usize);
        }
        self.unavailable_slot(dest, ihash, fold, port)
    }

    /// The rest of `ip_vs_mh_get`/`ip_vs_mh_get_fallback` when the slot's destination is
    /// missing or unavailable (kept out of line so the common lookup stays small).
    #[cold]
    #[inline(never)]
    fn unavailable_slot(&self, dest: u32, ihash: u32, fold: u32, port: u16) -> Option<usize> {
        if dest == NONE || !self.flags.fallback {
            return None;
        }
        // Loop around the table starting from ihash (ip_vs_mh_get_fallback).
        for offset in 0..self.size {
            let roffset = (offset + ihash) % self.size;
            let hash = self.modulo.rem(mh_hashkey(fold, port, MH_HASH1, roffset));
            let dest = self.lookup[hash as usize];
            if dest == NONE {
                break;
            }
            if dest < UNAVAILABLE {
                return Some(dest as usize);
            }
        }
        None
    }
}

/// Set in a slot whose destination is unavailable (weight 0 or overloaded); [`NONE`] has it
/// too. Destination indices stay below it (at most 131,071 destinations).
const UNAVAILABLE: u32 = 1 << 31;

/// `fls()`: the 1-based index of the most significant set bit (0 for 0).
const fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

impl Scheduler for Mh {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Mh
    }

    fn table_size(&self) -> usize {
        self.size as usize
    }

    fn flags(&self) -> SchedFlags {
        self.flags
    }

    /// ip_vs_mh.c `ip_vs_mh_dest_changed` → `ip_vs_mh_gcd_weight`, `ip_vs_mh_shift_weight`,
    /// `ip_vs_mh_reassign` (`ip_vs_mh_permutate` + `ip_vs_mh_populate`), Linux v6.x.
    ///
    /// The kernel refuses (`-EINVAL`, table left as it was) when there are more destinations
    /// than slots; [`crate::service::Service`] refuses such an add before it happens.
    fn rebuild(&mut self, dests: &[SchedDest]) {
        self.available = dests.iter().map(|d| !d.is_unavailable()).collect();
        // ip_vs_mh_gcd_weight: gcd of the positive last weights.
        let mut g = 0u32;
        for d in dests {
            if d.last_weight > 0 {
                g = if g > 0 {
                    gcd(d.last_weight, g)
                } else {
                    d.last_weight
                };
            }
        }
        if g < 1 {
            // ip_vs_mh_populate → ip_vs_mh_reset: every slot empty.
            self.lookup.fill(NONE);
            return;
        }
        // ip_vs_mh_shift_weight: shift = fls(max_weight / gcd) - IP_VS_MH_TAB_BITS, >= 0.
        let max_w = dests.iter().map(|d| d.last_weight).max().unwrap_or(0);
        let rshift = fls(max_w / g).saturating_sub(self.tab_bits);

        // ip_vs_mh_permutate.
        let size = self.size;
        let skip_mod = FastMod::new(size - 1);
        let mut setup: Vec<(u32, u32, u32)> = dests
            .iter()
            .map(|d| {
                let fold = addr_fold(d.addr);
                let offset = self.modulo.rem(mh_hashkey(fold, d.port, MH_HASH1, 0));
                let skip = skip_mod.rem(mh_hashkey(fold, d.port, MH_HASH2, 0)) + 1;
                let lw = d.last_weight;
                let turns = match (lw / g) >> rshift {
                    0 => u32::from(lw != 0),
                    t => t,
                };
                (offset, skip, turns)
            })
            .collect();

        // ip_vs_mh_populate: round robin over the list; each destination takes `turns`
        // consecutive picks of its next free preferred slot.
        let mut taken = vec![0u64; (size as usize).div_ceil(64)];
        let mut n = 0u32;
        let mut dt_count = 0u32;
        'fill: while n < size {
            let mut i = 0;
            while i < setup.len() {
                let (perm, skip, turns) = &mut setup[i];
                if *turns < 1 {
                    i += 1;
                    continue;
                }
                let mut c = *perm;
                while taken[(c / 64) as usize] & (1 << (c % 64)) != 0 {
                    c += *skip;
                    if c >= size {
                        c -= size;
                    }
                }
                *perm = c;
                taken[(c / 64) as usize] |= 1 << (c % 64);
                self.lookup[c as usize] = i as u32;
                n += 1;
                if n == size {
                    break 'fill;
                }
                dt_count += 1;
                if dt_count >= *turns {
                    dt_count = 0;
                    i += 1;
                }
            }
        }
        // Fold availability into the slots so a lookup reads one word.
        for d in &mut self.lookup {
            if !self.available[*d as usize] {
                *d |= UNAVAILABLE;
            }
        }
    }

    #[inline]
    fn schedule(&self, input: HashInput) -> Option<usize> {
        self.lookup_folded(addr_fold(input.addr), input.port)
    }

    fn table(&self) -> Vec<Option<usize>> {
        self.lookup
            .iter()
            .map(|d| (*d != NONE).then_some((*d & !UNAVAILABLE) as usize))
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
            last_weight: w,
            overloaded: false,
        }
    }

    #[test]
    fn fastmod_is_exact() {
        for d in [
            1u32,
            2,
            250,
            251,
            4092,
            4093,
            65536,
            65537,
            131_071,
            655_373,
            u32::MAX,
        ] {
            let f = FastMod::new(d);
            for x in [
                0u32,
                1,
                d - 1,
                d,
                d.wrapping_add(1),
                12345,
                0x8000_0000,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert_eq!(f.rem(x), x % d, "{x} % {d}");
            }
        }
    }

    #[test]
    fn sizes_other_than_the_primes_are_refused() {
        assert!(Mh::new(4093, SchedFlags::default()).is_ok());
        assert!(matches!(
            Mh::new(4096, SchedFlags::default()),
            Err(L4Error::BadTableSize { .. })
        ));
        assert!(Mh::new(0, SchedFlags::default()).is_err());
    }

    #[test]
    fn every_slot_filled_and_weights_respected() {
        let mut mh = Mh::new(4093, SchedFlags::default()).unwrap();
        let dests = [
            dest("10.0.0.1", 1),
            dest("10.0.0.2", 2),
            dest("10.0.0.3", 1),
        ];
        mh.rebuild(&dests);
        let mut count = [0usize; 3];
        for s in mh.table() {
            count[s.unwrap()] += 1;
        }
        assert_eq!(count.iter().sum::<usize>(), 4093);
        // Weight 2 takes two picks per round: about twice the slots of the others.
        assert!(
            count[1] > count[0] * 19 / 10 && count[1] < count[0] * 21 / 10,
            "{count:?}"
        );
    }

    #[test]
    fn drained_destination_keeps_its_slots_and_fallback_walks_on() {
        let mut mh = Mh::new(251, SchedFlags::default()).unwrap();
        let mut dests = vec![dest("10.0.0.1", 1), dest("10.0.0.2", 1)];
        mh.rebuild(&dests);
        let before = mh.table();
        dests[1].weight = 0; // last_weight stays 1
        mh.rebuild(&dests);
        assert_eq!(mh.table(), before);
        let fb = {
            let mut m = Mh::new(
                251,
                SchedFlags {
                    port: false,
                    fallback: true,
                },
            )
            .unwrap();
            m.rebuild(&dests);
            m
        };
        let mut refused = 0;
        for i in 0..2000u32 {
            let input = HashInput {
                addr: std::net::Ipv4Addr::from(0xcb00_7100 + i).into(),
                port: 0,
            };
            match mh.schedule(input) {
                Some(d) => assert_eq!(d, 0),
                None => {
                    refused += 1;
                    assert_eq!(fb.schedule(input), Some(0));
                }
            }
        }
        assert!(refused > 700 && refused < 1300, "{refused}");
    }

    #[test]
    fn no_destinations_or_all_last_weights_zero_gives_an_empty_table() {
        let mut mh = Mh::new(251, SchedFlags::default()).unwrap();
        mh.rebuild(&[]);
        assert!(mh.table().iter().all(Option::is_none));
        let mut d = dest("10.0.0.1", 0);
        d.last_weight = 0;
        mh.rebuild(&[d]);
        assert!(mh.table().iter().all(Option::is_none));
        assert_eq!(
            mh.schedule(HashInput {
                addr: "1.2.3.4".parse().unwrap(),
                port: 0
            }),
            None
        );
    }
}
