//! A director is added and starts announcing the VIPs.
//!
//! The seed lab's README expects: almost nothing breaks.
//! Run: `cargo run --release --example director_added`. The scenario is the suite's run `director_added`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/director_added.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("director_added")
}
