//! TCP header ([`TcpRepr`]): sequence numbers with wrap-around order, flags, window and the SYN
//! options Linux sends (MSS, window scale, SACK permitted).
//!
//! Panic contract: [`TcpRepr::parse`] never panics on any bytes; option parsing stops at a
//! malformed option and reports it.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, BitOr, Sub};
use std::net::IpAddr;

use crate::checksum::{self, BytesSum};
use crate::error::{Layer, Result, WireError};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// A TCP sequence number: 32-bit, compared with wrap-around (RFC 9293 §3.4; "serial number
/// arithmetic"). `a < b` means `b` is ahead of `a` by less than 2^31.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct TcpSeq(pub u32);

impl TcpSeq {
    /// Signed distance from `other` to `self` (positive if `self` is ahead).
    pub const fn diff(self, other: Self) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl PartialOrd for TcpSeq {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

impl Add<u32> for TcpSeq {
    type Output = Self;
    fn add(self, n: u32) -> Self {
        Self(self.0.wrapping_add(n))
    }
}

impl Sub<u32> for TcpSeq {
    type Output = Self;
    fn sub(self, n: u32) -> Self {
        Self(self.0.wrapping_sub(n))
    }
}

impl fmt::Display for TcpSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// TCP flags (the low 8 bits of the flags field: CWR ECE URG ACK PSH RST SYN FIN).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: Self = Self(0x01);
    /// SYN.
    pub const SYN: Self = Self(0x02);
    /// RST.
    pub const RST: Self = Self(0x04);
    /// PSH.
    pub const PSH: Self = Self(0x08);
    /// ACK.
    pub const ACK: Self = Self(0x10);
    /// URG.
    pub const URG: Self = Self(0x20);
    /// ECE.
    pub const ECE: Self = Self(0x40);
    /// CWR.
    pub const CWR: Self = Self(0x80);

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    /// Whether ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    /// Whether RST is set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }

    /// Whether FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
}

impl BitOr for TcpFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for TcpFlags {
    /// tcpdump's notation: `[S.]` for SYN+ACK, `[R]`, `[F.]`, `[P.]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (flag, c) in [
            (Self::SYN, 'S'),
            (Self::FIN, 'F'),
            (Self::PSH, 'P'),
            (Self::RST, 'R'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
            (Self::ACK, '.'),
        ] {
            if self.contains(flag) {
                s.push(c);
            }
        }
        if s.is_empty() {
            s.push_str("none");
        }
        write!(f, "[{s}]")
    }
}

/// The fields of a TCP header that tierlab models.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct TcpRepr {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: TcpSeq,
    /// Acknowledgement number (meaningful when ACK is set).
    pub ack: TcpSeq,
    /// Flags.
    pub flags: TcpFlags,
    /// Window (unscaled, as on the wire).
    pub window: u16,
    /// Maximum segment size option (SYN only).
    pub mss: Option<u16>,
    /// Window scale option (SYN only).
    pub window_scale: Option<u8>,
    /// SACK-permitted option (SYN only).
    pub sack_permitted: bool,
}

impl TcpRepr {
    /// Length of the options as emitted (padded to 4 bytes).
    pub fn options_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        // SACK-permitted (2) and window scale (3) are laid out as Linux does without
        // timestamps: NOP NOP SACKOK, NOP WS.
        if self.sack_permitted {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4;
        }
        n
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// Parses a TCP header at the start of `buf` (the whole TCP segment). With `verify` set to
    /// the packet's addresses, also checks the checksum over the pseudo-header. Returns the header
    /// and its length (data offset × 4).
    ///
    /// # Errors
    /// Truncated header, data offset below 5 or beyond the segment, malformed option, bad
    /// checksum.
    pub fn parse(
        buf: &[u8],
        offset: usize,
        verify: Option<(IpAddr, IpAddr)>,
    ) -> Result<(Self, usize)> {
        let (repr, hlen, _) = Self::parse_inner(buf, offset, verify)?;
        Ok((repr, hlen))
    }

    /// Like [`TcpRepr::parse`] with the checksum always verified over the pseudo-header of
    /// `src` and `dst`; also returns the sum of the payload (`buf[hlen..]`), which the
    /// verification computed anyway, for a relay to reuse when it sends the same bytes on
    /// ([`PacketBuilder::tcp_segment_into`], [`PacketBuilder::tcp_into_summed`]).
    ///
    /// # Errors
    /// As [`TcpRepr::parse`].
    ///
    /// [`PacketBuilder::tcp_segment_into`]: crate::PacketBuilder::tcp_segment_into
    /// [`PacketBuilder::tcp_into_summed`]: crate::PacketBuilder::tcp_into_summed
    #[inline(always)]
    pub fn parse_summed(
        buf: &[u8],
        offset: usize,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(Self, usize, BytesSum)> {
        let (repr, hlen, sum) = Self::parse_inner(buf, offset, Some((src, dst)))?;
        Ok((repr, hlen, sum.unwrap_or_default()))
    }

    #[inline(always)]
    fn parse_inner(
        buf: &[u8],
        offset: usize,
        verify: Option<(IpAddr, IpAddr)>,
    ) -> Result<(Self, usize, Option<BytesSum>)> {
        // One place checks the length fields: the view.
        let v = crate::view::TcpView::new_checked(buf, offset)?;
        let hlen = v.header_len();
        let mut payload_sum = None;
        if let Some((src, dst)) = verify {
            // Header and payload summed apart (the header is a whole number of 32-bit
            // words), so the payload's sum is at hand for the caller.
            let sum = BytesSum::of(&buf[hlen..]);
            let expected =
                checksum::transport_split(&buf[..hlen], 16, buf.len() - hlen, sum, src, dst, 6)?;
            let found = u16::from_be_bytes([buf[16], buf[17]]);
            if expected != found {
                return Err(WireError::BadChecksum {
                    layer: Layer::Tcp,
                    offset,
                    found,
                    expected,
                });
            }
            payload_sum = Some(sum);
        }
        let repr = Self {
            sport: v.sport(),
            dport: v.dport(),
            seq: v.seq(),
            ack: v.ack(),
            flags: v.flags(),
            window: v.window(),
            ..Self::default()
        };
        // Options are parsed out of line, the header taken and given back by value: a
        // header written field by field through a reference and then moved whole made the
        // move's wide loads wait on the narrow stores (a failed store forward per segment).
        let repr = if hlen > HEADER_LEN {
            with_options(repr, &buf[HEADER_LEN..hlen], offset + HEADER_LEN)?
        } else {
            repr
        };
        Ok((repr, hlen, payload_sum))
    }

    /// Writes the header and `payload` into `buf` (which must be exactly
    /// `header_len() + payload.len()` bytes or longer) and fills in the checksum for the given
    /// addresses.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer or mixed address families.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8], src: IpAddr, dst: IpAddr) -> Result<()> {
        let hlen = self.header_len();
        let len = hlen + payload.len();
        if buf.len() < len {
            return Err(WireError::Build("buffer shorter than the TCP segment"));
        }
        let seg = &mut buf[..len];
        seg[hlen..].copy_from_slice(payload);
        self.emit_around_payload(seg, src, dst)
    }

    /// Like [`TcpRepr::emit`] for a segment whose payload is already in place: `seg` is the
    /// whole segment, `header_len()` bytes for the header (whatever they hold: every one is
    /// written) and then the payload.
    ///
    /// # Errors
    /// [`WireError::Build`] when `seg` is shorter than the header, or mixed address
    /// families.
    pub fn emit_around_payload(&self, seg: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<()> {
        self.emit_around_payload_summed(seg, None, src, dst)
    }

    /// Writes the header (checksum zero) at the start of `seg`; returns its length.
    ///
    /// # Errors
    /// [`WireError::Build`] when `seg` is shorter than the header.
    pub(crate) fn write_header(&self, seg: &mut [u8]) -> Result<usize> {
        let hlen = self.header_len();
        if seg.len() < hlen {
            return Err(WireError::Build("buffer shorter than the TCP header"));
        }
        // Written in place (RFC 9293 §3.1): ports, sequence and acknowledgement numbers, data
        // offset (reserved bits zero), flags, window, checksum (zero until computed), urgent
        // pointer.
        seg[0..2].copy_from_slice(&self.sport.to_be_bytes());
        seg[2..4].copy_from_slice(&self.dport.to_be_bytes());
        seg[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        seg[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        seg[12] = ((hlen / 4) as u8) << 4;
        seg[13] = self.flags.0;
        seg[14..16].copy_from_slice(&self.window.to_be_bytes());
        seg[16..20].copy_from_slice(&[0, 0, 0, 0]);
        let mut o = HEADER_LEN;
        if let Some(mss) = self.mss {
            seg[o..o + 4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            o += 4;
        }
        if self.sack_permitted {
            seg[o..o + 4].copy_from_slice(&[1, 1, 4, 2]);
            o += 4;
        }
        if let Some(ws) = self.window_scale {
            seg[o..o + 4].copy_from_slice(&[1, 3, 3, ws]);
            o += 4;
        }
        debug_assert_eq!(o, hlen);
        Ok(hlen)
    }

    /// Like [`TcpRepr::emit_around_payload`]; with `payload_sum` (the sum of the payload
    /// bytes in `seg`, e.g. from [`TcpRepr::parse_summed`] of the segment that brought them)
    /// the checksum is made from the header and that sum, without reading the payload.
    ///
    /// # Errors
    /// As [`TcpRepr::emit_around_payload`].
    pub fn emit_around_payload_summed(
        &self,
        seg: &mut [u8],
        payload_sum: Option<BytesSum>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<()> {
        let hlen = self.write_header(seg)?;
        let c = match payload_sum {
            Some(sum) => {
                debug_assert!(
                    sum.same_as(BytesSum::of(&seg[hlen..])),
                    "the payload sum given is the payload's"
                );
                let (head, rest) = seg.split_at(hlen);
                checksum::transport_split(head, 16, rest.len(), sum, src, dst, 6)?
            }
            None => transport_checksum(seg, 16, src, dst, 6)?,
        };
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[inline(never)]
fn with_options(mut repr: TcpRepr, opts: &[u8], offset: usize) -> Result<TcpRepr> {
    parse_options(opts, offset, &mut repr)?;
    Ok(repr)
}

fn parse_options(opts: &[u8], offset: usize, repr: &mut TcpRepr) -> Result<()> {
    // Fast path: the layout tierlab emits (MSS, NOP NOP SACKOK, NOP WS), the common SYN.
    if let [2, 4, m0, m1, 1, 1, 4, 2, 1, 3, 3, ws] = *opts {
        repr.mss = Some(u16::from_be_bytes([m0, m1]));
        repr.sack_permitted = true;
        repr.window_scale = Some(ws);
        return Ok(());
    }
    let bad = |at: usize| WireError::BadHeaderLength {
        layer: Layer::Tcp,
        offset: offset + at,
        value: opts.get(at + 1).copied().unwrap_or(0).into(),
        why: "malformed TCP option length",
    };
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let l = usize::from(*opts.get(i + 1).ok_or_else(|| bad(i))?);
                if l < 2 || i + l > opts.len() {
                    return Err(bad(i));
                }
                let body = &opts[i + 2..i + l];
                match (kind, body.len()) {
                    (2, 2) => repr.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                    (3, 1) => repr.window_scale = Some(body[0]),
                    (4, 0) => repr.sack_permitted = true,
                    (2..=4, _) => return Err(bad(i)),
                    _ => {} // other options (timestamps, SACK blocks...) are skipped
                }
                i += l;
            }
        }
    }
    Ok(())
}

/// The TCP/UDP checksum of `segment` (whose checksum field is at byte `skip_at`) over the
/// pseudo-header of `src`, `dst` and protocol `proto` (RFC 9293 §3.1, RFC 8200 §8.1).
///
/// # Errors
/// [`WireError::MixedFamilies`] when `src` and `dst` differ in family.
pub fn transport_checksum(
    segment: &[u8],
    skip_at: usize,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
) -> Result<u16> {
    checksum::transport(segment, skip_at, src, dst, proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wraps() {
        assert!(TcpSeq(u32::MAX) < TcpSeq(1));
        assert!(TcpSeq(5) > TcpSeq(u32::MAX - 5));
        assert_eq!((TcpSeq(u32::MAX) + 2).0, 1);
        assert_eq!(TcpSeq(1).diff(TcpSeq(u32::MAX)), 2);
    }

    #[test]
    fn syn_round_trip_with_options() {
        let src: IpAddr = "203.0.113.7".parse().unwrap();
        let dst: IpAddr = "198.51.100.1".parse().unwrap();
        let r = TcpRepr {
            sport: 40000,
            dport: 80,
            seq: TcpSeq(12345),
            flags: TcpFlags::SYN,
            window: 64240,
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            ..TcpRepr::default()
        };
        let mut b = vec![0; r.header_len()];
        r.emit(&mut b, &[], src, dst).unwrap();
        assert_eq!(b.len(), 32);
        let (p, hlen) = TcpRepr::parse(&b, 20, Some((src, dst))).unwrap();
        assert_eq!((p, hlen), (r, 32));
        b[4] ^= 1;
        assert!(matches!(
            TcpRepr::parse(&b, 20, Some((src, dst))),
            Err(WireError::BadChecksum { .. })
        ));
    }

    #[test]
    fn malformed_option_is_an_error() {
        let mut b = vec![0u8; 24];
        b[12] = 6 << 4;
        b[20] = 2; // MSS kind
        b[21] = 9; // length past the header
        assert!(matches!(
            TcpRepr::parse(&b, 0, None),
            Err(WireError::BadHeaderLength { .. })
        ));
        b[21] = 0;
        assert!(TcpRepr::parse(&b, 0, None).is_err());
    }

    #[test]
    fn flags_display_like_tcpdump() {
        assert_eq!((TcpFlags::SYN | TcpFlags::ACK).to_string(), "[S.]");
        assert_eq!(TcpFlags::RST.to_string(), "[R]");
    }
}
