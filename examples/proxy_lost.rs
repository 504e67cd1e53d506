//! A proxy dies.
//!
//! The seed lab's README expects: its connections break; the others survive.
//! Run: `cargo run --release --example proxy_lost`. The scenario is the suite's run `proxy_lost`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_lost.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_lost")
}
