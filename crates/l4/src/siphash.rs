//! SipHash-1-3 as the Linux kernel computes `hsiphash` on 64-bit machines.
//!
//! Mirrors lib/siphash.c (Linux v6.x, `BITS_PER_LONG == 64` branch): on 64-bit kernels
//! "HalfSipHash1-3" is really SipHash-1-3 (one compression round, three finalization rounds,
//! 64-bit state words, a 128-bit key given as two `unsigned long`s) and the 64-bit result is
//! truncated to `u32`. `ip_vs_mh` calls `hsiphash(&v, sizeof(v), key)` on a 4-byte `unsigned
//! int`; the bytes are in host order, so on the little-endian machines the lab runs on
//! (x86-64, arm64) the message is `v.to_le_bytes()`. [`hsiphash_u32`] is that call.
//!
//! Proven against the kernel's own published vectors (lib/tests/siphash_kunit.c,
//! `test_vectors_hsiphash`, 64-bit table) and against the `siphasher` crate's `SipHasher13`.

/// A SipHash key: the kernel's `hsiphash_key_t` on 64-bit (`key[0]`, `key[1]`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct SipKey(pub u64, pub u64);

const C0: u64 = 0x736f_6d65_7073_6575;
const C1: u64 = 0x646f_7261_6e64_6f6d;
const C2: u64 = 0x6c79_6765_6e65_7261;
const C3: u64 = 0x7465_6462_7974_6573;

#[derive(Clone, Copy)]
struct State {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl State {
    #[inline(always)]
    const fn new(key: SipKey) -> Self {
        Self {
            v0: C0 ^ key.0,
            v1: C1 ^ key.1,
            v2: C2 ^ key.0,
            v3: C3 ^ key.1,
        }
    }

    /// One SipRound (lib/siphash.c `SIPROUND`).
    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// Absorbs one 8-byte word with one compression round (SipHash-1-x).
    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.v0 ^= m;
    }

    /// The final block `b` and three finalization rounds (`HPOSTAMBLE`).
    #[inline(always)]
    fn finish(mut self, b: u64) -> u64 {
        self.compress(b);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        (self.v0 ^ self.v1) ^ (self.v2 ^ self.v3)
    }
}

/// SipHash-1-3 of `data` with `key`, the full 64-bit result (lib/siphash.c
/// `__hsiphash_unaligned` before its truncation to `u32`).
pub fn siphash13(data: &[u8], key: SipKey) -> u64 {
    let mut s = State::new(key);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        s.compress(u64::from_le_bytes(w));
    }
    let mut b = (data.len() as u64) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        b |= u64::from(*byte) << (8 * i);
    }
    s.finish(b)
}

/// The kernel's `hsiphash(data, len, key)` on 64-bit: SipHash-1-3 truncated to 32 bits.
pub fn hsiphash(data: &[u8], key: SipKey) -> u32 {
    siphash13(data, key) as u32
}

/// `hsiphash(&v, 4, key)` for a 4-byte host-order (little-endian) `u32`, as `ip_vs_mh_hashkey`
/// calls it; equal to `hsiphash_1u32(v, key)` (lib/siphash.c). No loop, no allocation: this is
/// the hot path of every `mh` lookup.
#[inline]
pub fn hsiphash_u32(v: u32, key: SipKey) -> u32 {
    State::new(key).finish((4u64 << 56) | u64::from(v)) as u32
}

/// SipHash-1-3 (64-bit result) of a message made of whole little-endian 64-bit words followed by
/// `tail_len` (0..=7) low bytes of `tail`: used by the paper's Maglev table to hash addresses and
/// ports without building a byte buffer.
#[inline]
pub fn siphash13_words(words: &[u64], tail: u64, tail_len: u32, key: SipKey) -> u64 {
    let mut s = State::new(key);
    for w in words {
        s.compress(*w);
    }
    let len = words.len() as u64 * 8 + u64::from(tail_len);
    let mask = if tail_len == 0 {
        0
    } else {
        u64::MAX >> (64 - 8 * tail_len.min(7))
    };
    s.finish((len << 56) | (tail & mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;

    /// lib/tests/siphash_kunit.c: `test_key_hsiphash` (64-bit).
    const KEY: SipKey = SipKey(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    /// lib/tests/siphash_kunit.c: `test_vectors_hsiphash` (the `BITS_PER_LONG == 64` table):
    /// entry `i` is `hsiphash` of the bytes `0, 1, .., i-1`.
    const VECTORS: [u32; 64] = [
        0x050f_c4dc,
        0x7d57_ca93,
        0x4dc7_d44d,
        0xe7dd_f7fb,
        0x88d3_8328,
        0x4953_3b67,
        0xc59f_22a7,
        0x9bb1_1140,
        0x8d29_9a8e,
        0x6c06_3de4,
        0x92ff_097f,
        0xf94d_c352,
        0x57b4_d9a2,
        0x1229_ffa7,
        0xc0f9_5d34,
        0x2a51_9956,
        0x7d90_8b66,
        0x63db_d80c,
        0xb473_e63e,
        0x8d29_7d1c,
        0xa6cc_e040,
        0x2b45_f844,
        0xa320_872e,
        0xdae6_c123,
        0x6734_9c8c,
        0x705b_0979,
        0xca99_13a5,
        0x4ade_3b35,
        0xef6c_d00d,
        0x4ab1_e1f4,
        0x43c5_e663,
        0x8c21_d1bc,
        0x16a7_b60d,
        0x7a8f_f9bf,
        0x1f2a_753e,
        0xbf18_6b91,
        0xada2_6206,
        0xa3c3_3057,
        0xae3a_36a1,
        0x7b10_8392,
        0x99e4_1531,
        0x3f1a_d944,
        0xc813_8825,
        0xc289_49a6,
        0xfaf8_876b,
        0x9f04_2196,
        0x68b1_d623,
        0x8b51_14fd,
        0xdf07_4c46,
        0x12cc_86b3,
        0x0a52_098f,
        0x9d29_2f9a,
        0xa2f4_1f12,
        0x43a7_1ed0,
        0x73f0_bce6,
        0x70a7_e980,
        0x243c_6d75,
        0xfdb7_1513,
        0xa67d_8a08,
        0xb7e8_f148,
        0xf7a6_44ee,
        0x0f18_37f2,
        0x4b66_94e0,
        0xb7bb_b3a8,
    ];

    #[test]
    fn kernel_published_hsiphash_vectors() {
        let input: Vec<u8> = (0u8..64).collect();
        for (i, want) in VECTORS.iter().enumerate() {
            assert_eq!(hsiphash(&input[..i], KEY), *want, "length {i}");
        }
        // The kunit file also checks hsiphash_1u32(0x03020100) against vector 4.
        assert_eq!(hsiphash_u32(0x0302_0100, KEY), VECTORS[4]);
    }

    #[test]
    fn matches_the_siphasher_crate() {
        let input: Vec<u8> = (0u8..=255).map(|b| b.wrapping_mul(37)).collect();
        for len in 0..input.len() {
            let mut h =
                siphasher::sip::SipHasher13::new_with_keys(0x9e37_79b1, 0x1234_5678_9abc_def0);
            h.write(&input[..len]);
            assert_eq!(
                siphash13(&input[..len], SipKey(0x9e37_79b1, 0x1234_5678_9abc_def0)),
                h.finish()
            );
        }
        for v in [0u32, 1, 80, 0xc633_6401, u32::MAX] {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(2_654_435_761, 2_654_435_761);
            h.write(&v.to_le_bytes());
            assert_eq!(
                u64::from(hsiphash_u32(v, SipKey(2_654_435_761, 2_654_435_761))),
                h.finish() & 0xffff_ffff
            );
        }
    }

    #[test]
    fn word_form_equals_byte_form() {
        let bytes: Vec<u8> = (0u8..23).collect();
        for len in 0..bytes.len() {
            let words: Vec<u64> = bytes[..len]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let rest = &bytes[words.len() * 8..len];
            let mut tail = 0u64;
            for (i, b) in rest.iter().enumerate() {
                tail |= u64::from(*b) << (8 * i);
            }
            assert_eq!(
                siphash13_words(&words, tail | 0xff00_0000_0000_0000, rest.len() as u32, KEY),
                siphash13(&bytes[..len], KEY),
                "length {len}"
            );
        }
    }
}
