//! The one seeded random generator of tierlab.
//!
//! [`SimRng`] is ChaCha8 from `rand_chacha`: a *named, portable* generator whose stream is fixed
//! across platforms and versions of `rand_chacha` (unlike `rand::rngs::StdRng`, which rand documents
//! as not portable). Every random choice in a run (workload, per-router hash seeds, health-check
//! phases) is drawn from a `SimRng` derived from the scenario's seed, never from OS entropy.

use rand::SeedableRng;

/// The portable seeded generator every tierlab component uses.
pub type SimRng = rand_chacha::ChaCha8Rng;

/// A generator seeded from a 64-bit scenario seed.
pub fn seeded(seed: u64) -> SimRng {
    SimRng::seed_from_u64(seed)
}

/// A generator for one named component, independent of the others: the same `(seed, stream)`
/// always gives the same sequence, and adding a component does not shift the draws of another.
pub fn stream(seed: u64, stream: u64) -> SimRng {
    let mut rng = SimRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    /// Value stability: if this changes, every published number changes with it.
    #[test]
    fn first_outputs_are_pinned() {
        let mut rng = seeded(42);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = seeded(42);
        let again: Vec<u64> = (0..3).map(|_| again.next_u64()).collect();
        assert_eq!(got, again);
        assert_eq!(got, PINNED_SEED_42.to_vec());
    }

    #[test]
    fn streams_are_independent() {
        let a = stream(7, 1).next_u64();
        let b = stream(7, 2).next_u64();
        assert_ne!(a, b);
        assert_eq!(a, stream(7, 1).next_u64());
    }

    const PINNED_SEED_42: [u64; 3] = [
        12_578_764_544_318_200_737,
        17_529_487_244_874_322_312,
        7_886_285_670_807_131_020,
    ];
}
