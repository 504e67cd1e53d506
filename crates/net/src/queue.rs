//! The event queue: ordered by (time, insertion sequence).
//!
//! Events carry a key `(time, sequence)`, the sequence being a counter of pushes, so events
//! due at the same instant come out in the order they were pushed. Two stores share that
//! order:
//! - a FIFO lane for events pushed with [`EventQueue::push_in_order`] whose time is not
//!   before the lane's last one: packet deliveries are due `now + latency`, and with equal
//!   latencies on every link (the lab's) they arrive in time order, so they cost O(1);
//! - a binary heap for everything else (timers, deliveries out of order).
//!
//! A pop takes the smaller key of the lane's front and the heap's top, so the order is
//! exactly the one a single priority queue would give. The engine's pending events are the
//! packets in flight (tens of thousands at the peak of a large run) plus one armed timer or so
//! per node; the heap then stays small.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use tierlab_wire::Instant;

struct Entry<E> {
    at: Instant,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed: the max-heap then pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A queue of events of type `E`, popped in (time, insertion) order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    lane: VecDeque<Entry<E>>,
    seq: u64,
}

impl<E> core::fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventQueue")
            .field("len", &self.len())
            .field("next", &self.peek_time())
            .finish()
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            lane: VecDeque::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, at: Instant, event: E) -> Entry<E> {
        let seq = self.seq;
        self.seq += 1;
        Entry { at, seq, event }
    }

    /// Adds an event due at `at`, after every event already due at `at`.
    pub fn push(&mut self, at: Instant, event: E) {
        let e = self.entry(at, event);
        self.heap.push(e);
    }

    /// Like [`EventQueue::push`], for an event that usually comes due in push order (a
    /// packet delivery at `now + latency`): when `at` is not before the last such event it
    /// is appended to a FIFO lane, at no heap cost. The pop order is the same either way.
    pub fn push_in_order(&mut self, at: Instant, event: E) {
        let e = self.entry(at, event);
        if self.lane.back().is_none_or(|b| b.at <= at) {
            self.lane.push_back(e);
        } else {
            self.heap.push(e);
        }
    }

    /// Whether the lane's front comes before the heap's top.
    fn lane_first(&self) -> Option<bool> {
        match (self.lane.front(), self.heap.peek()) {
            (Some(l), Some(h)) => Some((l.at, l.seq) < (h.at, h.seq)),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Instant> {
        match self.lane_first()? {
            true => self.lane.front().map(|e| e.at),
            false => self.heap.peek().map(|e| e.at),
        }
    }

    /// Removes and returns the earliest event (first inserted among equals).
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        let e = match self.lane_first()? {
            true => self.lane.pop_front(),
            false => self.heap.pop(),
        }?;
        Some((e.at, e.event))
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len() + self.lane.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty() && self.lane.is_empty()
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
                // Alternate the two kinds of push: the order must not depend on it.
                if i % 3 == 0 {
                    q.push(Instant::from_nanos(t), i);
                } else {
                    q.push_in_order(Instant::from_nanos(t), i);
                }
            }
            prop_assert_eq!(q.len(), times.len());
            let mut expected: Vec<(u64, usize)> = times.iter().copied().zip(0..).collect();
            expected.sort();
            let got: Vec<(u64, usize)> = std::iter::from_fn(|| q.pop()).map(|(t, i)| (t.as_nanos(), i)).collect();
            prop_assert_eq!(got, expected);
            prop_assert!(q.is_empty());
        }

        /// Pushes and pops interleaved as in a simulation (times never before the last pop):
        /// the pops match a reference ordered map of (time, sequence).
        #[test]
        fn interleaved_pushes_and_pops_match_a_reference(
            ops in proptest::collection::vec((0u64..30, 0u8..4), 0..300)
        ) {
            let mut q = EventQueue::new();
            let mut reference = std::collections::BTreeMap::new();
            let (mut now, mut seq) = (0u64, 0usize);
            for (dt, op) in ops {
                if op == 0 {
                    let got = q.pop().map(|(t, i)| (t.as_nanos(), i));
                    let want = reference.pop_first().map(|(k, ())| k);
                    prop_assert_eq!(got, want);
                    if let Some((t, _)) = got {
                        now = t;
                    }
                } else {
                    let at = now + dt;
                    if op == 1 {
                        q.push(Instant::from_nanos(at), seq);
                    } else {
                        q.push_in_order(Instant::from_nanos(at), seq);
                    }
                    reference.insert((at, seq), ());
                    seq += 1;
                }
                prop_assert_eq!(q.peek_time().map(Instant::as_nanos), reference.keys().next().map(|k| k.0));
            }
        }
    }
}
