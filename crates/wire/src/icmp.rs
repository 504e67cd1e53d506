//! ICMP (v4) and ICMPv6: messages, errors built as Linux builds them, and the flow an error
//! quotes.
//!
//! Linux rules mirrored (net/ipv4/icmp.c `__icmp_send`, net/ipv6/icmp.c `icmp6_send`, v6.x):
//! - IPv4 errors quote the offending packet from its IP header on, cut so the error fits in 576
//!   bytes (548 quoted bytes behind a 20-byte IP and 8-byte ICMP header); TOS is the offending
//!   packet's TOS bits (mask 0x1e) with precedence "internetwork control" (0xc0); TTL 64; DF
//!   clear (the kernel's ICMP socket uses `IP_PMTUDISC_DONT`). No error is sent about an ICMP
//!   error, a non-first fragment, or a packet to a multicast or broadcast address.
//! - IPv6 errors quote up to 1232 bytes (so the error fits in the 1280-byte minimum MTU); hop
//!   limit 64. No error is sent about an ICMPv6 error, a packet from the unspecified or a
//!   multicast address, or to a multicast address (except "packet too big").
//! - Rate limits are the sender's business: Linux exempts too-big errors from them (see
//!   `tierlab_lab::icmp`), and limits others per peer (a burst of 6, then one per
//!   `icmp_ratelimit`) and globally (`icmp_msgs_per_sec`).
//! - Not modelled: the reversed IP options Linux echoes in IPv4 errors, and the IP ID Linux
//!   picks (the caller gives one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Layer, Result, WireError, need};
use crate::flow::FlowKey;
use crate::ipv4::{self, Ipv4Repr, internet_checksum};
use crate::ipv6::{self, Ipv6Repr};
use crate::proto::IpProto;
use crate::tcp::transport_checksum;

/// Length of the ICMP/ICMPv6 header (type, code, checksum, 4 bytes of type-specific data).
pub const HEADER_LEN: usize = 8;
/// Most bytes of the offending packet an IPv4 error quotes: 576 - 20 - 8.
pub const V4_MAX_QUOTE: usize = 576 - ipv4::HEADER_LEN - HEADER_LEN;
/// Most bytes of the offending packet an ICMPv6 error quotes: 1280 - 40 - 8.
pub const V6_MAX_QUOTE: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN;

/// An ICMP (v4) message header.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Icmpv4Repr {
    /// Echo request (type 8).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Echo reply (type 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Destination unreachable (type 3); code 4 is "fragmentation needed" with the MTU.
    DestUnreachable {
        /// Code (0 net, 1 host, 3 port, 4 fragmentation needed, ...).
        code: u8,
        /// Next-hop MTU (RFC 1191; meaningful with code 4).
        next_hop_mtu: u16,
    },
    /// Time exceeded (type 11).
    TimeExceeded {
        /// Code (0 TTL exceeded in transit, 1 fragment reassembly time exceeded).
        code: u8,
    },
    /// Any other type.
    Other {
        /// Type.
        kind: u8,
        /// Code.
        code: u8,
        /// The 4 type-specific bytes.
        rest: u32,
    },
}

/// Code of "fragmentation needed and DF set".
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Code of "port unreachable".
pub const CODE_PORT_UNREACHABLE: u8 = 3;

impl Icmpv4Repr {
    fn fields(&self) -> (u8, u8, u32) {
        match *self {
            Self::EchoRequest { ident, seq } => (8, 0, u32::from(ident) << 16 | u32::from(seq)),
            Self::EchoReply { ident, seq } => (0, 0, u32::from(ident) << 16 | u32::from(seq)),
            Self::DestUnreachable { code, next_hop_mtu } => (3, code, u32::from(next_hop_mtu)),
            Self::TimeExceeded { code } => (11, code, 0),
            Self::Other { kind, code, rest } => (kind, code, rest),
        }
    }

    /// Whether the message is an error (types 3, 4, 5, 11, 12), which quotes a packet.
    pub fn is_error(&self) -> bool {
        matches!(self.fields().0, 3 | 4 | 5 | 11 | 12)
    }

    /// Parses the 8-byte header at the start of `buf` (the whole ICMP message), checking the
    /// checksum over the whole message when `verify`.
    ///
    /// # Errors
    /// Truncated header or bad checksum.
    pub fn parse(buf: &[u8], offset: usize, verify: bool) -> Result<Self> {
        need(buf, HEADER_LEN, Layer::Icmpv4, offset, "header")?;
        let expected = verify.then(|| internet_checksum(buf, Some(2)));
        let (kind, code, rest) = read_header(buf, offset, Layer::Icmpv4, expected)?;
        Ok(match kind {
            8 if code == 0 => Self::EchoRequest {
                ident: (rest >> 16) as u16,
                seq: rest as u16,
            },
            0 if code == 0 => Self::EchoReply {
                ident: (rest >> 16) as u16,
                seq: rest as u16,
            },
            3 => Self::DestUnreachable {
                code,
                next_hop_mtu: rest as u16,
            },
            11 => Self::TimeExceeded { code },
            _ => Self::Other { kind, code, rest },
        })
    }

    /// Writes header and `body` into `buf` with the checksum.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer.
    pub fn emit(&self, buf: &mut [u8], body: &[u8]) -> Result<()> {
        let len = write_header(buf, body, self.fields())?;
        let c = internet_checksum(&buf[..len], Some(2));
        buf[2..4].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// An ICMPv6 message header.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Icmpv6Repr {
    /// Destination unreachable (type 1).
    DestUnreachable {
        /// Code (4 = port unreachable).
        code: u8,
    },
    /// Packet too big (type 2) with the MTU of the next hop.
    PacketTooBig {
        /// MTU.
        mtu: u32,
    },
    /// Time exceeded (type 3).
    TimeExceeded {
        /// Code.
        code: u8,
    },
    /// Echo request (type 128).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Echo reply (type 129).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Any other type.
    Other {
        /// Type.
        kind: u8,
        /// Code.
        code: u8,
        /// The 4 type-specific bytes.
        rest: u32,
    },
}

impl Icmpv6Repr {
    fn fields(&self) -> (u8, u8, u32) {
        match *self {
            Self::DestUnreachable { code } => (1, code, 0),
            Self::PacketTooBig { mtu } => (2, 0, mtu),
            Self::TimeExceeded { code } => (3, code, 0),
            Self::EchoRequest { ident, seq } => (128, 0, u32::from(ident) << 16 | u32::from(seq)),
            Self::EchoReply { ident, seq } => (129, 0, u32::from(ident) << 16 | u32::from(seq)),
            Self::Other { kind, code, rest } => (kind, code, rest),
        }
    }

    /// Whether the message is an error (type below 128), which quotes a packet.
    pub fn is_error(&self) -> bool {
        self.fields().0 < 128
    }

    /// Parses the header at the start of `buf` (the whole message); with `verify` set to the
    /// IPv6 addresses, checks the checksum over the pseudo-header.
    ///
    /// # Errors
    /// Truncated header or bad checksum.
    pub fn parse(buf: &[u8], offset: usize, verify: Option<(Ipv6Addr, Ipv6Addr)>) -> Result<Self> {
        need(buf, HEADER_LEN, Layer::Icmpv6, offset, "header")?;
        let expected = match verify {
            Some((s, d)) => Some(transport_checksum(buf, 2, s.into(), d.into(), 58)?),
            None => None,
        };
        let (kind, code, rest) = read_header(buf, offset, Layer::Icmpv6, expected)?;
        Ok(match kind {
            1 => Self::DestUnreachable { code },
            2 if code == 0 => Self::PacketTooBig { mtu: rest },
            3 => Self::TimeExceeded { code },
            128 if code == 0 => Self::EchoRequest {
                ident: (rest >> 16) as u16,
                seq: rest as u16,
            },
            129 if code == 0 => Self::EchoReply {
                ident: (rest >> 16) as u16,
                seq: rest as u16,
            },
            _ => Self::Other { kind, code, rest },
        })
    }

    /// Writes header and `body` into `buf`, with the checksum over the pseudo-header.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer.
    pub fn emit(&self, buf: &mut [u8], body: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<()> {
        let len = write_header(buf, body, self.fields())?;
        let c = transport_checksum(&buf[..len], 2, src.into(), dst.into(), 58)?;
        buf[2..4].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// Type, code and the 4 type-specific bytes of an ICMP/ICMPv6 header (at least 8 bytes, checked
/// by the caller), after comparing the checksum field with `expected` when given.
fn read_header(
    buf: &[u8],
    offset: usize,
    layer: Layer,
    expected: Option<u16>,
) -> Result<(u8, u8, u32)> {
    let found = u16::from_be_bytes([buf[2], buf[3]]);
    if let Some(expected) = expected.filter(|&e| e != found) {
        return Err(WireError::BadChecksum {
            layer,
            offset,
            found,
            expected,
        });
    }
    Ok((
        buf[0],
        buf[1],
        u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
    ))
}

/// Writes an ICMP/ICMPv6 header (checksum zero) and `body`; returns the message length.
fn write_header(buf: &mut [u8], body: &[u8], (kind, code, rest): (u8, u8, u32)) -> Result<usize> {
    let len = HEADER_LEN + body.len();
    if buf.len() < len {
        return Err(WireError::Build("buffer shorter than the ICMP message"));
    }
    buf[0] = kind;
    buf[1] = code;
    buf[2..4].fill(0);
    buf[4..8].copy_from_slice(&rest.to_be_bytes());
    buf[8..len].copy_from_slice(body);
    Ok(len)
}

/// The errors tierlab's tiers send, with their ICMP/ICMPv6 type and code.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum IcmpError {
    /// IPv4 "fragmentation needed" (3/4) with the next-hop MTU, or IPv6 "packet too big" (2/0).
    TooBig {
        /// The MTU to announce.
        mtu: u32,
    },
    /// Port unreachable (IPv4 3/3, IPv6 1/4): what IPVS answers when no destination is usable.
    PortUnreachable,
    /// Host unreachable (IPv4 3/1, IPv6 1/3).
    HostUnreachable,
    /// Net unreachable / no route (IPv4 3/0, IPv6 1/0).
    NoRoute,
    /// TTL / hop limit exceeded in transit (IPv4 11/0, IPv6 3/0).
    TtlExceeded,
}

/// Builds the ICMP error that a Linux host at `from` sends about the packet `offending` (the
/// whole IPv4 or IPv6 packet as received), or `Ok(None)` when Linux sends none (see the module
/// doc). The family of `from` must match the offending packet's. `ident` is the IPv4
/// identification to use (ignored for IPv6).
///
/// # Errors
/// The offending packet's IP header does not parse, or `from` is of the other family.
pub fn build_error(
    offending: &[u8],
    from: IpAddr,
    err: IcmpError,
    ident: u16,
) -> Result<Option<Vec<u8>>> {
    match from {
        IpAddr::V4(from) => build_error_v4(offending, from, err, ident),
        IpAddr::V6(from) => build_error_v6(offending, from, err),
    }
}

fn build_error_v4(
    offending: &[u8],
    from: Ipv4Addr,
    err: IcmpError,
    ident: u16,
) -> Result<Option<Vec<u8>>> {
    let (orig, total) = Ipv4Repr::parse(offending, false)?;
    if orig.frag_offset != 0 || orig.dst.is_multicast() || orig.dst.is_broadcast() {
        return Ok(None);
    }
    if orig.proto == IpProto::Icmp {
        let hlen = orig.header_len();
        // An ICMP error (or a message too short to tell) is never answered with an error.
        match Icmpv4Repr::parse(&offending[hlen..total], hlen, false) {
            Ok(m) if !m.is_error() && !matches!(m, Icmpv4Repr::Other { kind, .. } if kind > 18) => {
            }
            _ => return Ok(None),
        }
    }
    let msg = match err {
        IcmpError::TooBig { mtu } => Icmpv4Repr::DestUnreachable {
            code: CODE_FRAG_NEEDED,
            next_hop_mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        },
        IcmpError::PortUnreachable => Icmpv4Repr::DestUnreachable {
            code: CODE_PORT_UNREACHABLE,
            next_hop_mtu: 0,
        },
        IcmpError::HostUnreachable => Icmpv4Repr::DestUnreachable {
            code: 1,
            next_hop_mtu: 0,
        },
        IcmpError::NoRoute => Icmpv4Repr::DestUnreachable {
            code: 0,
            next_hop_mtu: 0,
        },
        IcmpError::TtlExceeded => Icmpv4Repr::TimeExceeded { code: 0 },
    };
    let quote = &offending[..total.min(V4_MAX_QUOTE)];
    let ip = Ipv4Repr {
        tos: (orig.tos & 0x1e) | 0xc0,
        ident,
        dont_frag: false,
        ..Ipv4Repr::new(from, orig.src, IpProto::Icmp)
    };
    let mut out = vec![0; ip.header_len() + HEADER_LEN + quote.len()];
    let (h, rest) = out.split_at_mut(ip.header_len());
    ip.emit(h, HEADER_LEN + quote.len())?;
    msg.emit(rest, quote)?;
    Ok(Some(out))
}

fn build_error_v6(offending: &[u8], from: Ipv6Addr, err: IcmpError) -> Result<Option<Vec<u8>>> {
    let (orig, total) = Ipv6Repr::parse(offending)?;
    let too_big = matches!(err, IcmpError::TooBig { .. });
    if orig.src.is_unspecified() || orig.src.is_multicast() || (orig.dst.is_multicast() && !too_big)
    {
        return Ok(None);
    }
    if let Ok(UpperLayer {
        proto: IpProto::Icmpv6,
        offset,
        ..
    }) = upper_layer_v6(offending, total)
    {
        match Icmpv6Repr::parse(&offending[offset..total], offset, None) {
            Ok(m) if !m.is_error() => {}
            _ => return Ok(None),
        }
    }
    let msg = match err {
        IcmpError::TooBig { mtu } => Icmpv6Repr::PacketTooBig { mtu },
        IcmpError::PortUnreachable => Icmpv6Repr::DestUnreachable { code: 4 },
        IcmpError::HostUnreachable => Icmpv6Repr::DestUnreachable { code: 3 },
        IcmpError::NoRoute => Icmpv6Repr::DestUnreachable { code: 0 },
        IcmpError::TtlExceeded => Icmpv6Repr::TimeExceeded { code: 0 },
    };
    let quote = &offending[..total.min(V6_MAX_QUOTE)];
    let ip = Ipv6Repr::new(from, orig.src, IpProto::Icmpv6);
    let mut out = vec![0; ipv6::HEADER_LEN + HEADER_LEN + quote.len()];
    let (h, rest) = out.split_at_mut(ipv6::HEADER_LEN);
    ip.emit(h, HEADER_LEN + quote.len())?;
    msg.emit(rest, quote, from, orig.src)?;
    Ok(Some(out))
}

/// Where the upper-layer header of an IPv6 packet starts, past extension headers.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct UpperLayer {
    pub(crate) proto: IpProto,
    pub(crate) offset: usize,
    /// Fragment header found on the way: (offset in bytes, more fragments, ident).
    pub(crate) frag: Option<(u16, bool, u32)>,
}

/// Walks the IPv6 extension headers (hop-by-hop, routing, destination options, fragment) of the
/// packet in `buf[..end]`.
pub(crate) fn upper_layer_v6(buf: &[u8], end: usize) -> Result<UpperLayer> {
    let mut proto = IpProto::from(*buf.get(6).unwrap_or(&59));
    let mut off = ipv6::HEADER_LEN;
    let mut frag = None;
    let buf = &buf[..end.min(buf.len())];
    for _ in 0..8 {
        if ipv6::is_skippable_ext(proto) {
            need(buf, off + 2, Layer::Ipv6, off, "extension header")?;
            let len = (usize::from(buf[off + 1]) + 1) * 8;
            need(buf, off + len, Layer::Ipv6, off, "extension header length")?;
            proto = IpProto::from(buf[off]);
            off += len;
        } else if proto == IpProto::Ipv6Frag {
            let f = ipv6::Ipv6FragRepr::parse(&buf[off.min(buf.len())..], off)?;
            frag = Some((f.offset, f.more_frags, f.ident));
            proto = f.next_header;
            off += ipv6::FRAG_HEADER_LEN;
        } else {
            return Ok(UpperLayer {
                proto,
                offset: off,
                frag,
            });
        }
    }
    Err(WireError::Unsupported {
        layer: Layer::Ipv6,
        what: "chain of more than 8 extension headers",
        value: 8,
    })
}

/// The flow of the packet an ICMP error quotes, as that packet was sent (its source is the
/// host that sent the offending packet). `quote` is the error's body: the offending packet's
/// IP header and at least the first 4 bytes of its transport header when it has ports. The
/// quote may be cut short (a total length beyond the bytes quoted is normal).
///
/// # Errors
/// The quoted IP header does not parse, or the bytes stop before the ports.
pub fn quoted_flow(quote: &[u8]) -> Result<FlowKey> {
    let q = |e: WireError| match e {
        WireError::Truncated {
            offset,
            needed,
            available,
            what,
            ..
        } => WireError::Truncated {
            layer: Layer::IcmpQuote,
            offset,
            needed,
            available,
            what,
        },
        other => other,
    };
    need(quote, 1, Layer::IcmpQuote, 0, "quoted IP header")?;
    match quote[0] >> 4 {
        4 => {
            need(
                quote,
                ipv4::HEADER_LEN,
                Layer::IcmpQuote,
                0,
                "quoted IPv4 header",
            )?;
            let hlen = usize::from(quote[0] & 0xf) * 4;
            if hlen < ipv4::HEADER_LEN {
                return Err(WireError::BadHeaderLength {
                    layer: Layer::IcmpQuote,
                    offset: 0,
                    value: hlen / 4,
                    why: "IHL below 5",
                });
            }
            let src = Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]);
            let dst = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
            let proto = IpProto::from(quote[9]);
            let first_frag = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff == 0;
            let (sport, dport) = if proto.has_ports() && first_frag {
                ports(quote, hlen)?
            } else {
                (0, 0)
            };
            Ok(FlowKey::v4(src, dst, proto, sport, dport))
        }
        6 => {
            need(
                quote,
                ipv6::HEADER_LEN,
                Layer::IcmpQuote,
                0,
                "quoted IPv6 header",
            )?;
            let mut a = [0u8; 16];
            a.copy_from_slice(&quote[8..24]);
            let src = Ipv6Addr::from(a);
            a.copy_from_slice(&quote[24..40]);
            let dst = Ipv6Addr::from(a);
            let label = u32::from_be_bytes([0, quote[1] & 0xf, quote[2], quote[3]]);
            let ul = upper_layer_v6(quote, quote.len()).map_err(q)?;
            let first_frag = ul.frag.is_none_or(|(o, _, _)| o == 0);
            let (sport, dport) = if ul.proto.has_ports() && first_frag {
                ports(quote, ul.offset)?
            } else {
                (0, 0)
            };
            Ok(FlowKey::v6(src, dst, ul.proto, sport, dport, label))
        }
        version => Err(WireError::BadVersion {
            offset: 0,
            version,
            expected: "4 or 6",
        }),
    }
}

/// The flow and the sequence number of the TCP segment an ICMP or ICMPv6 error quotes
/// (`quote` as for [`quoted_flow`]): the sequence number is what a TCP checks against
/// SND.UNA..SND.NXT before it believes the error (Linux `tcp_v4_err`, `tcp_v6_err`). `None`
/// when the quote is not the first fragment of a TCP segment.
///
/// # Errors
/// As [`quoted_flow`]; the quote stops before the sequence number (RFC 792 asks for the IP
/// header and 64 bits of data, which reach it).
pub fn quoted_tcp(quote: &[u8]) -> Result<Option<(FlowKey, crate::TcpSeq)>> {
    let flow = quoted_flow(quote)?;
    if flow.proto() != IpProto::Tcp {
        return Ok(None);
    }
    let (at, first_frag) = if quote[0] >> 4 == 4 {
        let off = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff;
        (usize::from(quote[0] & 0xf) * 4, off == 0)
    } else {
        let ul = upper_layer_v6(quote, quote.len())?;
        (ul.offset, ul.frag.is_none_or(|(o, _, _)| o == 0))
    };
    if !first_frag {
        return Ok(None);
    }
    need(
        quote,
        at + 8,
        Layer::IcmpQuote,
        at,
        "quoted TCP sequence number",
    )?;
    let seq = crate::TcpSeq(u32::from_be_bytes([
        quote[at + 4],
        quote[at + 5],
        quote[at + 6],
        quote[at + 7],
    ]));
    Ok(Some((flow, seq)))
}

fn ports(buf: &[u8], at: usize) -> Result<(u16, u16)> {
    need(buf, at + 4, Layer::IcmpQuote, at, "quoted ports")?;
    Ok((
        u16::from_be_bytes([buf[at], buf[at + 1]]),
        u16::from_be_bytes([buf[at + 2], buf[at + 3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, PacketBuilder, Transport};
    use crate::tcp::{TcpFlags, TcpRepr, TcpSeq};

    fn data_segment(src: &str, dst: &str, len: usize) -> Vec<u8> {
        let tcp = TcpRepr {
            sport: 40000,
            dport: 80,
            seq: TcpSeq(1),
            ack: TcpSeq(1),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 502,
            ..TcpRepr::default()
        };
        PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
            .unwrap()
            .tcp(&tcp, &vec![0xab; len])
            .unwrap()
    }

    #[test]
    fn the_quoted_tcp_sequence_number_is_read_from_both_families() {
        for (src, dst) in [
            ("203.0.113.7", "198.51.100.1"),
            ("2001:db8::cb00:7107", "2001:db8::c633:6401"),
        ] {
            let tcp = TcpRepr {
                sport: 40000,
                dport: 80,
                seq: TcpSeq(0x0102_0304),
                ack: TcpSeq(0x0a0b_0c0d),
                flags: TcpFlags::SYN,
                ..TcpRepr::default()
            };
            let seg = PacketBuilder::new(src.parse().unwrap(), dst.parse().unwrap())
                .unwrap()
                .tcp(&tcp, &[])
                .unwrap();
            let err = build_error(&seg, dst.parse().unwrap(), IcmpError::PortUnreachable, 1)
                .unwrap()
                .unwrap();
            let p = Packet::parse(&err, true).unwrap();
            assert_eq!(
                quoted_tcp(p.payload).unwrap().map(|(_, s)| s),
                Some(TcpSeq(0x0102_0304))
            );
            // RFC 792's minimum quote (IP header and 8 bytes) still reaches it; 7 do not.
            let hlen = if src.contains(':') { 40 } else { 20 };
            assert_eq!(
                quoted_tcp(&seg[..hlen + 8]).unwrap().map(|(_, s)| s),
                Some(TcpSeq(0x0102_0304))
            );
            assert!(quoted_tcp(&seg[..hlen + 7]).is_err());
        }
        let udp = PacketBuilder::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .unwrap()
            .udp(&crate::udp::UdpRepr { sport: 1, dport: 2 }, &[0; 8])
            .unwrap();
        assert_eq!(quoted_tcp(&udp).unwrap(), None, "not TCP");
    }

    #[test]
    fn v4_frag_needed_quotes_576_bytes_and_points_back() {
        let seg = data_segment("203.0.113.7", "198.51.100.1", 1400);
        let err = build_error(
            &seg,
            "10.0.0.1".parse().unwrap(),
            IcmpError::TooBig { mtu: 1480 },
            9,
        )
        .unwrap()
        .unwrap();
        assert_eq!(err.len(), 576);
        let p = Packet::parse(&err, true).unwrap();
        assert_eq!(p.dst(), "203.0.113.7".parse::<IpAddr>().unwrap());
        match p.transport {
            Transport::Icmpv4(Icmpv4Repr::DestUnreachable {
                code: 4,
                next_hop_mtu: 1480,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let inner = quoted_flow(p.payload).unwrap();
        assert_eq!(inner, Packet::parse(&seg, true).unwrap().flow_key());
        assert_eq!(p.icmp_quoted_flow().unwrap(), Some(inner));
    }

    #[test]
    fn v6_packet_too_big_quotes_1232_bytes() {
        let seg = data_segment("2001:db8::cb00:7107", "2001:db8::c633:6401", 1400);
        let err = build_error(
            &seg,
            "2001:db8:1::1".parse().unwrap(),
            IcmpError::TooBig { mtu: 1280 },
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(err.len(), 1280);
        let p = Packet::parse(&err, true).unwrap();
        assert!(matches!(
            p.transport,
            Transport::Icmpv6(Icmpv6Repr::PacketTooBig { mtu: 1280 })
        ));
        assert_eq!(quoted_flow(p.payload).unwrap().sport(), 40000);
    }

    #[test]
    fn no_error_about_an_error() {
        let seg = data_segment("203.0.113.7", "198.51.100.1", 100);
        let e1 = build_error(
            &seg,
            "10.0.0.1".parse().unwrap(),
            IcmpError::PortUnreachable,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            build_error(
                &e1,
                "10.0.0.2".parse().unwrap(),
                IcmpError::PortUnreachable,
                2
            ),
            Ok(None)
        );
        let seg6 = data_segment("2001:db8::1", "2001:db8::2", 100);
        let e6 = build_error(
            &seg6,
            "2001:db8::3".parse().unwrap(),
            IcmpError::PortUnreachable,
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            build_error(&e6, "2001:db8::4".parse().unwrap(), IcmpError::NoRoute, 0),
            Ok(None)
        );
    }

    #[test]
    fn quoted_flow_needs_the_ports() {
        let seg = data_segment("203.0.113.7", "198.51.100.1", 10);
        assert!(quoted_flow(&seg[..22]).is_err());
        assert_eq!(quoted_flow(&seg[..24]).unwrap().dport(), 80);
        assert!(matches!(
            quoted_flow(&[0x75; 30]),
            Err(WireError::BadVersion { version: 7, .. })
        ));
    }
}
