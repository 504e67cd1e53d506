//! pcap files of raw IP packets, readable by tcpdump and Wireshark.
//!
//! Format: the classic libpcap file (not pcapng) with the nanosecond-resolution magic
//! `0xa1b23c4d`, version 2.4, link type `LINKTYPE_RAW` (101: each record is an IPv4 or IPv6
//! packet with no link-layer header), written little-endian. Record timestamps are the virtual
//! time of the packet, so a capture of a run shows simulated seconds since its start.

use std::io::{Read, Write};

use crate::error::{Layer, Result, WireError};
use crate::time::Instant;

/// Magic number of a nanosecond-resolution pcap file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Magic number of a microsecond-resolution pcap file.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_RAW`: raw IPv4/IPv6 packets.
pub const LINKTYPE_RAW: u32 = 101;
/// Snapshot length written in the header (the largest record length allowed).
pub const SNAPLEN: u32 = 262_144;

/// Writes packets to a pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header and returns the writer.
    ///
    /// # Errors
    /// [`WireError::Io`] when the header cannot be written.
    pub fn new(mut out: W) -> Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (8..12) and sigfigs (12..16) are zero.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self { out, records: 0 })
    }

    /// Appends one packet captured at virtual time `at`.
    ///
    /// # Errors
    /// [`WireError::Io`] on a write error; [`WireError::Build`] for a packet longer than the
    /// snapshot length or a time beyond what a 32-bit seconds field holds.
    pub fn write_packet(&mut self, at: Instant, packet: &[u8]) -> Result<()> {
        let len = u32::try_from(packet.len())
            .ok()
            .filter(|&l| l <= SNAPLEN)
            .ok_or(WireError::Build(
                "packet longer than the pcap snapshot length",
            ))?;
        let (secs, nanos) = at.secs_and_subsec_nanos();
        let secs = u32::try_from(secs).map_err(|_| WireError::Build("time beyond 2^32 s"))?;
        let mut r = [0u8; 16];
        r[0..4].copy_from_slice(&secs.to_le_bytes());
        r[4..8].copy_from_slice(&nanos.to_le_bytes());
        r[8..12].copy_from_slice(&len.to_le_bytes());
        r[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&r)?;
        self.out.write_all(packet)?;
        self.records += 1;
        Ok(())
    }

    /// Number of packets written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the underlying stream.
    ///
    /// # Errors
    /// [`WireError::Io`] when flushing fails.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record read back from a pcap file.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PcapRecord {
    /// Capture time.
    pub at: Instant,
    /// Packet bytes.
    pub data: Vec<u8>,
}

/// Reads a whole pcap stream of link type RAW (either timestamp resolution, either byte
/// order).
///
/// # Errors
/// Bad magic, another link type, a truncated record, or an I/O error.
pub fn read_all<R: Read>(mut input: R) -> Result<Vec<PcapRecord>> {
    let mut buf = Vec::new();
    input.read_to_end(&mut buf)?;
    let trunc = |needed, available, what| WireError::Truncated {
        layer: Layer::Pcap,
        offset: 0,
        needed,
        available,
        what,
    };
    if buf.len() < 24 {
        return Err(trunc(24, buf.len(), "file header"));
    }
    let magic_le = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let (big_endian, nanos) = match (magic_le, magic_le.swap_bytes()) {
        (MAGIC_NANOS, _) => (false, true),
        (MAGIC_MICROS, _) => (false, false),
        (_, MAGIC_NANOS) => (true, true),
        (_, MAGIC_MICROS) => (true, false),
        _ => {
            return Err(WireError::Unsupported {
                layer: Layer::Pcap,
                what: "magic",
                value: magic_le,
            });
        }
    };
    let rd = |b: &[u8], at: usize| {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    let linktype = rd(&buf, 20);
    if linktype != LINKTYPE_RAW {
        return Err(WireError::Unsupported {
            layer: Layer::Pcap,
            what: "link type",
            value: linktype,
        });
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < buf.len() {
        if buf.len() - at < 16 {
            return Err(trunc(at + 16, buf.len(), "record header"));
        }
        let secs = u64::from(rd(&buf, at));
        let frac = u64::from(rd(&buf, at + 4));
        let incl = rd(&buf, at + 8) as usize;
        at += 16;
        if buf.len() - at < incl {
            return Err(trunc(at + incl, buf.len(), "record data"));
        }
        let ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1_000 };
        out.push(PcapRecord {
            at: Instant::from_nanos(ns),
            data: buf[at..at + incl].to_vec(),
        });
        at += incl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_packet(Instant::from_nanos(1_500_000_123), &[0x45, 0, 0, 20])
            .unwrap();
        w.write_packet(Instant::from_secs(2), &[0x60; 40]).unwrap();
        assert_eq!(w.records(), 2);
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        let recs = read_all(bytes.as_slice()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].at, Instant::from_nanos(1_500_000_123));
        assert_eq!(recs[1].data, vec![0x60; 40]);
        assert!(read_all(&bytes[..bytes.len() - 1]).is_err());
        assert!(read_all(&[0u8; 24][..]).is_err());
    }
}
