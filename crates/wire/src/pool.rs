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

/// Capacity of a new pooled buffer for a packet of more than [`SMALL_CAPACITY`] bytes: a
/// 1500-byte packet with an IPv6 tunnel header.
pub const BUFFER_CAPACITY: usize = 2048;

/// Capacity of a new pooled buffer for a small packet (a bare ACK, a SYN, a RST, even
/// tunnelled): about half of all packets, kept apart so that they do not each hold 2 kB.
pub const SMALL_CAPACITY: usize = 256;

/// Most buffers kept per thread and size class (4.5 MiB at most of spare capacity).
const MAX_SPARE: usize = 2048;

/// Largest capacity worth keeping (jumbo frames; anything larger is freed).
const MAX_KEPT_CAPACITY: usize = 16 * 1024;

thread_local! {
    /// Spare buffers: `[0]` of at least `SMALL_CAPACITY` bytes, `[1]` of at least
    /// `BUFFER_CAPACITY`.
    static SPARE: RefCell<[Vec<Vec<u8>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// An empty buffer with room for at least `min` bytes: a recycled one when there is one.
#[inline]
pub fn take(min: usize) -> Vec<u8> {
    let class = usize::from(min > SMALL_CAPACITY);
    SPARE.with(|s| {
        let mut b = match s.borrow_mut()[class].pop() {
            Some(b) => b,
            None if class == 0 => return Vec::with_capacity(SMALL_CAPACITY),
            None => return Vec::with_capacity(min.max(BUFFER_CAPACITY)),
        };
        if b.capacity() < min {
            b.reserve(min);
        }
        b
    })
}

/// Hands a packet buffer back for reuse (it is cleared; a buffer too small or too large to
/// be worth keeping, or one beyond the pool's limit, is freed).
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(SMALL_CAPACITY..=MAX_KEPT_CAPACITY).contains(&cap) {
        return;
    }
    buf.clear();
    let class = usize::from(cap >= BUFFER_CAPACITY);
    SPARE.with(|s| {
        let list = &mut s.borrow_mut()[class];
        if list.len() < MAX_SPARE {
            list.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_reused_last_in_first_out() {
        let mut a = take(1000);
        assert!(a.is_empty() && a.capacity() >= BUFFER_CAPACITY);
        a.extend_from_slice(&[1, 2, 3]);
        let ptr = a.as_ptr();
        give(a);
        let b = take(300);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the last buffer given is the first taken");
        let big = take(5000);
        assert!(big.capacity() >= 5000);
        give(Vec::new()); // too small to keep: ignored
        // Small packets have their own, smaller buffers.
        let small = take(60);
        assert!((SMALL_CAPACITY..BUFFER_CAPACITY).contains(&small.capacity()));
        let ptr = small.as_ptr();
        give(small);
        let again = take(0);
        assert_eq!(again.as_ptr(), ptr);
    }
}
