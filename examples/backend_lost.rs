//! A backend dies.
//!
//! The seed lab's README expects: only its connections break.
//! Run: `cargo run --release --example backend_lost`. The scenario is the suite's run `backend_lost`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/backend_lost.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("backend_lost")
}
