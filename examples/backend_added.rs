//! A backend is added to every proxy.
//!
//! The seed lab's README expects: nothing breaks: proxies are stateful.
//! Run: `cargo run --release --example backend_added`. The scenario is the suite's run `backend_added`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/backend_added.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("backend_added")
}
