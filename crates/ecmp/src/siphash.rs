//! SipHash-2-4 as the kernel computes it (lib/siphash.c, `__siphash_aligned`, Linux 6.18), and
//! the key the multipath hash derives from `fib_multipath_hash_seed`.
//!
//! The kernel hashes the `struct flow_keys` region as a byte string: little-endian 64-bit words,
//! then a last word holding the tail bytes and `len << 56`. The multipath inputs are always a
//! multiple of 8 bytes long (48 for IPv4, 72 for IPv6), so [`siphash24_words`] takes the words
//! directly; [`siphash24`] is the general byte-string form, used to check the word form and the
//! published test vectors.

/// A SipHash key: two 64-bit halves (`siphash_key_t` in the kernel).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct SipKey {
    /// First half (`key[0]`).
    pub k0: u64,
    /// Second half (`key[1]`).
    pub k1: u64,
}

impl SipKey {
    /// The key the multipath hash uses for a seed.
    ///
    /// Mirrors include/net/ip_fib.h `fib_multipath_hash_construct_key` (Linux 6.18): both halves
    /// are the 32-bit seed repeated, `(seed << 32) | seed`.
    pub const fn from_multipath_seed(seed: u32) -> Self {
        let half = ((seed as u64) << 32) | seed as u64;
        Self { k0: half, k1: half }
    }

    /// A key from its 16-byte little-endian form (as the SipHash reference vectors give it).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&bytes[..8]);
        hi.copy_from_slice(&bytes[8..]);
        Self {
            k0: u64::from_le_bytes(lo),
            k1: u64::from_le_bytes(hi),
        }
    }
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[inline(always)]
fn init(key: SipKey) -> [u64; 4] {
    [
        0x736f_6d65_7073_6575 ^ key.k0,
        0x646f_7261_6e64_6f6d ^ key.k1,
        0x6c79_6765_6e65_7261 ^ key.k0,
        0x7465_6462_7974_6573 ^ key.k1,
    ]
}

#[inline(always)]
fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sipround(v);
    sipround(v);
    v[0] ^= m;
}

#[inline(always)]
fn finish(v: &mut [u64; 4], b: u64) -> u64 {
    compress(v, b);
    v[2] ^= 0xff;
    sipround(v);
    sipround(v);
    sipround(v);
    sipround(v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-2-4 of a message made of whole little-endian 64-bit words (`8 * words.len()` bytes).
///
/// Mirrors lib/siphash.c `__siphash_aligned` (Linux 6.18) for inputs whose length is a multiple
/// of 8: the final block carries only the length in its top byte.
#[inline]
pub fn siphash24_words(words: &[u64], key: SipKey) -> u64 {
    let mut v = init(key);
    for &m in words {
        compress(&mut v, m);
    }
    let len = (words.len() as u64).wrapping_mul(8);
    finish(&mut v, len << 56)
}

/// The SipHash-2-4 state after absorbing some whole 64-bit words, to resume from.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SipState {
    v: [u64; 4],
    words: u64,
}

impl SipState {
    /// The initial state for a key.
    #[inline]
    pub fn new(key: SipKey) -> Self {
        Self {
            v: init(key),
            words: 0,
        }
    }

    /// Absorbs whole little-endian words.
    #[inline]
    pub fn absorb(mut self, words: &[u64]) -> Self {
        for &m in words {
            compress(&mut self.v, m);
        }
        self.words += words.len() as u64;
        self
    }

    /// Absorbs the last words and returns the hash of the whole message (its length is a
    /// multiple of 8). Equal to [`siphash24_words`] of all the words absorbed.
    #[inline]
    pub fn finish(self, words: &[u64]) -> u64 {
        let mut s = self.absorb(words);
        let len = s.words.wrapping_mul(8);
        finish(&mut s.v, len << 56)
    }
}

/// SipHash-2-4 of any byte string (the reference algorithm of Aumasson and Bernstein, which
/// lib/siphash.c implements).
pub fn siphash24(data: &[u8], key: SipKey) -> u64 {
    let mut v = init(key);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        compress(&mut v, u64::from_le_bytes(w));
    }
    let mut b = (data.len() as u64) << 56;
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        b |= u64::from(byte) << (8 * i);
    }
    finish(&mut v, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;

    fn reference_key() -> SipKey {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        SipKey::from_bytes(k)
    }

    /// The first vectors of the SipHash paper (appendix A / `vectors.h`, key 00..0f, message
    /// 00..len-1), also in the kernel's lib/siphash_kunit.c `test_vectors`.
    #[test]
    fn reference_vectors() {
        let expected: [u64; 9] = [
            0x726f_db47_dd0e_0e31,
            0x74f8_39c5_93dc_67fd,
            0x0d6c_8009_d9a9_4f5a,
            0x8567_6696_d7fb_7e2d,
            0xcf27_94e0_2771_87b7,
            0x1876_5564_cd99_a68d,
            0xcbc9_466e_58fe_e3ce,
            0xab02_00f5_8b01_d137,
            0x93f5_f579_9a93_2462,
        ];
        let msg: Vec<u8> = (0u8..64).collect();
        for (len, &want) in expected.iter().enumerate() {
            assert_eq!(
                siphash24(&msg[..len], reference_key()),
                want,
                "length {len}"
            );
        }
        // The paper's worked example: 15-byte message.
        assert_eq!(
            siphash24(&msg[..15], reference_key()),
            0xa129_ca61_49be_45e5
        );
    }

    #[test]
    fn word_form_matches_byte_form_and_siphasher() {
        let key = SipKey::from_multipath_seed(0x1234_5678);
        for n in 0..12usize {
            let words: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead)
                .collect();
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let a = siphash24_words(&words, key);
            assert_eq!(a, siphash24(&bytes, key));
            let mut h = siphasher::sip::SipHasher24::new_with_keys(key.k0, key.k1);
            h.write(&bytes);
            assert_eq!(a, h.finish(), "{n} words");
            let split = n / 2;
            let resumed = SipState::new(key)
                .absorb(&words[..split])
                .finish(&words[split..]);
            assert_eq!(a, resumed, "{n} words resumed after {split}");
        }
    }

    #[test]
    fn seed_key_repeats_the_seed() {
        let k = SipKey::from_multipath_seed(0xdead_beef);
        assert_eq!(k.k0, 0xdead_beef_dead_beef);
        assert_eq!(k.k1, k.k0);
    }
}
