//! director1 fails its health checks of proxy1 for 20 s (a path problem between the two).
//!
//! The seed lab's README expects: (not in the README) director1 fails its checks of proxy1 for 20 s
//! Run: `cargo run --release --example proxy_check_flap`. The scenario is the suite's run `proxy_check_flap`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_check_flap.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_check_flap")
}
