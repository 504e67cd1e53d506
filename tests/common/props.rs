//! One proptest configuration for every property test: a fixed RNG seed, so that a test run
//! is a function of the code (as a tierlab run is a function of its scenario and seed) and CI
//! never sees a case nobody has seen before. New cases come from changing [`SEED`] on purpose;
//! what fails is kept in the `*.proptest-regressions` files and replayed first.

use proptest::test_runner::{Config, RngSeed};

/// The seed every property test starts from.
pub(crate) const SEED: u64 = 0x7469_6572_6c61_6201;

/// `cases` cases generated from [`SEED`].
pub(crate) fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(SEED),
        ..Config::default()
    }
}
