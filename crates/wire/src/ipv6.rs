//! IPv6 header ([`Ipv6Repr`]) and the fragment extension header.
//!
//! Panic contract: [`Ipv6Repr::parse`] never panics; [`Ipv6Repr::emit`] returns an error on a
//! short buffer.

use std::net::Ipv6Addr;

use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

use crate::error::{Layer, Result, WireError, need};
use crate::flow::FLOW_LABEL_MASK;
use crate::proto::IpProto;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Length of the fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;
/// Linux's default hop limit (`net.ipv6.conf.*.hop_limit`).
pub const DEFAULT_HOP_LIMIT: u8 = 64;
/// The minimum IPv6 MTU (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

/// The fields of the fixed IPv6 header.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header (the payload protocol, or an extension header).
    pub next_header: IpProto,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// A header with Linux's defaults: hop limit 64, traffic class 0, flow label 0.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProto) -> Self {
        Self {
            src,
            dst,
            next_header,
            hop_limit: DEFAULT_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    /// Parses the fixed header; returns it and the packet's length (40 + payload length).
    ///
    /// # Errors
    /// Truncated buffer, version not 6, payload length beyond the buffer, or a jumbogram
    /// (payload length 0 with a hop-by-hop header), which tierlab does not support.
    pub fn parse(buf: &[u8]) -> Result<(Self, usize)> {
        need(buf, HEADER_LEN, Layer::Ipv6, 0, "fixed header")?;
        let version = buf[0] >> 4;
        if version != 6 {
            return Err(WireError::BadVersion {
                offset: 0,
                version,
                expected: "6",
            });
        }
        let v = Ipv6Packet::new(buf).ok_or(WireError::Truncated {
            layer: Layer::Ipv6,
            offset: 0,
            needed: HEADER_LEN,
            available: buf.len(),
            what: "fixed header",
        })?;
        let plen = usize::from(v.get_payload_length());
        let next_header = IpProto::from(v.get_next_header().0);
        if plen == 0 && next_header == IpProto::Unknown(0) {
            return Err(WireError::Unsupported {
                layer: Layer::Ipv6,
                what: "jumbogram (payload length 0 with hop-by-hop options)",
                value: 0,
            });
        }
        need(
            buf,
            HEADER_LEN + plen,
            Layer::Ipv6,
            0,
            "payload length field",
        )?;
        Ok((
            Self {
                src: v.get_source(),
                dst: v.get_destination(),
                next_header,
                hop_limit: v.get_hop_limit(),
                traffic_class: v.get_traffic_class(),
                flow_label: v.get_flow_label(),
            },
            HEADER_LEN + plen,
        ))
    }

    /// Writes the fixed header for a payload of `payload_len` bytes.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer or a payload above 65,535 bytes.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<()> {
        if payload_len > usize::from(u16::MAX) {
            return Err(WireError::Build(
                "IPv6 payload above 65,535 bytes (jumbograms unsupported)",
            ));
        }
        let mut v = MutableIpv6Packet::new(buf)
            .ok_or(WireError::Build("buffer shorter than the IPv6 header"))?;
        v.set_version(6);
        v.set_traffic_class(self.traffic_class);
        v.set_flow_label(self.flow_label & FLOW_LABEL_MASK);
        v.set_payload_length(payload_len as u16);
        v.set_next_header(IpNextHeaderProtocol(self.next_header.number()));
        v.set_hop_limit(self.hop_limit);
        v.set_source(self.src);
        v.set_destination(self.dst);
        Ok(())
    }
}

/// The IPv6 fragment extension header (RFC 8200 §4.5).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Ipv6FragRepr {
    /// Protocol of the fragmentable part.
    pub next_header: IpProto,
    /// Offset of this fragment in bytes (multiple of 8).
    pub offset: u16,
    /// More fragments follow.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl Ipv6FragRepr {
    /// Parses a fragment header at `buf[0..8]`; `offset` is its place in the packet (for errors).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 8 bytes.
    pub fn parse(buf: &[u8], offset: usize) -> Result<Self> {
        need(buf, FRAG_HEADER_LEN, Layer::Ipv6, offset, "fragment header")?;
        let off_flags = u16::from_be_bytes([buf[2], buf[3]]);
        Ok(Self {
            next_header: IpProto::from(buf[0]),
            offset: off_flags & 0xfff8,
            more_frags: off_flags & 1 != 0,
            ident: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        })
    }

    /// Writes the header into `buf[0..8]`.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer or an offset not a multiple of 8.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < FRAG_HEADER_LEN || !self.offset.is_multiple_of(8) {
            return Err(WireError::Build(
                "bad IPv6 fragment header buffer or offset",
            ));
        }
        buf[0] = self.next_header.number();
        buf[1] = 0;
        buf[2..4].copy_from_slice(&(self.offset | u16::from(self.more_frags)).to_be_bytes());
        buf[4..8].copy_from_slice(&self.ident.to_be_bytes());
        Ok(())
    }
}

/// Whether `proto` is an IPv6 extension header that tierlab walks over to find the upper layer
/// (hop-by-hop 0, routing 43, destination options 60). The fragment header (44) is handled apart.
pub(crate) fn is_skippable_ext(proto: IpProto) -> bool {
    matches!(proto, IpProto::Unknown(0 | 43 | 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let r = Ipv6Repr {
            src: "2001:db8::cb00:7107".parse().unwrap(),
            dst: "2001:db8::c633:6401".parse().unwrap(),
            next_header: IpProto::Tcp,
            hop_limit: 63,
            traffic_class: 0x28,
            flow_label: 0xabcde,
        };
        let mut b = vec![0u8; 60];
        r.emit(&mut b, 20).unwrap();
        assert_eq!(b[0], 0x62);
        let (p, len) = Ipv6Repr::parse(&b).unwrap();
        assert_eq!((p, len), (r, 60));
        assert!(matches!(
            Ipv6Repr::parse(&b[..59]),
            Err(WireError::Truncated { needed: 60, .. })
        ));
        b[0] = 0x45;
        assert!(matches!(
            Ipv6Repr::parse(&b),
            Err(WireError::BadVersion { .. })
        ));
    }

    #[test]
    fn fragment_header_round_trip() {
        let f = Ipv6FragRepr {
            next_header: IpProto::Tcp,
            offset: 1448,
            more_frags: true,
            ident: 7,
        };
        let mut b = [0u8; 8];
        f.emit(&mut b).unwrap();
        assert_eq!(Ipv6FragRepr::parse(&b, 40).unwrap(), f);
    }
}
