//! A director's maintenance file is created (/etc/lb/disable): its healthcheck raises the MED.
//!
//! The seed lab's README expects: nothing breaks: the VIPs stop being advertised and traffic drains away
//! Run: `cargo run --release --example director_disabled`. The scenario is the suite's run `director_disabled`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/director_disabled.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("director_disabled")
}
