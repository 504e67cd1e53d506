//! gdnsd's admin state file marks VIP 198.51.100.1 down; the clients resolve www1 and www2.
//!
//! The seed lab's README expects: a VIP marked down in gdnsd stops receiving new connections once caches expire
//! Run: `cargo run --release --example dns_vip_down`. The scenario is the suite's run `dns_vip_down`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/dns_vip_down.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("dns_vip_down")
}
