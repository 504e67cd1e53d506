//! A proxy is added, then the ECMP layer changes.
//!
//! The seed lab's README expects: some connections land on a director without state and are reset by the wrong proxy.
//! Run: `cargo run --release --example proxy_added_then_ecmp_change`. The scenario is the suite's run `proxy_added_then_ecmp_change`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_added_then_ecmp_change.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_added_then_ecmp_change")
}
