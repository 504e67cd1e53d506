//! Errors of the wire crate: what failed, at which layer and byte offset.

use thiserror::Error;

/// The protocol layer an error was found in.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Layer {
    /// The IPv4 header.
    Ipv4,
    /// The IPv6 header (or one of its extension headers).
    Ipv6,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
    /// The ICMP (v4) header.
    Icmpv4,
    /// The ICMPv6 header.
    Icmpv6,
    /// The packet quoted inside an ICMP error.
    IcmpQuote,
    /// A pcap file.
    Pcap,
}

impl core::fmt::Display for Layer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Icmpv4 => "ICMP",
            Self::Icmpv6 => "ICMPv6",
            Self::IcmpQuote => "ICMP-quoted packet",
            Self::Pcap => "pcap",
        })
    }
}

/// Why bytes could not be parsed, or a packet could not be built.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a header or a length field requires.
    #[error(
        "{layer} at byte {offset}: truncated, {needed} bytes needed ({what}) but {available} available"
    )]
    Truncated {
        /// Layer being parsed.
        layer: Layer,
        /// Offset of the layer's first byte within the buffer given.
        offset: usize,
        /// Bytes the layer needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
        /// Which field or rule implied `needed` (e.g. "header length field").
        what: &'static str,
    },
    /// The IP version nibble is neither 4 nor 6 (or not the one expected).
    #[error("byte {offset}: IP version {version} where {expected} was expected")]
    BadVersion {
        /// Offset of the IP header.
        offset: usize,
        /// Version found.
        version: u8,
        /// What was expected ("4", "6" or "4 or 6").
        expected: &'static str,
    },
    /// A header length field below its minimum or otherwise impossible.
    #[error("{layer} at byte {offset}: bad header length {value} ({why})")]
    BadHeaderLength {
        /// Layer being parsed.
        layer: Layer,
        /// Offset of the layer.
        offset: usize,
        /// The raw value found.
        value: usize,
        /// Why it is impossible.
        why: &'static str,
    },
    /// A checksum does not verify.
    #[error("{layer} at byte {offset}: bad checksum {found:#06x}, expected {expected:#06x}")]
    BadChecksum {
        /// Layer whose checksum failed.
        layer: Layer,
        /// Offset of the layer.
        offset: usize,
        /// Checksum in the packet.
        found: u16,
        /// Checksum computed over the bytes.
        expected: u16,
    },
    /// A protocol tierlab cannot parse at this place.
    #[error("{layer}: unsupported {what} {value}")]
    Unsupported {
        /// Layer where it was found.
        layer: Layer,
        /// What kind of value ("next header", "ICMP type", "link type").
        what: &'static str,
        /// The value.
        value: u32,
    },
    /// A packet cannot be built as asked (too big, mixed address families, bad option...).
    #[error("cannot build packet: {0}")]
    Build(&'static str),
    /// Source and destination addresses of different families.
    #[error("source and destination addresses are of different IP families")]
    MixedFamilies,
    /// A fragment that overlaps data already received, or that reassembles past 65,535 bytes.
    #[error("fragment rejected: {0}")]
    BadFragment(&'static str),
    /// An I/O error while writing or reading a pcap file.
    #[error("pcap I/O: {0}")]
    Io(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Result of the wire crate.
pub type Result<T> = core::result::Result<T, WireError>;

/// Checks that `buf` holds at least `needed` bytes for `layer` at `offset`.
pub(crate) fn need(
    buf: &[u8],
    needed: usize,
    layer: Layer,
    offset: usize,
    what: &'static str,
) -> Result<()> {
    if buf.len() < needed {
        Err(WireError::Truncated {
            layer,
            offset,
            needed,
            available: buf.len(),
            what,
        })
    } else {
        Ok(())
    }
}
