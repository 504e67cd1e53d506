//! A proxy is put in maintenance (agent file drain): its monitor-uri fails and keepalived deletes it.
//!
//! The seed lab's README expects: the proxy is put in maintenance: its connections drain, nothing breaks
//! Run: `cargo run --release --example proxy_drained`. The scenario is the suite's run `proxy_drained`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_drained.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_drained")
}
