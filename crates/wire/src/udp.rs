//! UDP header ([`UdpRepr`]).

use std::net::IpAddr;

use pnet_packet::udp::UdpPacket;

use crate::error::{Layer, Result, WireError, need};
use crate::tcp::transport_checksum;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// The fields of a UDP header (length and checksum are derived).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct UdpRepr {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl UdpRepr {
    /// Parses a UDP header at the start of `buf` (the whole datagram) and returns it with the
    /// datagram length from its length field. With `verify`, checks the checksum (a zero
    /// checksum over IPv4 means "none" and passes, as RFC 768 allows; over IPv6 it is an error).
    ///
    /// # Errors
    /// Truncated header, length field below 8 or beyond the buffer, bad checksum.
    pub fn parse(
        buf: &[u8],
        offset: usize,
        verify: Option<(IpAddr, IpAddr)>,
    ) -> Result<(Self, usize)> {
        need(buf, HEADER_LEN, Layer::Udp, offset, "header")?;
        let v = UdpPacket::new(buf).ok_or(WireError::Truncated {
            layer: Layer::Udp,
            offset,
            needed: HEADER_LEN,
            available: buf.len(),
            what: "header",
        })?;
        let len = usize::from(v.get_length());
        if len < HEADER_LEN {
            return Err(WireError::BadHeaderLength {
                layer: Layer::Udp,
                offset,
                value: len,
                why: "length field below 8",
            });
        }
        need(buf, len, Layer::Udp, offset, "length field")?;
        if let Some((src, dst)) = verify {
            let found = v.get_checksum();
            if !(found == 0 && src.is_ipv4()) {
                let mut expected = transport_checksum(&buf[..len], 6, src, dst, 17)?;
                if expected == 0 {
                    expected = 0xffff;
                }
                if expected != found {
                    return Err(WireError::BadChecksum {
                        layer: Layer::Udp,
                        offset,
                        found,
                        expected,
                    });
                }
            }
        }
        Ok((
            Self {
                sport: v.get_source(),
                dport: v.get_destination(),
            },
            len,
        ))
    }

    /// Writes header and payload into `buf` with length and checksum.
    ///
    /// # Errors
    /// [`WireError::Build`] on a short buffer or a datagram above 65,535 bytes.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8], src: IpAddr, dst: IpAddr) -> Result<()> {
        let len = HEADER_LEN + payload.len();
        if len > usize::from(u16::MAX) || buf.len() < len {
            return Err(WireError::Build(
                "UDP datagram too long or buffer too short",
            ));
        }
        buf[0..2].copy_from_slice(&self.sport.to_be_bytes());
        buf[2..4].copy_from_slice(&self.dport.to_be_bytes());
        buf[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        buf[6..8].fill(0);
        buf[8..len].copy_from_slice(payload);
        let mut c = transport_checksum(&buf[..len], 6, src, dst, 17)?;
        if c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        buf[6..8].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_families() {
        for (s, d) in [
            ("203.0.113.1", "198.51.100.53"),
            ("2001:db8::1", "2001:db8::35"),
        ] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let r = UdpRepr {
                sport: 5353,
                dport: 53,
            };
            let mut b = vec![0; 8 + 5];
            r.emit(&mut b, b"hello", s, d).unwrap();
            assert_eq!(UdpRepr::parse(&b, 0, Some((s, d))).unwrap(), (r, 13));
            b[9] ^= 0xff;
            assert!(UdpRepr::parse(&b, 0, Some((s, d))).is_err());
        }
    }
}
