//! The Maglev paper's lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4, Pseudocode 1), for comparison with IPVS `mh`.
//!
//! The paper leaves the hash functions open; tierlab uses SipHash-1-3 with three fixed keys
//! (so every run and platform gets the same table): `h1`/`h2` of the destination (address,
//! port) give its offset and skip, `h0` of the flow's hash input picks the slot. Lookups hash
//! the same input as `mh` (client address, and client port with the port flag) so a comparison
//! isolates the table. Weights: a destination takes `last_weight / gcd` picks per round (the
//! paper's "relative frequency of turns"); weight 0 with a non-zero last weight keeps its slots
//! and refuses new flows, like `mh` (no fallback).

use std::net::IpAddr;

use super::mh::FastMod;
use super::{HashInput, NONE, SchedDest, SchedFlags, Scheduler, SchedulerKind, gcd};
use crate::error::L4Error;
use crate::siphash::{SipKey, siphash13_words};

/// The paper's small table size (its experiments also use 655,373).
pub(crate) const DEFAULT_SIZE: usize = 65_537;

/// Largest table size accepted (a prime just under 2^26).
const MAX_SIZE: usize = 67_108_859;

/// Key of `h0` (flow → slot).
const H0: SipKey = SipKey(0x7469_6572_6c61_6230, 0x6d61_676c_6576_2d30);
/// Key of `h1` (destination → offset).
const H1: SipKey = SipKey(0x7469_6572_6c61_6231, 0x6d61_676c_6576_2d31);
/// Key of `h2` (destination → skip).
const H2: SipKey = SipKey(0x7469_6572_6c61_6232, 0x6d61_676c_6576_2d32);

/// SipHash-1-3 of an address and port with `key`.
#[inline]
fn hash_addr_port(addr: IpAddr, port: u16, key: SipKey) -> u64 {
    match addr {
        IpAddr::V4(a) => {
            siphash13_words(&[], u64::from(u32::from(a)) | u64::from(port) << 32, 6, key)
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            siphash13_words(&[(v >> 64) as u64, v as u64], u64::from(port), 2, key)
        }
    }
}

/// The paper table's (offset, skip) of a destination for table size `m` (prime).
pub(crate) fn offset_skip(addr: IpAddr, port: u16, m: u32) -> (u32, u32) {
    let offset = FastMod::new(m).rem(hash_addr_port(addr, port, H1) as u32);
    let skip = FastMod::new(m - 1).rem(hash_addr_port(addr, port, H2) as u32) + 1;
    (offset, skip)
}

/// Whether `n` is prime (trial division; `n` is at most [`MAX_SIZE`]).
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The Maglev paper's table of `M` slots (`M` prime).
#[derive(Clone, Debug)]
pub struct Maglev {
    size: u32,
    modulo: FastMod,
    flags: SchedFlags,
    entry: Vec<u32>,
    available: Vec<bool>,
    // Scratch space reused across rebuilds.
    taken: Vec<u64>,
    setup: Vec<Setup>,
}

/// A destination's place in the build.
#[derive(Clone, Copy, Debug)]
struct Setup {
    /// Next candidate slot (Pseudocode 1's `permutation[i][next[i]]`).
    next: u32,
    offset: u32,
    skip: u32,
    /// `2·skip mod M` and `3·skip mod M`.
    skip2: u32,
    skip3: u32,
    turns: u32,
    /// `skip⁻¹ mod M`, computed when first needed (0 = not yet).
    inverse: u32,
}

/// Set in a slot whose destination is unavailable; [`NONE`] has it too.
const UNAVAILABLE: u32 = 1 << 31;

/// Below this many free slots the build switches from probing to rank selection: probing
/// costs about M/F probes per fill, rank selection F multiplications.
fn tail_threshold(m: u32) -> u32 {
    let mut t = 1u32;
    while u64::from(t) * u64::from(t) * 2 < u64::from(m) {
        t += 1;
    }
    t
}

/// `x mod m` for `x < m²` and `m < 2^27` by Barrett reduction (one 64×64→128 multiplication).
#[derive(Clone, Copy, Debug)]
struct Barrett {
    m: u64,
    mu: u64,
}

impl Barrett {
    fn new(m: u32) -> Self {
        Self {
            m: u64::from(m),
            mu: u64::MAX / u64::from(m),
        }
    }

    #[inline(always)]
    fn rem(self, x: u64) -> u64 {
        let q = ((u128::from(x) * u128::from(self.mu)) >> 64) as u64;
        let r = x - q * self.m;
        if r >= self.m { r - self.m } else { r }
    }
}

/// The clear bits below `m` of a bitset, in increasing order.
fn free_slots(taken: &[u64], m: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for (w, word) in taken.iter().enumerate() {
        let mut free = !word;
        while free != 0 {
            let c = w as u32 * 64 + free.trailing_zeros();
            if c >= m {
                break;
            }
            out.push(c);
            free &= free - 1;
        }
    }
    out
}

/// `a⁻¹ mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
}

impl Maglev {
    /// An empty table of `size` slots: a prime from 3 to 67,108,859.
    ///
    /// # Errors
    /// [`L4Error::BadTableSize`] otherwise (the permutation `offset + j·skip mod M` covers every
    /// slot only when `M` is prime).
    pub fn new(size: usize, flags: SchedFlags) -> Result<Self, L4Error> {
        if !(3..=MAX_SIZE).contains(&size) || !is_prime(size) {
            return Err(L4Error::BadTableSize {
                scheduler: "maglev",
                size,
                reason: "must be a prime from 3 to 67108859",
            });
        }
        let size32 = size as u32;
        Ok(Self {
            size: size32,
            modulo: FastMod::new(size32),
            flags,
            entry: vec![NONE; size],
            available: Vec::new(),
            taken: Vec::new(),
            setup: Vec::new(),
        })
    }

    /// The slot of a hash input.
    #[inline]
    pub fn slot(&self, input: HashInput) -> usize {
        self.modulo
            .rem(hash_addr_port(input.addr, input.port, H0) as u32) as usize
    }
}

impl Maglev {
    fn fold_availability(&mut self) {
        if self.available.iter().all(|a| *a) {
            return;
        }
        for d in &mut self.entry {
            if *d != NONE && !self.available[*d as usize] {
                *d |= UNAVAILABLE;
            }
        }
    }
}

impl Scheduler for Maglev {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Maglev
    }

    fn table_size(&self) -> usize {
        self.size as usize
    }

    fn flags(&self) -> SchedFlags {
        self.flags
    }

    /// The paper's Pseudocode 1 ("Populate Maglev hashing lookup table"), with weighted turns.
    ///
    /// Two exact shortcuts keep the build near the cost of one probe sequence per slot:
    /// - free slots are a bitset (8 KB for M = 65,537, in L1) rather than the entry array;
    /// - the last ≈ √(M/2) fills, where probing would need M/F probes each with F slots
    ///   free, pick instead the free slot of smallest permutation rank
    ///   `((c - offset) · skip⁻¹) mod M`. Every slot before a destination's next candidate
    ///   is taken and slots never free up, so its first free candidate *is* the free slot of
    ///   smallest rank: the table is the one Pseudocode 1 builds (tested against a direct
    ///   transcription).
    fn rebuild(&mut self, dests: &[SchedDest]) {
        self.available.clear();
        self.available
            .extend(dests.iter().map(|d| !d.is_unavailable()));
        let g = dests
            .iter()
            .filter(|d| d.last_weight > 0)
            .fold(0, |g, d| gcd(d.last_weight, g));
        if g == 0 {
            self.entry.fill(NONE);
            return;
        }
        // Every slot is written below (the fill stops only when all M are taken).
        let m = self.size;
        let skip_mod = FastMod::new(m - 1);
        self.setup.clear();
        self.setup.extend(dests.iter().map(|d| {
            let offset = self.modulo.rem(hash_addr_port(d.addr, d.port, H1) as u32);
            let skip = skip_mod.rem(hash_addr_port(d.addr, d.port, H2) as u32) + 1;
            let skip2 = if 2 * skip >= m {
                2 * skip - m
            } else {
                2 * skip
            };
            let skip3 = if skip2 + skip >= m {
                skip2 + skip - m
            } else {
                skip2 + skip
            };
            Setup {
                next: offset,
                offset,
                skip,
                skip2,
                skip3,
                turns: d.last_weight / g,
                inverse: 0,
            }
        }));
        self.taken.clear();
        self.taken.resize((m as usize).div_ceil(64), 0);
        let taken = &mut self.taken;
        let entry = &mut self.entry;
        let tail = tail_threshold(m);
        let barrett = Barrett::new(m);
        let mut free: Vec<u32> = Vec::new();
        let mut tail_mode = false;
        let mut n = 0u32;
        loop {
            for (i, ds) in self.setup.iter_mut().enumerate() {
                for _ in 0..ds.turns {
                    let c = if !tail_mode && m - n > tail {
                        // Four candidates per step, tested without a branch each: the loop
                        // exit is the only unpredictable branch, taken once per fill at most.
                        let wrap = |x: u32| if x >= m { x - m } else { x };
                        let (s1, s2, s3) = (ds.skip, ds.skip2, ds.skip3);
                        let s4 = wrap(s2 + s2);
                        let free = |x: u32| (!taken[(x >> 6) as usize] >> (x & 63)) & 1;
                        let mut c0 = ds.next;
                        let (c, next) = loop {
                            let (c1, c2, c3) = (wrap(c0 + s1), wrap(c0 + s2), wrap(c0 + s3));
                            let mask = free(c0) | free(c1) << 1 | free(c2) << 2 | free(c3) << 3;
                            if mask != 0 {
                                let k = mask.trailing_zeros();
                                let cand = [c0, c1, c2, c3];
                                let c = cand[k as usize & 3];
                                break (c, wrap(c + s1));
                            }
                            c0 = wrap(c0 + s4);
                        };
                        taken[(c >> 6) as usize] |= 1 << (c & 63);
                        ds.next = next;
                        c
                    } else {
                        if !tail_mode {
                            tail_mode = true;
                            free = free_slots(taken, m);
                        }
                        if ds.inverse == 0 {
                            ds.inverse = inverse_mod(ds.skip, m);
                        }
                        let (off, inv) = (ds.offset, u64::from(ds.inverse));
                        let mut best = (u64::MAX, 0usize);
                        for (k, c) in free.iter().enumerate() {
                            let d = if *c >= off { *c - off } else { *c + m - off };
                            let rank = barrett.rem(u64::from(d) * inv);
                            if rank < best.0 {
                                best = (rank, k);
                            }
                        }
                        free.swap_remove(best.1)
                    };
                    entry[c as usize] = i as u32;
                    n += 1;
                    if n == m {
                        self.fold_availability();
                        return;
                    }
                }
            }
        }
    }

    #[inline]
    fn schedule(&self, input: HashInput) -> Option<usize> {
        let d = self.entry[self.slot(input)];
        (d < UNAVAILABLE).then_some(d as usize)
    }

    fn table(&self) -> Vec<Option<usize>> {
        self.entry
            .iter()
            .map(|d| (*d != NONE).then_some((*d & !UNAVAILABLE) as usize))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudocode 1 as printed: probe each destination's permutation from its `next` index.
    fn direct(m: u32, setup: &[(u32, u32, u32)]) -> Vec<u32> {
        let mut entry = vec![NONE; m as usize];
        let mut next: Vec<u64> = vec![0; setup.len()];
        let mut n = 0;
        loop {
            for (i, (offset, skip, turns)) in setup.iter().enumerate() {
                for _ in 0..*turns {
                    let perm = |j: u64| {
                        ((u64::from(*offset) + j * u64::from(*skip)) % u64::from(m)) as usize
                    };
                    let mut c = perm(next[i]);
                    while entry[c] != NONE {
                        next[i] += 1;
                        c = perm(next[i]);
                    }
                    entry[c] = i as u32;
                    next[i] += 1;
                    n += 1;
                    if n == m {
                        return entry;
                    }
                }
            }
        }
    }

    #[test]
    fn fast_build_equals_pseudocode_1() {
        for (m, n, w) in [
            (251u32, 3u32, 1u32),
            (251, 40, 3),
            (4093, 13, 1),
            (4093, 100, 2),
            (65_537, 13, 1),
            (65_537, 1000, 1),
        ] {
            let mut d = dests(n);
            for (k, x) in d.iter_mut().enumerate() {
                x.last_weight = 1 + (k as u32 % w);
                x.weight = x.last_weight;
            }
            let mut t = Maglev::new(m as usize, SchedFlags::default()).unwrap();
            t.rebuild(&d);
            let g = d.iter().fold(0, |g, x| gcd(x.last_weight, g));
            let setup: Vec<(u32, u32, u32)> = t
                .setup
                .iter()
                .map(|s| (s.offset, s.skip, s.turns))
                .collect();
            assert_eq!(
                setup.iter().map(|s| s.2).sum::<u32>(),
                d.iter().map(|x| x.last_weight / g).sum::<u32>()
            );
            let want: Vec<Option<usize>> = direct(m, &setup)
                .into_iter()
                .map(|e| Some(e as usize))
                .collect();
            assert_eq!(t.table(), want, "M={m} N={n}");
        }
    }

    #[test]
    fn barrett_and_inverse() {
        for m in [3u32, 251, 65_537, 655_373, 67_108_859] {
            let b = Barrett::new(m);
            let mm = u64::from(m);
            for x in [
                0,
                1,
                mm - 1,
                mm,
                mm + 1,
                mm * mm - 1,
                (mm - 1) * (mm - 1),
                123_456_789 % (mm * mm),
            ] {
                assert_eq!(b.rem(x), x % mm, "{x} mod {m}");
            }
            for a in [1, 2, m / 2, m - 1] {
                assert_eq!(u64::from(a) * u64::from(inverse_mod(a, m)) % mm, 1);
            }
        }
    }

    fn dests(n: u32) -> Vec<SchedDest> {
        (0..n)
            .map(|i| SchedDest {
                addr: std::net::Ipv4Addr::from(0x0a00_0001 + i).into(),
                port: 80,
                weight: 1,
                last_weight: 1,
                overloaded: false,
            })
            .collect()
    }

    #[test]
    fn only_primes() {
        assert!(Maglev::new(65_537, SchedFlags::default()).is_ok());
        assert!(Maglev::new(655_373, SchedFlags::default()).is_ok());
        assert!(Maglev::new(65_536, SchedFlags::default()).is_err());
        assert!(Maglev::new(1, SchedFlags::default()).is_err());
    }

    #[test]
    fn balanced_and_full() {
        let mut t = Maglev::new(65_537, SchedFlags::default()).unwrap();
        t.rebuild(&dests(13));
        let mut count = [0usize; 13];
        for s in t.table() {
            count[s.unwrap()] += 1;
        }
        let (min, max) = (*count.iter().min().unwrap(), *count.iter().max().unwrap());
        // The paper: with M >> N every backend gets M/N slots give or take one round.
        assert!(max - min <= 2, "{count:?}");
    }
}
