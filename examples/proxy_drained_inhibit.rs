//! The same maintenance with keepalived's inhibit_on_failure: weight 0 instead of deletion.
//!
//! The seed lab's README expects: (variant) keepalived with inhibit_on_failure: weight 0 instead of deletion
//! Run: `cargo run --release --example proxy_drained_inhibit`. The scenario is the suite's run `proxy_drained_inhibit`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_drained_inhibit.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_drained_inhibit")
}
