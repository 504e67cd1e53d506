//! The Internet checksum (RFC 1071), with the TCP/UDP/ICMPv6 pseudo-headers (RFC 9293 §3.1,
//! RFC 768, RFC 8200 §8.1).
//!
//! Summing is done over 16-bit big-endian words into a 64-bit accumulator (the fold happens
//! once at the end), which the compiler vectorises; results are checked against `pnet_packet`'s
//! reference implementation in the tests.

use std::net::IpAddr;

use crate::error::{Result, WireError};

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), not yet folded.
///
/// Words are added 32 bits at a time: since 2^16 ≡ 1 (mod 2^16 − 1), the big-endian 32-bit
/// word `hi·2^16 + lo` folds to the same one's-complement sum as `hi + lo`.
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut quads = data.chunks_exact(4);
    for c in &mut quads {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    match *quads.remainder() {
        [a, b, c] => acc + u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc + u64::from(u16::from_be_bytes([a, b])),
        [a] => acc + (u64::from(a) << 8),
        _ => acc,
    }
}

/// Folds a sum to 16 bits and complements it: the checksum field value.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// Folds a sum to 16 bits with end-around carries, in four fixed steps (no loop): 64 → 33
/// → 18 → 17 → 16 bits. Each step keeps the value modulo 2^16 − 1 and never turns a
/// non-zero value into zero, so the result is the one a fold-until-it-fits loop gives.
fn fold(acc: u64) -> u16 {
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// The checksum of an IPv4 header (`header.len()` = IHL × 4) with its checksum field (bytes
/// 10–11) taken as zero. The common 20-byte header is summed in five unrolled 32-bit words.
pub fn ipv4_header(header: &[u8]) -> u16 {
    if let [
        a0,
        a1,
        a2,
        a3,
        b0,
        b1,
        b2,
        b3,
        ttl,
        proto,
        _,
        _,
        c0,
        c1,
        c2,
        c3,
        d0,
        d1,
        d2,
        d3,
    ] = *header
    {
        let w = |a: u8, b: u8, c: u8, d: u8| u64::from(u32::from_be_bytes([a, b, c, d]));
        // The checksum field (bytes 10-11) counts as zero.
        let s = w(a0, a1, a2, a3)
            + w(b0, b1, b2, b3)
            + w(ttl, proto, 0, 0)
            + w(c0, c1, c2, c3)
            + w(d0, d1, d2, d3);
        finish(s)
    } else {
        with_field_zero(header, 10)
    }
}

/// The checksum of `data` with the 16-bit field at byte offset `field` (even) taken as zero:
/// the field's word is subtracted from the whole sum (it was added once, so no borrow).
pub fn with_field_zero(data: &[u8], field: usize) -> u16 {
    finish(sum(data) - field_word(data, field))
}

/// Exactly what [`sum`] added for the 16-bit word at the even byte offset `field`, so that
/// subtracting it leaves the sum of everything else (zero when out of range). In the 32-bit
/// part a word at a multiple of 4 was added shifted left by 16.
fn field_word(data: &[u8], field: usize) -> u64 {
    let quads_end = data.len() & !3;
    let word = match (data.get(field), data.get(field + 1)) {
        (Some(&a), Some(&b)) => u64::from(u16::from_be_bytes([a, b])),
        (Some(&a), None) => u64::from(a) << 8,
        _ => 0,
    };
    if field < quads_end && field.is_multiple_of(4) {
        word << 16
    } else {
        word
    }
}

/// Sum of the pseudo-header of `src`, `dst`, protocol `proto` and upper-layer length `len`.
///
/// # Errors
/// [`WireError::MixedFamilies`] when the addresses differ in family.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Result<u64> {
    // The addresses as big-endian 32-bit words, as [`sum`] adds them.
    let words = |a: u128| {
        u64::from(a as u32)
            + u64::from((a >> 32) as u32)
            + u64::from((a >> 64) as u32)
            + u64::from((a >> 96) as u32)
    };
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => u64::from(u32::from(s)) + u64::from(u32::from(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => words(u128::from(s)) + words(u128::from(d)),
        _ => return Err(WireError::MixedFamilies),
    };
    Ok(addrs + u64::from(proto) + len as u64)
}

/// The TCP/UDP/ICMPv6 checksum of `segment`, whose checksum field is at byte `field`, over
/// the pseudo-header of `src`, `dst` and `proto`.
///
/// # Errors
/// [`WireError::MixedFamilies`] when the addresses differ in family.
pub fn transport(segment: &[u8], field: usize, src: IpAddr, dst: IpAddr, proto: u8) -> Result<u16> {
    let end = (field + 2).min(segment.len());
    let body = sum_folded(&segment[..field.min(segment.len())]) + sum_folded(&segment[end..]);
    // The pseudo-header sum is never zero (it counts the protocol), so any sum congruent to
    // the body's gives the same folded result.
    Ok(finish(
        body + pseudo_header(src, dst, proto, segment.len())?,
    ))
}

/// The one's-complement sum of a run of bytes (RFC 1071), folded to 16 bits: what a
/// checksum-offloading NIC hands the stack with a received packet (Linux's
/// `CHECKSUM_COMPLETE`, `skb->csum`).
///
/// Sums of consecutive runs add up to the sum of the runs back to back
/// ([`BytesSum::then`]), so a relay that verified a segment can checksum the segment that
/// carries the same bytes on without reading them again ([`transport_split`]). Only the
/// value modulo 2^16 − 1 matters: a sum is only ever added to a pseudo-header, which is
/// never zero.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct BytesSum(u16);

impl BytesSum {
    /// The sum of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(sum_folded(data) as u16)
    }

    /// The sum of the run this sum covers (`len` bytes) followed by the run `next` covers.
    /// After an odd number of bytes the next run's words straddle byte pairs: its sum is
    /// byte-swapped (× 2^8 modulo 2^16 − 1, RFC 1071 §2(B)).
    pub fn then(self, len: usize, next: Self) -> Self {
        let n = if len % 2 == 1 {
            next.0.swap_bytes()
        } else {
            next.0
        };
        let s = u32::from(self.0) + u32::from(n);
        Self(((s & 0xffff) + (s >> 16)) as u16)
    }

    /// The sum's value, to add to others before [`finish`].
    pub(crate) fn value(self) -> u64 {
        u64::from(self.0)
    }

    /// Whether two sums are congruent modulo 2^16 − 1 (0 and 0xffff are the same sum).
    pub fn same_as(self, other: Self) -> bool {
        let norm = |v: u16| if v == 0xffff { 0 } else { v };
        norm(self.0) == norm(other.0)
    }
}

/// The transport checksum of a segment given as its first part `head` (the header; an
/// even number of bytes, with the checksum field at byte `field`) and the sum of the rest
/// (`payload_len` bytes summing to `payload`): equal to [`transport`] over the whole
/// segment, without reading the payload.
///
/// # Errors
/// [`WireError::MixedFamilies`] when the addresses differ in family.
pub fn transport_split(
    head: &[u8],
    field: usize,
    payload_len: usize,
    payload: BytesSum,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
) -> Result<u16> {
    Ok(transport_split_pseudo(
        head,
        field,
        payload,
        pseudo_header(src, dst, proto, head.len() + payload_len)?,
    ))
}

/// [`transport_split`] with the pseudo-header's sum given (`pseudo`, as
/// [`pseudo_header`] makes it, or [`crate::view::IpView::pseudo_header_sum`] reads it from
/// a packet).
#[inline]
pub fn transport_split_pseudo(head: &[u8], field: usize, payload: BytesSum, pseudo: u64) -> u16 {
    debug_assert!(
        head.len().is_multiple_of(2),
        "the payload starts on an even byte"
    );
    // A header is short: summed as big-endian 32-bit words, the checksum field taken out;
    // the common one, a TCP header without options, in five straight words.
    let head_sum = match <&[u8; 20]>::try_from(head) {
        Ok(h) if field == 16 => {
            let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
            w(0) + w(4) + w(8) + w(12) + u64::from(u16::from_be_bytes([h[18], h[19]]))
        }
        _ => sum(head) - field_word(head, field),
    };
    finish(head_sum + u64::from(payload.0) + pseudo)
}

/// The one's-complement sum of `data` as big-endian 16-bit words (as [`sum`]), folded to 16
/// bits: zero only when every byte is zero, congruent to [`sum`] modulo 2^16 − 1 otherwise.
///
/// RFC 1071 §2(B): the sum is byte-order independent. The words are added in the machine's
/// little-endian order, 64 bits at a time with no byte swap, and the folded sum is swapped
/// once at the end: swapping the bytes of a 16-bit word multiplies it by 256 modulo
/// 2^16 − 1, so the swapped little-endian sum is the big-endian one.
fn sum_folded(data: &[u8]) -> u64 {
    // Four independent accumulators over 32-byte blocks (one dependency chain per lane),
    // then 8 bytes at a time.
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (lane, c) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            // Two 32-bit halves: at most 2^33 per step, no overflow below 2^30 steps.
            *lane += (w & 0xffff_ffff) + (w >> 32);
        }
    }
    let mut acc: u64 = lanes.iter().sum();
    let mut octets = blocks.remainder().chunks_exact(8);
    for c in &mut octets {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    for pair in octets.remainder().chunks(2) {
        acc += match *pair {
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a] => u64::from(a),
            _ => 0,
        };
    }
    u64::from(fold(acc).swap_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ip::IpNextHeaderProtocol;
    use proptest::prelude::*;

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// Differential test against pnet_packet's implementation.
        #[test]
        fn matches_pnet(data in proptest::collection::vec(any::<u8>(), 0..3000), field in 0usize..40,
                        s in any::<u32>(), d in any::<u32>(), s6 in any::<u128>(), d6 in any::<u128>()) {
            let field = (field * 2).min(data.len().saturating_sub(2) & !1);
            if data.len() >= 2 {
                prop_assert_eq!(with_field_zero(&data, field), pnet_packet::util::checksum(&data, field / 2));
                let (s4, d4) = (s.into(), d.into());
                prop_assert_eq!(
                    transport(&data, field, IpAddr::V4(s4), IpAddr::V4(d4), 6).unwrap(),
                    pnet_packet::util::ipv4_checksum(&data, field / 2, &[], &s4, &d4, IpNextHeaderProtocol(6))
                );
                let (s6, d6) = (s6.into(), d6.into());
                prop_assert_eq!(
                    transport(&data, field, IpAddr::V6(s6), IpAddr::V6(d6), 17).unwrap(),
                    pnet_packet::util::ipv6_checksum(&data, field / 2, &[], &s6, &d6, IpNextHeaderProtocol(17))
                );
            }
        }
    }

    #[test]
    fn zero_data_with_a_field_matches_pnet() {
        // The sum of the other words is exactly zero: the fold must give 0xffff both ways.
        for len in [4usize, 6, 8, 20, 21, 22, 23] {
            for field in (0..len.saturating_sub(1)).step_by(2) {
                let mut d = vec![0u8; len];
                d[field] = 0x12;
                d[field + 1] = 0x34;
                assert_eq!(
                    with_field_zero(&d, field),
                    pnet_packet::util::checksum(&d, field / 2),
                    "len {len} field {field}"
                );
            }
        }
    }

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        #[test]
        fn ipv4_header_fast_path_matches(h in proptest::collection::vec(any::<u8>(), 20..=60)) {
            let h = &h[..h.len() & !3];
            prop_assert_eq!(ipv4_header(h), pnet_packet::util::checksum(h, 5));
        }
    }

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// The folded little-endian sum agrees with the big-endian one wherever a non-zero
        /// pseudo-header is added (as in every transport checksum), and is zero exactly
        /// for all-zero data.
        #[test]
        fn folded_sum_matches_the_big_endian_sum(
            data in proptest::collection::vec(any::<u8>(), 0..200), zeros in any::<bool>(), extra in 1u64..200_000
        ) {
            let data = if zeros { vec![0; data.len()] } else { data };
            prop_assert_eq!(finish(sum_folded(&data) + extra), finish(sum(&data) + extra));
            prop_assert_eq!(sum_folded(&data) == 0, sum(&data) == 0);
        }
    }

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// Sums of runs put back to back (odd lengths included) are the sum of the whole, and
        /// a checksum from a header and its payload's sum is the checksum of the segment.
        #[test]
        fn sums_of_runs_add_up_and_split_checksums_match(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            head in 0usize..30, zeros in any::<bool>(), s6 in any::<u128>(), d6 in any::<u128>()
        ) {
            let data = if zeros { vec![0; data.len()] } else { data };
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            at.sort_unstable();
            let (mut acc, mut len, mut prev) = (BytesSum::default(), 0, 0);
            for &c in at.iter().chain([data.len()].iter()) {
                acc = acc.then(len, BytesSum::of(&data[prev..c]));
                len += c - prev;
                prev = c;
            }
            prop_assert!(acc.same_as(BytesSum::of(&data)));
            let head = (head * 2).min(data.len() & !1);
            if head >= 18 {
                let (s, d) = (IpAddr::V6(s6.into()), IpAddr::V6(d6.into()));
                let split = transport_split(&data[..head], 16, data.len() - head, BytesSum::of(&data[head..]), s, d, 6).unwrap();
                prop_assert_eq!(split, transport(&data, 16, s, d, 6).unwrap());
            }
        }
    }

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// The fixed four-step fold gives what folding until the value fits gives.
        #[test]
        fn fixed_fold_equals_the_loop(x in any::<u64>(), small in 0u64..0x3_0000) {
            let looped = |mut a: u64| {
                while a >> 16 != 0 {
                    a = (a & 0xffff) + (a >> 16);
                }
                a as u16
            };
            for v in [x, x >> 1, small, 0, 0xffff, 0x1_0000, 0x1_fffe, u64::MAX] {
                prop_assert_eq!(fold(v), looped(v), "{:#x}", v);
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (folded), checksum 0x220d.
        assert_eq!(
            finish(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            !0xddf2
        );
    }
}
