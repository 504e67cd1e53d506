//! Recycled packet buffers.
//!
//! A simulated packet is a `Vec<u8>` built by its sender and dropped by the node that
//! consumes it; at millions of packets per run, a fresh allocation per packet costs more than
//! building the packet, and a fresh buffer is cold in the cache. Builders take their buffer
//! from this per-thread free list ([`take`]) and nodes that consume a packet hand its buffer
//! back ([`give`]): the most recently freed buffer is reused first, while it is still in the
//! cache. Buffers carry no data from one use to the next (a taken buffer is empty), so the
//! pool changes no result, only where bytes are written.

use std::cell::RefCell;

/// Capacity of a new pooled buffer: a 1500-byte packet with an IPv6 tunnel header.
pub const BUFFER_CAPACITY: usize = 2048;

/// Most buffers kept per thread (4 MiB at most of spare capacity).
const MAX_SPARE: usize = 2048;

/// Largest capacity worth keeping (jumbo frames; anything larger is freed).
const MAX_KEPT_CAPACITY: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min` bytes: a recycled one when there is one.
pub fn take(min: usize) -> Vec<u8> {
    let recycled = SPARE.with(|s| s.borrow_mut().pop());
    match recycled {
        Some(mut b) => {
            b.reserve(min);
            b
        }
        None => Vec::with_capacity(min.max(BUFFER_CAPACITY)),
    }
}

/// Hands a packet buffer back for reuse (it is cleared; a buffer too small or too large to
/// be worth keeping, or one beyond the pool's limit, is freed).
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(256..=MAX_KEPT_CAPACITY).contains(&cap) {
        return;
    }
    buf.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < MAX_SPARE {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_reused_last_in_first_out() {
        let mut a = take(100);
        assert!(a.is_empty() && a.capacity() >= BUFFER_CAPACITY);
        a.extend_from_slice(&[1, 2, 3]);
        let ptr = a.as_ptr();
        give(a);
        let b = take(10);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the last buffer given is the first taken");
        let big = take(5000);
        assert!(big.capacity() >= 5000);
        give(Vec::new()); // too small to keep: ignored
    }
}
