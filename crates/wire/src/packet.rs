//! Whole packets: [`Packet::parse`] reads an IPv4 or IPv6 packet and its transport header from
//! bytes; [`PacketBuilder`] writes one with correct lengths and checksums.
//!
//! Panic contract: [`Packet::parse`] never panics, whatever the bytes (a property test feeds it
//! random and mutated packets); builders return [`WireError::Build`] instead of panicking.

use std::net::IpAddr;

use crate::error::{Result, WireError};
use crate::flow::FlowKey;
use crate::icmp::{self, Icmpv4Repr, Icmpv6Repr};
use crate::ipv4::Ipv4Repr;
use crate::ipv6::{self, Ipv6Repr};
use crate::proto::IpProto;
use crate::tcp::TcpRepr;
use crate::udp::UdpRepr;

/// The IP header of a packet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum IpHeader {
    /// IPv4.
    V4(Ipv4Repr),
    /// IPv6 (fixed header).
    V6(Ipv6Repr),
}

impl IpHeader {
    /// Source address.
    pub fn src(&self) -> IpAddr {
        match self {
            Self::V4(h) => h.src.into(),
            Self::V6(h) => h.src.into(),
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        match self {
            Self::V4(h) => h.dst.into(),
            Self::V6(h) => h.dst.into(),
        }
    }

    /// TTL (IPv4) or hop limit (IPv6).
    pub fn ttl(&self) -> u8 {
        match self {
            Self::V4(h) => h.ttl,
            Self::V6(h) => h.hop_limit,
        }
    }

    /// Sets the TTL or hop limit.
    pub fn set_ttl(&mut self, ttl: u8) {
        match self {
            Self::V4(h) => h.ttl = ttl,
            Self::V6(h) => h.hop_limit = ttl,
        }
    }

    /// Whether this is IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self, Self::V4(_))
    }

    /// TOS (IPv4) or traffic class (IPv6).
    pub fn dsfield(&self) -> u8 {
        match self {
            Self::V4(h) => h.tos,
            Self::V6(h) => h.traffic_class,
        }
    }
}

/// The transport part of a parsed packet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Transport {
    /// A TCP segment.
    Tcp(TcpRepr),
    /// A UDP datagram.
    Udp(UdpRepr),
    /// An ICMP message (the payload is the quoted packet for errors).
    Icmpv4(Icmpv4Repr),
    /// An ICMPv6 message.
    Icmpv6(Icmpv6Repr),
    /// A tunnelled packet (protocol 4 or 41): the payload is the inner IP packet.
    Tunnel(IpProto),
    /// A non-first fragment: no transport header, the payload is fragment data.
    Fragment(IpProto),
    /// Another protocol, not parsed.
    Other(IpProto),
}

/// A parsed packet: headers by value, payload borrowed from the buffer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Packet<'a> {
    /// IP header.
    pub ip: IpHeader,
    /// Transport header.
    pub transport: Transport,
    /// Bytes after the transport header (the tunnelled packet, the ICMP quote, TCP data...).
    pub payload: &'a [u8],
    /// Offset of the transport header (after IPv6 extension headers).
    pub transport_offset: usize,
    /// Length of the packet (IPv4 total length, or 40 + IPv6 payload length).
    pub len: usize,
    /// IPv6 fragment header, when present: (offset in bytes, more fragments, identification).
    pub ipv6_frag: Option<(u16, bool, u32)>,
}

/// Which checksums [`Packet::parse_with`] verifies.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Verify {
    /// None: lengths and structure only.
    Nothing,
    /// The IPv4 header checksum only (what `ip_rcv` checks before the transport sees it).
    IpHeader,
    /// Every checksum: IPv4 header, TCP, UDP, ICMP, ICMPv6 (transport checksums of fragments
    /// excepted: they cover bytes that are not there).
    All,
}

impl<'a> Packet<'a> {
    /// Parses an IPv4 or IPv6 packet. With `verify`, every checksum is checked (IPv4 header,
    /// TCP, UDP, ICMP, ICMPv6), except transport checksums of fragments, which cover bytes
    /// that are not there.
    ///
    /// # Errors
    /// Any [`WireError`] describing what is wrong and where.
    pub fn parse(buf: &'a [u8], verify: bool) -> Result<Self> {
        Self::parse_with(buf, if verify { Verify::All } else { Verify::Nothing })
    }

    /// Parses a packet, verifying the checksums `verify` names.
    ///
    /// # Errors
    /// Any [`WireError`] describing what is wrong and where.
    pub fn parse_with(buf: &'a [u8], verify: Verify) -> Result<Self> {
        match buf.first().map(|b| b >> 4) {
            Some(4) => Self::parse_v4(buf, verify),
            Some(6) => Self::parse_v6(buf, verify == Verify::All),
            Some(version) => Err(WireError::BadVersion {
                offset: 0,
                version,
                expected: "4 or 6",
            }),
            None => Err(WireError::Truncated {
                layer: crate::error::Layer::Ipv4,
                offset: 0,
                needed: 1,
                available: 0,
                what: "IP version",
            }),
        }
    }

    fn parse_v4(buf: &'a [u8], verify: Verify) -> Result<Self> {
        let (h, len) = Ipv4Repr::parse(buf, verify != Verify::Nothing)?;
        let verify = verify == Verify::All;
        let off = h.header_len();
        let body = &buf[off..len];
        let (transport, payload) = if h.frag_offset != 0 {
            (Transport::Fragment(h.proto), body)
        } else {
            let addrs = (verify && !h.more_frags).then_some((h.src.into(), h.dst.into()));
            parse_transport(h.proto, body, off, addrs, verify && !h.more_frags)?
        };
        Ok(Self {
            ip: IpHeader::V4(h),
            transport,
            payload,
            transport_offset: off,
            len,
            ipv6_frag: None,
        })
    }

    fn parse_v6(buf: &'a [u8], verify: bool) -> Result<Self> {
        let (h, len) = Ipv6Repr::parse(buf)?;
        let ul = icmp::upper_layer_v6(buf, len)?;
        let body = &buf[ul.offset..len];
        let (transport, payload) = match ul.frag {
            Some((o, _, _)) if o != 0 => (Transport::Fragment(ul.proto), body),
            Some(_) => parse_transport(ul.proto, body, ul.offset, None, false)?,
            None => {
                let addrs = verify.then_some((h.src.into(), h.dst.into()));
                parse_transport(ul.proto, body, ul.offset, addrs, verify)?
            }
        };
        Ok(Self {
            ip: IpHeader::V6(h),
            transport,
            payload,
            transport_offset: ul.offset,
            len,
            ipv6_frag: ul.frag,
        })
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.ip.src()
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.ip.dst()
    }

    /// The upper-layer protocol (past IPv6 extension headers).
    pub fn proto(&self) -> IpProto {
        match self.transport {
            Transport::Tcp(_) => IpProto::Tcp,
            Transport::Udp(_) => IpProto::Udp,
            Transport::Icmpv4(_) => IpProto::Icmp,
            Transport::Icmpv6(_) => IpProto::Icmpv6,
            Transport::Tunnel(p) | Transport::Fragment(p) | Transport::Other(p) => p,
        }
    }

    /// The packet's flow: addresses, protocol, ports (TCP/UDP; zero otherwise) and, for IPv6,
    /// the flow label.
    pub fn flow_key(&self) -> FlowKey {
        let (sport, dport) = match self.transport {
            Transport::Tcp(t) => (t.sport, t.dport),
            Transport::Udp(u) => (u.sport, u.dport),
            _ => (0, 0),
        };
        match self.ip {
            IpHeader::V4(h) => FlowKey::v4(h.src, h.dst, self.proto(), sport, dport),
            IpHeader::V6(h) => FlowKey::v6(h.src, h.dst, self.proto(), sport, dport, h.flow_label),
        }
    }

    /// For an ICMP or ICMPv6 error, the flow of the packet it quotes; `None` for any other
    /// packet.
    ///
    /// # Errors
    /// The quote does not parse as far as the ports.
    pub fn icmp_quoted_flow(&self) -> Result<Option<FlowKey>> {
        let is_error = match self.transport {
            Transport::Icmpv4(m) => m.is_error(),
            Transport::Icmpv6(m) => m.is_error(),
            _ => false,
        };
        if is_error {
            icmp::quoted_flow(self.payload).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The TCP header, if this is a TCP segment.
    pub fn tcp(&self) -> Option<&TcpRepr> {
        match &self.transport {
            Transport::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

fn parse_transport(
    proto: IpProto,
    body: &[u8],
    off: usize,
    addrs: Option<(IpAddr, IpAddr)>,
    verify: bool,
) -> Result<(Transport, &[u8])> {
    Ok(match proto {
        IpProto::Tcp => {
            let (t, hlen) = TcpRepr::parse(body, off, addrs)?;
            (Transport::Tcp(t), &body[hlen..])
        }
        IpProto::Udp => {
            let (u, len) = UdpRepr::parse(body, off, addrs)?;
            (Transport::Udp(u), &body[crate::udp::HEADER_LEN..len])
        }
        IpProto::Icmp => {
            let m = Icmpv4Repr::parse(body, off, verify)?;
            (Transport::Icmpv4(m), &body[icmp::HEADER_LEN..])
        }
        IpProto::Icmpv6 => {
            let v6 = addrs.and_then(|(s, d)| match (s, d) {
                (IpAddr::V6(s), IpAddr::V6(d)) => Some((s, d)),
                _ => None,
            });
            let m = Icmpv6Repr::parse(body, off, v6)?;
            (Transport::Icmpv6(m), &body[icmp::HEADER_LEN..])
        }
        IpProto::Ipip | IpProto::Ipv6 => (Transport::Tunnel(proto), body),
        other => (Transport::Other(other), body),
    })
}

/// Decrements the TTL (IPv4, fixing the header checksum) or hop limit (IPv6) of the packet in
/// `bytes`, as a router forwarding it does. Returns `false`, changing nothing, when the
/// TTL/hop limit is already 1 or 0 (the router must drop the packet and may answer "time
/// exceeded"), or when the bytes are not an IP header.
pub fn decrement_ttl(bytes: &mut [u8]) -> bool {
    match bytes.first().map(|b| b >> 4) {
        Some(4) if bytes.len() >= crate::ipv4::HEADER_LEN && bytes[8] > 1 => {
            bytes[8] -= 1;
            let hlen =
                (usize::from(bytes[0] & 0xf) * 4).clamp(crate::ipv4::HEADER_LEN, bytes.len());
            let c = crate::checksum::ipv4_header(&bytes[..hlen]);
            bytes[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        Some(6) if bytes.len() >= ipv6::HEADER_LEN && bytes[7] > 1 => {
            bytes[7] -= 1;
            true
        }
        _ => false,
    }
}

/// Builds packets from one IP header template. Lengths, protocol numbers and checksums are
/// filled in.
///
/// ```
/// use tierlab_wire::{Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq};
/// let syn = TcpRepr { sport: 40000, dport: 80, seq: TcpSeq(1), flags: TcpFlags::SYN,
///                     window: 64240, mss: Some(1460), ..TcpRepr::default() };
/// let bytes = PacketBuilder::new("203.0.113.7".parse()?, "198.51.100.1".parse()?)?
///     .tcp(&syn, &[])?;
/// let p = Packet::parse(&bytes, true)?;
/// assert_eq!(p.tcp().unwrap().mss, Some(1460));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct PacketBuilder {
    ip: IpHeader,
}

impl PacketBuilder {
    /// A builder with Linux's defaults (TTL/hop limit 64, DF set for IPv4, TOS 0, label 0).
    ///
    /// # Errors
    /// [`WireError::MixedFamilies`] when the addresses are of different families.
    pub fn new(src: IpAddr, dst: IpAddr) -> Result<Self> {
        Ok(Self {
            ip: match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => IpHeader::V4(Ipv4Repr::new(s, d, IpProto::Tcp)),
                (IpAddr::V6(s), IpAddr::V6(d)) => IpHeader::V6(Ipv6Repr::new(s, d, IpProto::Tcp)),
                _ => return Err(WireError::MixedFamilies),
            },
        })
    }

    /// A builder from a full header (its protocol field is replaced by what is built).
    pub fn from_header(ip: IpHeader) -> Self {
        Self { ip }
    }

    /// The header template.
    pub fn header(&self) -> &IpHeader {
        &self.ip
    }

    /// Sets TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ip.set_ttl(ttl);
        self
    }

    /// Sets the IPv4 identification (ignored for IPv6).
    pub fn ident(mut self, ident: u16) -> Self {
        if let IpHeader::V4(h) = &mut self.ip {
            h.ident = ident;
        }
        self
    }

    /// Sets or clears the IPv4 DF flag (ignored for IPv6).
    pub fn dont_frag(mut self, df: bool) -> Self {
        if let IpHeader::V4(h) = &mut self.ip {
            h.dont_frag = df;
        }
        self
    }

    /// Sets the IPv6 flow label (ignored for IPv4).
    pub fn flow_label(mut self, label: u32) -> Self {
        if let IpHeader::V6(h) = &mut self.ip {
            h.flow_label = label & crate::flow::FLOW_LABEL_MASK;
        }
        self
    }

    /// Sets TOS / traffic class.
    pub fn dsfield(mut self, ds: u8) -> Self {
        match &mut self.ip {
            IpHeader::V4(h) => h.tos = ds,
            IpHeader::V6(h) => h.traffic_class = ds,
        }
        self
    }

    /// Builds a TCP segment.
    ///
    /// # Errors
    /// [`WireError::Build`] when the packet would exceed 65,535 bytes.
    pub fn tcp(&self, tcp: &TcpRepr, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = crate::pool::take(ipv6::HEADER_LEN + tcp.header_len() + payload.len());
        self.tcp_into(tcp, payload, &mut out)?;
        Ok(out)
    }

    /// Builds a TCP segment into `out` (cleared first), reusing its allocation.
    ///
    /// # Errors
    /// As [`PacketBuilder::tcp`].
    pub fn tcp_into(&self, tcp: &TcpRepr, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.tcp_into_summed(tcp, payload, None, out)
    }

    /// Like [`PacketBuilder::tcp_into`]; `payload_sum`, when given, is the sum of `payload`
    /// (e.g. from [`TcpRepr::parse_summed`] of the segment that brought these bytes) and
    /// the checksum is made from it without reading the payload again (debug builds check
    /// it against the bytes).
    ///
    /// # Errors
    /// As [`PacketBuilder::tcp`].
    pub fn tcp_into_summed(
        &self,
        tcp: &TcpRepr,
        payload: &[u8],
        payload_sum: Option<crate::checksum::BytesSum>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let hlen = tcp.header_len();
        let l4 = hlen + payload.len();
        // Headers on a zeroed prefix, the payload appended once (no zero-fill under it).
        let off = self.start_prefix(out, IpProto::Tcp, l4, hlen)?;
        out.extend_from_slice(payload);
        tcp.emit_around_payload_summed(&mut out[off..], payload_sum, self.ip.src(), self.ip.dst())
    }

    /// Builds the TCP segment `tcp` + `payload` from `src` to `dst` into `out` (cleared
    /// first): the same bytes as `PacketBuilder::new(src, dst)?.tcp_into_summed(..)` (TTL or
    /// hop limit 64, IPv4 identification 0 with DF set, no IP options), written in one pass
    /// with no header structure built, for a stack's hot path. `payload_sum`, when given, is
    /// the sum of `payload` (see [`PacketBuilder::tcp_into_summed`]).
    ///
    /// # Errors
    /// [`WireError::MixedFamilies`] when the addresses differ in family; [`WireError::Build`]
    /// when the packet would be longer than its length field can say.
    pub fn tcp_segment_into(
        src: IpAddr,
        dst: IpAddr,
        tcp: &TcpRepr,
        payload: &[u8],
        payload_sum: Option<crate::checksum::BytesSum>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if tcp.window_scale.is_none() && !tcp.sack_permitted {
            return Self::tcp_plain_into(src, dst, tcp, payload, payload_sum, out);
        }
        // The IP header and the TCP header (at most 60 bytes) are written on the stack, then
        // appended with the payload.
        let mut hdr = [0u8; ipv6::HEADER_LEN + 60];
        let l4 = tcp.header_len() + payload.len();
        let ihl = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = crate::ipv4::HEADER_LEN + l4;
                let total = u16::try_from(total)
                    .map_err(|_| WireError::Build("IPv4 total length above 65,535"))?;
                // RFC 791 §3.1: version 4, IHL 5, TOS 0, total length, identification 0,
                // DF, TTL, protocol 6, checksum, addresses.
                hdr[0] = 0x45;
                hdr[2..4].copy_from_slice(&total.to_be_bytes());
                hdr[6] = 0x40;
                hdr[8] = crate::ipv4::DEFAULT_TTL;
                hdr[9] = IpProto::Tcp.number();
                hdr[12..16].copy_from_slice(&s.octets());
                hdr[16..20].copy_from_slice(&d.octets());
                let c = crate::checksum::ipv4_header(&hdr[..crate::ipv4::HEADER_LEN]);
                hdr[10..12].copy_from_slice(&c.to_be_bytes());
                crate::ipv4::HEADER_LEN
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(l4).map_err(|_| {
                    WireError::Build("IPv6 payload above 65,535 bytes (jumbograms unsupported)")
                })?;
                // RFC 8200 §3: version 6, traffic class and flow label 0, payload length,
                // next header 6, hop limit, addresses.
                hdr[0] = 0x60;
                hdr[4..6].copy_from_slice(&plen.to_be_bytes());
                hdr[6] = IpProto::Tcp.number();
                hdr[7] = ipv6::DEFAULT_HOP_LIMIT;
                hdr[8..24].copy_from_slice(&s.octets());
                hdr[24..40].copy_from_slice(&d.octets());
                ipv6::HEADER_LEN
            }
            _ => return Err(WireError::MixedFamilies),
        };
        let seg = &mut hdr[ihl..];
        let thl = tcp.write_header(seg)?;
        let sum = match payload_sum {
            Some(sum) => {
                debug_assert!(
                    sum.same_as(crate::checksum::BytesSum::of(payload)),
                    "the payload sum given is the payload's"
                );
                sum
            }
            None => crate::checksum::BytesSum::of(payload),
        };
        let c = crate::checksum::transport_split(&seg[..thl], 16, payload.len(), sum, src, dst, 6)?;
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        out.clear();
        out.reserve(ihl + thl + payload.len());
        out.extend_from_slice(&hdr[..ihl + thl]);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// [`PacketBuilder::tcp_segment_into`] for a segment with no TCP option but the MSS
    /// (every segment a scripted stack sends): the headers are made as big-endian words
    /// from the fields, summed from those words, and appended to `out` once each. Nothing
    /// written is read back (summing the bytes just written made each read wait on the
    /// narrower stores before it).
    fn tcp_plain_into(
        src: IpAddr,
        dst: IpAddr,
        tcp: &TcpRepr,
        payload: &[u8],
        payload_sum: Option<crate::checksum::BytesSum>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        use crate::checksum::{BytesSum, finish};
        let sum = match payload_sum {
            Some(sum) => {
                debug_assert!(
                    sum.same_as(BytesSum::of(payload)),
                    "the payload sum given is the payload's"
                );
                sum
            }
            None => BytesSum::of(payload),
        };
        // The MSS option (RFC 9293 §3.2, kind 2, length 4) as one more header word.
        let mss = tcp.mss.map(|m| 0x0204_0000 | u32::from(m));
        let thl = crate::tcp::HEADER_LEN + if mss.is_some() { 4 } else { 0 };
        let l4 = thl + payload.len();
        // RFC 9293 §3.1: ports; sequence number; acknowledgement number; data offset,
        // flags, window; checksum (below) and urgent pointer 0.
        let ports = (u32::from(tcp.sport) << 16) | u32::from(tcp.dport);
        let offset_flags_window =
            ((thl as u32 / 4) << 12 | u32::from(tcp.flags.0)) << 16 | u32::from(tcp.window);
        let head = u64::from(ports)
            + u64::from(tcp.seq.0)
            + u64::from(tcp.ack.0)
            + u64::from(offset_flags_window)
            + u64::from(mss.unwrap_or(0));
        let proto = u64::from(IpProto::Tcp.number());
        let words = |a: u128| {
            u64::from(a as u32)
                + u64::from((a >> 32) as u32)
                + u64::from((a >> 64) as u32)
                + u64::from((a >> 96) as u32)
        };
        out.clear();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(crate::ipv4::HEADER_LEN + l4)
                    .map_err(|_| WireError::Build("IPv4 total length above 65,535"))?;
                let (s, d) = (u32::from(s), u32::from(d));
                // RFC 791 §3.1: version 4, IHL 5, TOS 0, total length; identification 0,
                // DF; TTL, protocol, checksum; addresses.
                let w0 = 0x4500_0000 | u32::from(total);
                let w1: u32 = 0x0000_4000;
                let ttl_proto = (u32::from(crate::ipv4::DEFAULT_TTL) << 24) | (6 << 16);
                let ip_sum = finish(
                    u64::from(w0)
                        + u64::from(w1)
                        + u64::from(ttl_proto)
                        + u64::from(s)
                        + u64::from(d),
                );
                let tcp_sum =
                    finish(head + sum.value() + u64::from(s) + u64::from(d) + proto + l4 as u64);
                out.reserve(crate::ipv4::HEADER_LEN + l4);
                out.extend_from_slice(&((u64::from(w0) << 32) | u64::from(w1)).to_be_bytes());
                out.extend_from_slice(&(ttl_proto | u32::from(ip_sum)).to_be_bytes());
                out.extend_from_slice(&((u64::from(s) << 32) | u64::from(d)).to_be_bytes());
                Self::tcp_plain_words(out, tcp, ports, offset_flags_window, tcp_sum, mss);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(l4).map_err(|_| {
                    WireError::Build("IPv6 payload above 65,535 bytes (jumbograms unsupported)")
                })?;
                let (s, d) = (u128::from(s), u128::from(d));
                let tcp_sum = finish(head + sum.value() + words(s) + words(d) + proto + l4 as u64);
                // RFC 8200 §3: version 6, traffic class and flow label 0; payload length,
                // next header, hop limit; addresses.
                let fixed = (6u64 << 60)
                    | (u64::from(plen) << 16)
                    | (proto << 8)
                    | u64::from(ipv6::DEFAULT_HOP_LIMIT);
                out.reserve(ipv6::HEADER_LEN + l4);
                out.extend_from_slice(&fixed.to_be_bytes());
                out.extend_from_slice(&s.to_be_bytes());
                out.extend_from_slice(&d.to_be_bytes());
                Self::tcp_plain_words(out, tcp, ports, offset_flags_window, tcp_sum, mss);
            }
            _ => return Err(WireError::MixedFamilies),
        }
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Appends the TCP header of [`PacketBuilder::tcp_plain_into`] (with the MSS option's
    /// word when there is one).
    fn tcp_plain_words(
        out: &mut Vec<u8>,
        tcp: &TcpRepr,
        ports: u32,
        ofw: u32,
        checksum: u16,
        mss: Option<u32>,
    ) {
        out.extend_from_slice(&((u64::from(ports) << 32) | u64::from(tcp.seq.0)).to_be_bytes());
        out.extend_from_slice(&((u64::from(tcp.ack.0) << 32) | u64::from(ofw)).to_be_bytes());
        match mss {
            Some(m) => {
                out.extend_from_slice(&((u64::from(checksum) << 48) | u64::from(m)).to_be_bytes())
            }
            None => out.extend_from_slice(&(u32::from(checksum) << 16).to_be_bytes()),
        }
    }

    /// Builds a UDP datagram.
    ///
    /// # Errors
    /// [`WireError::Build`] when too long.
    pub fn udp(&self, udp: &UdpRepr, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = crate::pool::take(ipv6::HEADER_LEN + crate::udp::HEADER_LEN + payload.len());
        let off = self.start(
            &mut out,
            IpProto::Udp,
            crate::udp::HEADER_LEN + payload.len(),
        )?;
        udp.emit(&mut out[off..], payload, self.ip.src(), self.ip.dst())?;
        Ok(out)
    }

    /// Builds an ICMP (v4) message; the builder must be IPv4.
    ///
    /// # Errors
    /// [`WireError::Build`] for an IPv6 builder or a message too long.
    pub fn icmpv4(&self, msg: &Icmpv4Repr, body: &[u8]) -> Result<Vec<u8>> {
        if !self.ip.is_ipv4() {
            return Err(WireError::Build("ICMP (v4) over IPv6"));
        }
        let mut out = crate::pool::take(ipv6::HEADER_LEN + icmp::HEADER_LEN + body.len());
        let off = self.start(&mut out, IpProto::Icmp, icmp::HEADER_LEN + body.len())?;
        msg.emit(&mut out[off..], body)?;
        Ok(out)
    }

    /// Builds an ICMPv6 message; the builder must be IPv6.
    ///
    /// # Errors
    /// [`WireError::Build`] for an IPv4 builder or a message too long.
    pub fn icmpv6(&self, msg: &Icmpv6Repr, body: &[u8]) -> Result<Vec<u8>> {
        let IpHeader::V6(h) = self.ip else {
            return Err(WireError::Build("ICMPv6 over IPv4"));
        };
        let mut out = crate::pool::take(ipv6::HEADER_LEN + icmp::HEADER_LEN + body.len());
        let off = self.start(&mut out, IpProto::Icmpv6, icmp::HEADER_LEN + body.len())?;
        msg.emit(&mut out[off..], body, h.src, h.dst)?;
        Ok(out)
    }

    /// Builds a packet of protocol `proto` whose payload is `payload` as is (e.g. a tunnelled
    /// packet for protocols 4 and 41).
    ///
    /// # Errors
    /// [`WireError::Build`] when too long.
    pub fn raw(&self, proto: IpProto, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = crate::pool::take(ipv6::HEADER_LEN + payload.len());
        self.raw_into(proto, payload, &mut out)?;
        Ok(out)
    }

    /// Like [`PacketBuilder::raw`], into `out` (cleared first).
    ///
    /// # Errors
    /// [`WireError::Build`] when too long.
    pub fn raw_into(&self, proto: IpProto, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // The header is written on the stack, then header and payload are appended: no zero
        // fill of the payload area.
        let mut hdr = [0u8; crate::ipv4::MAX_HEADER_LEN];
        let hl = match self.ip {
            IpHeader::V4(mut h) => {
                h.proto = proto;
                h.emit(&mut hdr, payload.len())?;
                h.header_len()
            }
            IpHeader::V6(mut h) => {
                h.next_header = proto;
                h.emit(&mut hdr, payload.len())?;
                ipv6::HEADER_LEN
            }
        };
        out.clear();
        out.reserve(hl + payload.len());
        out.extend_from_slice(&hdr[..hl]);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Clears `out`, sizes it for the packet, writes the IP header; returns the payload offset.
    fn start(&self, out: &mut Vec<u8>, proto: IpProto, l4_len: usize) -> Result<usize> {
        self.start_prefix(out, proto, l4_len, l4_len)
    }

    /// Clears `out`, writes the IP header of a packet carrying `l4_len` bytes of `proto`,
    /// followed by `zeroed` zero bytes (the part of the upper layer the caller writes in
    /// place; it appends the rest). Returns the IP header's length.
    fn start_prefix(
        &self,
        out: &mut Vec<u8>,
        proto: IpProto,
        l4_len: usize,
        zeroed: usize,
    ) -> Result<usize> {
        out.clear();
        match self.ip {
            IpHeader::V4(mut h) => {
                h.proto = proto;
                let hl = h.header_len();
                out.reserve(hl + l4_len);
                out.resize(hl + zeroed, 0);
                h.emit(out, l4_len)?;
                Ok(hl)
            }
            IpHeader::V6(mut h) => {
                h.next_header = proto;
                out.reserve(ipv6::HEADER_LEN + l4_len);
                out.resize(ipv6::HEADER_LEN + zeroed, 0);
                h.emit(out, l4_len)?;
                Ok(ipv6::HEADER_LEN)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpFlags;

    #[test]
    fn decrement_ttl_keeps_the_checksum_right_and_stops_at_one() {
        for (s, d) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let t = TcpRepr {
                flags: TcpFlags::SYN,
                ..TcpRepr::default()
            };
            let mut b = PacketBuilder::new(s.parse().unwrap(), d.parse().unwrap())
                .unwrap()
                .ttl(2)
                .tcp(&t, &[])
                .unwrap();
            assert!(decrement_ttl(&mut b));
            let p = Packet::parse(&b, true).unwrap();
            assert_eq!(p.ip.ttl(), 1);
            assert!(!decrement_ttl(&mut b));
            assert_eq!(Packet::parse(&b, true).unwrap().ip.ttl(), 1);
        }
        assert!(!decrement_ttl(&mut []));
        assert!(!decrement_ttl(&mut [0x45, 0, 0]));
    }

    use proptest::prelude::*;

    proptest! {
        // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
        /// The one-pass writers give the builder's bytes, with and without a payload sum,
        /// over both families and every option combination (half of the cases with no
        /// option but the MSS: the word-by-word writer's, every segment a scripted stack
        /// sends), and leave nothing of the buffer's last use.
        #[test]
        fn one_pass_segment_equals_the_builder(
            v6 in any::<bool>(), s in any::<u128>(), d in any::<u128>(),
            ports in any::<(u16, u16)>(), seq in any::<u32>(), ack in any::<u32>(),
            flags in any::<u8>(), window in any::<u16>(),
            mss in proptest::option::of(any::<u16>()), sack in any::<bool>(),
            ws in proptest::option::of(any::<u8>()), plain in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
        ) {
            let (sack, ws) = if plain { (false, None) } else { (sack, ws) };
            let (src, dst) = if v6 {
                (IpAddr::V6(s.into()), IpAddr::V6(d.into()))
            } else {
                (IpAddr::V4((s as u32).into()), IpAddr::V4((d as u32).into()))
            };
            let t = TcpRepr {
                sport: ports.0, dport: ports.1, seq: crate::TcpSeq(seq), ack: crate::TcpSeq(ack),
                flags: TcpFlags(flags), window, mss, sack_permitted: sack, window_scale: ws,
            };
            let want = PacketBuilder::new(src, dst).unwrap().tcp(&t, &payload).unwrap();
            let mut got = vec![0xa5; 77];
            PacketBuilder::tcp_segment_into(src, dst, &t, &payload, None, &mut got).unwrap();
            prop_assert_eq!(&got, &want);
            let sum = crate::checksum::BytesSum::of(&payload);
            PacketBuilder::tcp_segment_into(src, dst, &t, &payload, Some(sum), &mut got).unwrap();
            prop_assert_eq!(&got, &want);
            prop_assert!(Packet::parse(&got, true).is_ok());
        }
    }

    #[test]
    fn one_pass_segment_refuses_mixed_families_and_oversize() {
        let t = TcpRepr::default();
        let mut out = Vec::new();
        let (v4, v6): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        assert!(matches!(
            PacketBuilder::tcp_segment_into(v4, v6, &t, &[], None, &mut out),
            Err(WireError::MixedFamilies)
        ));
        let big = vec![0u8; 65_536];
        assert!(matches!(
            PacketBuilder::tcp_segment_into(v4, v4, &t, &big, None, &mut out),
            Err(WireError::Build(_))
        ));
        assert!(matches!(
            PacketBuilder::tcp_segment_into(v6, v6, &t, &big, None, &mut out),
            Err(WireError::Build(_))
        ));
    }
}
