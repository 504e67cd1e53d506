//! A proxy is added to every director's services.
//!
//! The seed lab's README expects: nothing breaks: directors keep their entries.
//! Run: `cargo run --release --example proxy_added`. The scenario is the suite's run `proxy_added`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/proxy_added.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("proxy_added")
}
