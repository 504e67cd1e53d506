//! A director dies without withdrawing its routes: the routers keep it until their BGP hold timers expire.
//!
//! The seed lab's README expects: (not in the README) a director lost without withdrawing
//! Run: `cargo run --release --example director_died`. The scenario is the suite's run `director_died`
//! (`tierlab_lab::suite`), the same as `examples/scenarios/director_died.toml`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tierlab::lab::suite::print_run("director_died")
}
