//! A director stops announcing the VIPs (graceful).
//!
//! The seed lab's README expects: almost nothing breaks.
//! Run: `cargo run --release --example director_removed`. The scenario is the suite's run `director_removed`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/director_removed.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("director_removed")
}
