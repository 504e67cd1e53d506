//! Bob Jenkins' lookup3 final mix as the kernel uses it (include/linux/jhash.h, Linux 6.18).
//! The forwarding path of policy 3 mixes the outer and inner custom hashes with
//! [`jhash_2words`].

/// `JHASH_INITVAL` in include/linux/jhash.h.
const JHASH_INITVAL: u32 = 0xdead_beef;

/// `__jhash_final(a, b, c)`, returning `c`.
#[inline]
fn final_mix(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// `jhash_2words(a, b, initval)`: `__jhash_nwords(a, b, 0, initval + JHASH_INITVAL + (2 << 2))`.
///
/// Mirrors include/linux/jhash.h `jhash_2words` (Linux 6.18).
#[inline]
pub fn jhash_2words(a: u32, b: u32, initval: u32) -> u32 {
    let iv = initval.wrapping_add(JHASH_INITVAL).wrapping_add(2 << 2);
    final_mix(a.wrapping_add(iv), b.wrapping_add(iv), iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `jhash_2words(a, b, c)` equals lookup3's `hashword` of the two words with the same
    /// initval: both add `len << 2` and the init value, then run `final` once. Check the
    /// reference `hashword` of lookup3.c, written out here independently.
    #[test]
    fn matches_lookup3_hashword() {
        fn rot(x: u32, k: u32) -> u32 {
            x.rotate_left(k)
        }
        fn hashword2(k0: u32, k1: u32, initval: u32) -> u32 {
            let mut a = 0xdead_beef_u32.wrapping_add(2 << 2).wrapping_add(initval);
            let mut b = a;
            let mut c = a;
            b = b.wrapping_add(k1);
            a = a.wrapping_add(k0);
            c ^= b;
            c = c.wrapping_sub(rot(b, 14));
            a ^= c;
            a = a.wrapping_sub(rot(c, 11));
            b ^= a;
            b = b.wrapping_sub(rot(a, 25));
            c ^= b;
            c = c.wrapping_sub(rot(b, 16));
            a ^= c;
            a = a.wrapping_sub(rot(c, 4));
            b ^= a;
            b = b.wrapping_sub(rot(a, 14));
            c ^= b;
            c.wrapping_sub(rot(b, 24))
        }
        for (a, b, iv) in [
            (0, 0, 0),
            (1, 2, 3),
            (0xffff_ffff, 0x1234_5678, 0),
            (7, 0, 99),
        ] {
            assert_eq!(jhash_2words(a, b, iv), hashword2(a, b, iv));
        }
        assert_ne!(jhash_2words(1, 0, 0), jhash_2words(0, 1, 0));
    }
}
