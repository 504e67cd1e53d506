//! Zero-copy, checked views over packet bytes: the fast path.
//!
//! The two levels of smoltcp's `wire`: these *views* validate every length field once
//! ([`IpView::new_checked`], [`TcpView::new_checked`]) and then read fields straight from the
//! bytes on demand; the `Repr` types ([`crate::Ipv4Repr`], [`crate::TcpRepr`], [`crate::Packet`])
//! copy every field out. Tiers that look at a few fields of every packet (a router hashing the
//! flow, a director looking up its connection table, a tunnel endpoint) use views.
//!
//! Panic contract: `new_checked` never panics on any bytes; once a view exists none of its
//! getters panics (every offset they read was checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{Layer, Result, WireError, need};
use crate::flow::FlowKey;
use crate::icmp::upper_layer_v6;
use crate::proto::IpProto;
use crate::tcp::{TcpFlags, TcpSeq};
use crate::{ipv4, ipv6, tcp};

/// A checked view of an IPv4 or IPv6 packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct IpView<'a> {
    /// The packet, cut to its own length (link padding excluded).
    buf: &'a [u8],
    /// Offset of the upper-layer header (past IPv4 options or IPv6 extension headers).
    l4: u16,
    /// Upper-layer protocol.
    proto: IpProto,
    /// Whether the packet is a fragment other than the first (no transport header).
    later_fragment: bool,
    /// Whether the packet is any fragment.
    fragment: bool,
}

impl<'a> IpView<'a> {
    /// Checks version, header length and total/payload length (and, for IPv4 with
    /// `verify_checksum`, the header checksum), then gives the view.
    ///
    /// # Errors
    /// The [`WireError`] that says what is wrong and where.
    #[inline(always)]
    pub fn new_checked(buf: &'a [u8], verify_checksum: bool) -> Result<Self> {
        match buf.first().map(|b| b >> 4) {
            Some(4) => {
                need(buf, ipv4::HEADER_LEN, Layer::Ipv4, 0, "fixed header")?;
                let hlen = usize::from(buf[0] & 0x0f) * 4;
                if hlen < ipv4::HEADER_LEN {
                    return Err(WireError::BadHeaderLength {
                        layer: Layer::Ipv4,
                        offset: 0,
                        value: hlen / 4,
                        why: "IHL below 5",
                    });
                }
                let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                if total < hlen {
                    return Err(WireError::BadHeaderLength {
                        layer: Layer::Ipv4,
                        offset: 0,
                        value: total,
                        why: "total length below header length",
                    });
                }
                need(buf, total, Layer::Ipv4, 0, "total length field")?;
                if verify_checksum {
                    let expected = checksum::ipv4_header(&buf[..hlen]);
                    let found = u16::from_be_bytes([buf[10], buf[11]]);
                    if expected != found {
                        return Err(WireError::BadChecksum {
                            layer: Layer::Ipv4,
                            offset: 0,
                            found,
                            expected,
                        });
                    }
                }
                let frag = u16::from_be_bytes([buf[6], buf[7]]);
                Ok(Self {
                    buf: &buf[..total],
                    l4: hlen as u16,
                    proto: IpProto::from(buf[9]),
                    later_fragment: frag & 0x1fff != 0,
                    fragment: frag & 0x3fff != 0,
                })
            }
            Some(6) => {
                need(buf, ipv6::HEADER_LEN, Layer::Ipv6, 0, "fixed header")?;
                let plen = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                if plen == 0 && buf[6] == 0 {
                    return Err(WireError::Unsupported {
                        layer: Layer::Ipv6,
                        what: "jumbogram (payload length 0 with hop-by-hop options)",
                        value: 0,
                    });
                }
                let total = ipv6::HEADER_LEN + plen;
                need(buf, total, Layer::Ipv6, 0, "payload length field")?;
                let next = IpProto::from(buf[6]);
                let (proto, l4, frag) =
                    if matches!(next, IpProto::Unknown(0 | 43 | 60) | IpProto::Ipv6Frag) {
                        let ul = upper_layer_v6(buf, total)?;
                        (ul.proto, ul.offset, ul.frag)
                    } else {
                        (next, ipv6::HEADER_LEN, None)
                    };
                Ok(Self {
                    buf: &buf[..total],
                    l4: l4 as u16,
                    proto,
                    later_fragment: frag.is_some_and(|(o, _, _)| o != 0),
                    fragment: frag.is_some(),
                })
            }
            Some(version) => Err(WireError::BadVersion {
                offset: 0,
                version,
                expected: "4 or 6",
            }),
            None => Err(WireError::Truncated {
                layer: Layer::Ipv4,
                offset: 0,
                needed: 1,
                available: 0,
                what: "IP version",
            }),
        }
    }

    /// Whether this is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.buf[0] >> 4 == 4
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        let b = self.buf;
        if self.is_ipv4() {
            IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&b[8..24]).expect("checked length"),
            ))
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        let b = self.buf;
        if self.is_ipv4() {
            IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19]))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&b[24..40]).expect("checked length"),
            ))
        }
    }

    /// The sum of the upper layer's pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1: the
    /// addresses, the protocol and the upper-layer length), read from the header in place:
    /// what [`checksum::pseudo_header`] gives for this packet's addresses, protocol and
    /// payload length.
    #[inline]
    pub fn pseudo_header_sum(&self) -> u64 {
        let b = self.buf;
        let w = |i: usize| u64::from(u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
        let addrs = if self.is_ipv4() {
            w(12) + w(16)
        } else {
            let b: &[u8; 40] = b[..40].try_into().expect("checked length");
            let w = |i: usize| u64::from(u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
            w(8) + w(12) + w(16) + w(20) + w(24) + w(28) + w(32) + w(36)
        };
        addrs + u64::from(self.proto.number()) + (b.len() - usize::from(self.l4)) as u64
    }

    /// Whether the destination is `addr`, compared in place (no `IpAddr` made).
    #[inline]
    pub fn dst_is(&self, addr: &IpAddr) -> bool {
        let b = self.buf;
        match addr {
            IpAddr::V4(a) => self.is_ipv4() && b[16..20] == a.octets(),
            IpAddr::V6(a) => !self.is_ipv4() && b[24..40] == a.octets(),
        }
    }

    /// Upper-layer protocol (past IPv6 extension headers).
    pub fn proto(&self) -> IpProto {
        self.proto
    }

    /// TTL or hop limit.
    pub fn ttl(&self) -> u8 {
        if self.is_ipv4() {
            self.buf[8]
        } else {
            self.buf[7]
        }
    }

    /// TOS or traffic class.
    pub fn dsfield(&self) -> u8 {
        if self.is_ipv4() {
            self.buf[1]
        } else {
            (self.buf[0] << 4) | (self.buf[1] >> 4)
        }
    }

    /// IPv4 DF flag (false for IPv6).
    pub fn dont_frag(&self) -> bool {
        self.is_ipv4() && self.buf[6] & 0x40 != 0
    }

    /// IPv6 flow label (0 for IPv4).
    pub fn flow_label(&self) -> u32 {
        if self.is_ipv4() {
            0
        } else {
            u32::from_be_bytes([0, self.buf[1] & 0x0f, self.buf[2], self.buf[3]])
        }
    }

    /// Whether the packet is a fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.fragment
    }

    /// The packet's length (IPv4 total length, or 40 + IPv6 payload length).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Never true: a checked view holds at least a fixed header.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole packet.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Offset of the upper-layer header.
    pub fn transport_offset(&self) -> usize {
        usize::from(self.l4)
    }

    /// Everything from the upper-layer header on (a tunnelled packet for protocols 4 and 41).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[usize::from(self.l4)..]
    }

    /// Source and destination ports, for TCP/UDP (and SCTP, DCCP) packets that carry them (not
    /// later fragments, at least 4 bytes of transport header).
    pub fn ports(&self) -> Option<(u16, u16)> {
        if !self.proto.has_ports() || self.later_fragment {
            return None;
        }
        match *self.payload() {
            [a, b, c, d, ..] => Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
            _ => None,
        }
    }

    /// The packet's flow (ports zero when the packet has none).
    pub fn flow_key(&self) -> FlowKey {
        let (sport, dport) = self.ports().unwrap_or((0, 0));
        let b = self.buf;
        if self.is_ipv4() {
            let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
            FlowKey::v4(src, dst, self.proto, sport, dport)
        } else {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).expect("checked length"));
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).expect("checked length"));
            FlowKey::v6(src, dst, self.proto, sport, dport, self.flow_label())
        }
    }

    /// A view of the TCP header.
    ///
    /// # Errors
    /// Not TCP, a later fragment, or a malformed TCP header.
    pub fn tcp(&self) -> Result<TcpView<'a>> {
        if self.proto != IpProto::Tcp || self.later_fragment {
            return Err(WireError::Unsupported {
                layer: Layer::Tcp,
                what: "TCP view of a non-TCP packet or later fragment: protocol",
                value: u32::from(self.proto.number()),
            });
        }
        TcpView::new_checked(self.payload(), usize::from(self.l4))
    }
}

/// A checked view of a TCP header and its payload.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct TcpView<'a> {
    buf: &'a [u8],
    hlen: u8,
}

impl<'a> TcpView<'a> {
    /// Checks the header length fields of the TCP segment `buf` (found at `offset` in its
    /// packet, for error messages).
    ///
    /// # Errors
    /// Truncated header, data offset below 5 or beyond the segment.
    pub fn new_checked(buf: &'a [u8], offset: usize) -> Result<Self> {
        need(buf, tcp::HEADER_LEN, Layer::Tcp, offset, "fixed header")?;
        let hlen = usize::from(buf[12] >> 4) * 4;
        if hlen < tcp::HEADER_LEN {
            return Err(WireError::BadHeaderLength {
                layer: Layer::Tcp,
                offset,
                value: hlen / 4,
                why: "data offset below 5",
            });
        }
        need(buf, hlen, Layer::Tcp, offset, "data offset field")?;
        Ok(Self {
            buf,
            hlen: hlen as u8,
        })
    }

    /// Source port.
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.buf[0], self.buf[1]])
    }

    /// Destination port.
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// Sequence number.
    pub fn seq(&self) -> TcpSeq {
        TcpSeq(u32::from_be_bytes([
            self.buf[4],
            self.buf[5],
            self.buf[6],
            self.buf[7],
        ]))
    }

    /// Acknowledgement number.
    pub fn ack(&self) -> TcpSeq {
        TcpSeq(u32::from_be_bytes([
            self.buf[8],
            self.buf[9],
            self.buf[10],
            self.buf[11],
        ]))
    }

    /// Flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buf[13])
    }

    /// Window (unscaled).
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.buf[14], self.buf[15]])
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.hlen)
    }

    /// Segment data.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[usize::from(self.hlen)..]
    }

    /// Sequence space the segment occupies: data length, plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32 + u32::from(f.syn()) + u32::from(f.fin())
    }

    /// Whether the checksum is right for the packet's addresses.
    ///
    /// # Errors
    /// [`WireError::MixedFamilies`] when the addresses differ in family.
    pub fn checksum_ok(&self, src: IpAddr, dst: IpAddr) -> Result<bool> {
        let found = u16::from_be_bytes([self.buf[16], self.buf[17]]);
        Ok(checksum::transport(self.buf, 16, src, dst, 6)? == found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, PacketBuilder};
    use crate::tcp::TcpRepr;
    use proptest::prelude::*;

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// The view and the full parser agree on every field they share, for any packet the
        /// builder makes, and the view never panics on mutated bytes.
        #[test]
        fn view_agrees_with_repr(v6 in any::<bool>(), sport in any::<u16>(), dport in any::<u16>(), seq in any::<u32>(),
                                 flags in any::<u8>(), len in 0usize..300, label in 0u32..0x10_0000, flip in any::<(usize, u8)>()) {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
            } else {
                ("10.1.2.3".parse().unwrap(), "10.3.2.1".parse().unwrap())
            };
            let t = TcpRepr { sport, dport, seq: TcpSeq(seq), flags: TcpFlags(flags), ..TcpRepr::default() };
            let bytes = PacketBuilder::new(s, d).unwrap().flow_label(label).tcp(&t, &vec![9; len]).unwrap();
            let p = Packet::parse(&bytes, true).unwrap();
            let v = IpView::new_checked(&bytes, true).unwrap();
            prop_assert_eq!(v.flow_key(), p.flow_key());
            prop_assert!(v.dst_is(&d) && (s == d || !v.dst_is(&s)));
            prop_assert_eq!((v.ttl(), v.dsfield(), v.len(), v.payload().len()), (p.ip.ttl(), p.ip.dsfield(), p.len, bytes.len() - p.transport_offset));
            let tv = v.tcp().unwrap();
            prop_assert_eq!((tv.sport(), tv.dport(), tv.seq(), tv.flags()), (sport, dport, TcpSeq(seq), TcpFlags(flags)));
            prop_assert_eq!(tv.payload().len(), len);
            prop_assert!(tv.checksum_ok(s, d).unwrap());
            // The pseudo-header read in place is the one made from the addresses, and
            // checks the segment with its payload summed apart.
            prop_assert_eq!(v.pseudo_header_sum(), checksum::pseudo_header(s, d, 6, v.payload().len()).unwrap());
            let seg = v.payload();
            let (head, rest) = seg.split_at(tv.header_len());
            let split = checksum::transport_split_pseudo(head, 16, checksum::BytesSum::of(rest), v.pseudo_header_sum());
            prop_assert_eq!(split, u16::from_be_bytes([seg[16], seg[17]]));
            let mut m = bytes.clone();
            let i = flip.0 % m.len();
            m[i] ^= flip.1;
            if let Ok(v) = IpView::new_checked(&m, false) {
                let _ = (v.flow_key(), v.tcp().map(|t| (t.seq_len(), t.window(), t.ack())), v.dont_frag());
            }
        }
    }

    #[test]
    fn rejects_what_repr_rejects() {
        assert!(IpView::new_checked(&[], false).is_err());
        assert!(IpView::new_checked(&[0x45; 19], false).is_err());
        assert!(matches!(
            IpView::new_checked(&[0x44; 40], false),
            Err(WireError::BadHeaderLength { .. })
        ));
        assert!(matches!(
            IpView::new_checked(&[0x75; 40], false),
            Err(WireError::BadVersion { .. })
        ));
    }
}
