//! A criterion measurement: the benchmark thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! printed like wall time. This project's machines have 2 cores shared by several builds and
//! benches; time spent descheduled would otherwise be counted as the cost of the operation.
//! The figure is the cost on one core (cache and SMT contention from neighbours still shows).
//!
//! Included by each bench with `#[path = "support/cpu_time.rs"] mod cpu_time;`.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use nix::time::{ClockId, clock_gettime};

/// CPU time of the calling thread, as a criterion measurement.
pub(crate) struct ThreadCpuTime;

static WALL: WallTime = WallTime;

fn thread_cpu_now() -> Duration {
    // The thread CPU clock exists on every Linux; failing to read it is a broken host.
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("CLOCK_THREAD_CPUTIME_ID");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}
