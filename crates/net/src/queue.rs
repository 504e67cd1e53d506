//! The event queue: ordered by (time, insertion sequence).
//!
//! Events due at the same instant share one FIFO bucket in a `BTreeMap` keyed by time, so the
//! cost of a push or pop grows with the number of *distinct* pending instants, not with the
//! number of events: a simulation whose events are mostly timers at a few deadlines (every
//! client's read timeout, every health check) stays cheap at a million pending events.

use std::collections::{BTreeMap, VecDeque};

use tierlab_wire::Instant;

/// A queue of events of type `E`, popped in (time, insertion) order.
#[derive(Debug)]
pub struct EventQueue<E> {
    buckets: BTreeMap<Instant, VecDeque<E>>,
    len: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            buckets: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event due at `at`, after every event already due at `at`.
    pub fn push(&mut self, at: Instant, event: E) {
        self.buckets.entry(at).or_default().push_back(event);
        self.len += 1;
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Instant> {
        self.buckets.first_key_value().map(|(&t, _)| t)
    }

    /// Removes and returns the earliest event (first inserted among equals).
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        let mut entry = self.buckets.first_entry()?;
        let at = *entry.key();
        let event = entry
            .get_mut()
            .pop_front()
            .expect("buckets are never left empty");
        if entry.get().is_empty() {
            entry.remove();
        }
        self.len -= 1;
        Some((at, event))
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// Pops come out sorted by time, and in insertion order among equal times.
        #[test]
        fn pops_in_time_then_insertion_order(times in proptest::collection::vec(0u64..20, 0..200)) {
            let mut q = EventQueue::new();
            for (i, &t) in times.iter().enumerate() {
                q.push(Instant::from_nanos(t), i);
            }
            prop_assert_eq!(q.len(), times.len());
            let mut expected: Vec<(u64, usize)> = times.iter().copied().zip(0..).collect();
            expected.sort();
            let got: Vec<(u64, usize)> = std::iter::from_fn(|| q.pop()).map(|(t, i)| (t.as_nanos(), i)).collect();
            prop_assert_eq!(got, expected);
            prop_assert!(q.is_empty());
        }
    }
}
