//! IPv4 header: a representation ([`Ipv4Repr`]) parsed from and emitted into bytes through
//! `pnet_packet` views, with the length checks pnet does not do (IHL, total length).
//!
//! Panic contract: [`Ipv4Repr::parse`] never panics, whatever the bytes; [`Ipv4Repr::emit`] never
//! panics on a buffer of at least [`Ipv4Repr::header_len`] bytes (it returns an error otherwise).

use std::net::Ipv4Addr;

use crate::error::{Layer, Result, WireError, need};
use crate::proto::IpProto;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Largest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Linux's default TTL (`net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// IPv4 options as raw bytes (up to 40, a multiple of 4). Kept inline so a header is `Copy`.
#[derive(Clone, Copy, Eq, Hash, PartialEq)]
pub struct Ipv4Options {
    len: u8,
    bytes: [u8; 40],
}

impl Ipv4Options {
    /// No options.
    pub const NONE: Self = Self {
        len: 0,
        bytes: [0; 40],
    };

    /// Options from raw bytes.
    ///
    /// # Errors
    /// [`WireError::Build`] when longer than 40 bytes or not a multiple of 4.
    pub fn new(raw: &[u8]) -> Result<Self> {
        if raw.len() > 40 || !raw.len().is_multiple_of(4) {
            return Err(WireError::Build(
                "IPv4 options must be a multiple of 4 bytes, at most 40",
            ));
        }
        let mut bytes = [0; 40];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Self {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The option bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no options.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The options a non-first fragment carries, as Linux's `ip_options_fragment` builds them:
    /// options whose "copied" bit (0x80) is clear are overwritten with NOPs, so the header length
    /// stays the same.
    pub fn for_later_fragment(&self) -> Self {
        let mut out = *self;
        let b = &mut out.bytes[..out.len as usize];
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                0 => break,  // end of option list
                1 => i += 1, // NOP
                kind => {
                    let l = b.get(i + 1).copied().unwrap_or(0) as usize;
                    if l < 2 || i + l > b.len() {
                        break; // malformed: leave the rest as is
                    }
                    if kind & 0x80 == 0 {
                        b[i..i + l].fill(1);
                    }
                    i += l;
                }
            }
        }
        out
    }
}

impl core::fmt::Debug for Ipv4Options {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ipv4Options({:02x?})", self.as_bytes())
    }
}

/// The fields of an IPv4 header that tierlab models.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub proto: IpProto,
    /// Time to live.
    pub ttl: u8,
    /// Type of service byte (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment flag.
    pub dont_frag: bool,
    /// More Fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8, below 65,536).
    pub frag_offset: u16,
    /// Options.
    pub options: Ipv4Options,
}

impl Ipv4Repr {
    /// A header with Linux's defaults for a TCP socket: TTL 64, DF set, no options.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProto) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: DEFAULT_TTL,
            tos: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: Ipv4Options::NONE,
        }
    }

    /// Header length in bytes (20 + options).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len()
    }

    /// Whether this header belongs to a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// Parses the header at the start of `buf`. Returns the header and the length of the whole
    /// IPv4 packet (its total length field; bytes after it, such as link padding, are not part
    /// of the packet).
    ///
    /// # Errors
    /// Truncated buffer, version not 4, IHL below 5, total length below the header length or
    /// beyond the buffer, and (when `verify_checksum`) a bad header checksum.
    pub fn parse(buf: &[u8], verify_checksum: bool) -> Result<(Self, usize)> {
        need(buf, 1, Layer::Ipv4, 0, "fixed header")?;
        let version = buf[0] >> 4;
        if version != 4 {
            return Err(WireError::BadVersion {
                offset: 0,
                version,
                expected: "4",
            });
        }
        // One place checks every length field (and the checksum): the view.
        let view = crate::view::IpView::new_checked(buf, verify_checksum)?;
        let (total, hlen) = (view.len(), view.transport_offset());
        // The fixed fields, straight from the bytes (RFC 791 §3.1 layout).
        let h: &[u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().expect("checked by the view");
        let frag = u16::from_be_bytes([h[6], h[7]]);
        let repr = Self {
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            proto: IpProto::from(h[9]),
            ttl: h[8],
            tos: h[1],
            ident: u16::from_be_bytes([h[4], h[5]]),
            dont_frag: frag & 0x4000 != 0,
            more_frags: frag & 0x2000 != 0,
            frag_offset: (frag & 0x1fff).wrapping_mul(8),
            options: if hlen == HEADER_LEN {
                Ipv4Options::NONE
            } else {
                Ipv4Options::new(&buf[HEADER_LEN..hlen])
                    .expect("IHL ≤ 15 bounds the options to 40 bytes, a multiple of 4")
            },
        };
        Ok((repr, total))
    }

    /// Writes the header (with its checksum) into the start of `buf`, for a payload of
    /// `payload_len` bytes.
    ///
    /// # Errors
    /// [`WireError::Build`] when the buffer is too short, the total length exceeds 65,535 or the
    /// fragment offset is not a multiple of 8.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<()> {
        let hlen = self.header_len();
        let total = hlen + payload_len;
        if total > usize::from(u16::MAX) {
            return Err(WireError::Build("IPv4 total length above 65,535"));
        }
        if !self.frag_offset.is_multiple_of(8) {
            return Err(WireError::Build("IPv4 fragment offset not a multiple of 8"));
        }
        if buf.len() < hlen {
            return Err(WireError::Build("buffer shorter than the IPv4 header"));
        }
        // Written field by field in place (RFC 791 §3.1): version and IHL, TOS (DSCP and
        // ECN), total length, identification, flags and fragment offset, TTL, protocol, the
        // checksum (zero until computed), addresses.
        let frag = u16::from(self.dont_frag) << 14
            | u16::from(self.more_frags) << 13
            | ((self.frag_offset / 8) & 0x1fff);
        buf[0] = 0x40 | (hlen / 4) as u8;
        buf[1] = self.tos;
        buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        buf[6..8].copy_from_slice(&frag.to_be_bytes());
        buf[8] = self.ttl;
        buf[9] = self.proto.number();
        buf[10..12].copy_from_slice(&[0, 0]);
        buf[12..16].copy_from_slice(&self.src.octets());
        buf[16..20].copy_from_slice(&self.dst.octets());
        buf[HEADER_LEN..hlen].copy_from_slice(self.options.as_bytes());
        let c = crate::checksum::ipv4_header(&buf[..hlen]);
        buf[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// The Internet checksum (RFC 1071) of `data`, skipping the 16-bit word at byte offset
/// `skip_at` (the checksum field itself) when given.
pub fn internet_checksum(data: &[u8], skip_at: Option<usize>) -> u16 {
    match skip_at {
        Some(at) => crate::checksum::with_field_zero(data, at),
        None => crate::checksum::finish(crate::checksum::sum(data)),
    }
}

/// The payload length pnet's view reports (used by tests to compare with our parse).
#[cfg(test)]
fn view_payload_len(buf: &[u8]) -> Option<usize> {
    use pnet_packet::Packet as _;
    pnet_packet::ipv4::Ipv4Packet::new(buf).map(|v| v.payload().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN's IPv4 header from a Linux host (checksum computed by hand-checked tools).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xcb, 0x00, 0x71,
        0x07, 0xc6, 0x33, 0x64, 0x01,
    ];

    fn fixture() -> Vec<u8> {
        let mut b = HDR.to_vec();
        let c = internet_checksum(&b, None);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b.resize(60, 0);
        b
    }

    #[test]
    fn deconstruct() {
        let (r, total) = Ipv4Repr::parse(&fixture(), true).unwrap();
        assert_eq!(total, 60);
        assert_eq!(r.src, Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(r.dst, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(r.proto, IpProto::Tcp);
        assert_eq!(
            (r.ttl, r.ident, r.dont_frag, r.more_frags),
            (64, 0x1c46, true, false)
        );
        assert_eq!(view_payload_len(&fixture()), Some(40));
    }

    #[test]
    fn emit_reproduces_bytes() {
        let (r, _) = Ipv4Repr::parse(&fixture(), true).unwrap();
        let mut out = vec![0u8; 20];
        r.emit(&mut out, 40).unwrap();
        assert_eq!(out, fixture()[..20]);
    }

    #[test]
    fn rejects_impossible_lengths() {
        let mut b = fixture();
        b[0] = 0x44;
        assert!(matches!(
            Ipv4Repr::parse(&b, false),
            Err(WireError::BadHeaderLength { .. })
        ));
        let mut b = fixture();
        b[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert!(matches!(
            Ipv4Repr::parse(&b, false),
            Err(WireError::Truncated { needed: 100, .. })
        ));
        let mut b = fixture();
        b[0] = 0x65;
        assert!(matches!(
            Ipv4Repr::parse(&b, false),
            Err(WireError::BadVersion { version: 6, .. })
        ));
        let mut b = fixture();
        b[8] = 1;
        assert!(matches!(
            Ipv4Repr::parse(&b, true),
            Err(WireError::BadChecksum { .. })
        ));
        assert!(Ipv4Repr::parse(&b, false).is_ok());
    }

    #[test]
    fn later_fragments_keep_only_copied_options() {
        // Record route (7, not copied) of 8 bytes, then a copied option 0x86 (CIPSO-like) of 4 bytes.
        let raw = [7, 8, 4, 0, 0, 0, 0, 0, 0x86, 4, 1, 2];
        let o = Ipv4Options::new(&raw).unwrap().for_later_fragment();
        assert_eq!(o.as_bytes(), &[1, 1, 1, 1, 1, 1, 1, 1, 0x86, 4, 1, 2]);
    }
}
