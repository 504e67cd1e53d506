//! ECMP change in front of the directors (the routers list the directors in another order).
//!
//! The seed lab's README expects: almost nothing breaks: every director computes the same mh table.
//! Run: `cargo run --release --example ecmp_change`. The scenario is the suite's run `ecmp_change`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/ecmp_change.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("ecmp_change")
}
