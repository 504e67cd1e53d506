//! IP fragmentation and reassembly.
//!
//! - [`fragment_v4`] splits an IPv4 packet as Linux's `ip_do_fragment` (net/ipv4/ip_output.c,
//!   v6.x, slow path) does: each fragment carries `(mtu - header_len) & !7` bytes of data
//!   except the last; later fragments keep only options with the "copied" bit
//!   (`ip_options_fragment`); a packet that is already a fragment keeps its offset base and
//!   its MF flag on the last piece.
//! - [`fragment_v6`] splits an IPv6 packet with a fragment header as `ip6_fragment`
//!   (net/ipv6/ip6_output.c) does for a packet without extension headers.
//! - [`Reassembler`] rebuilds IPv4 datagrams as `ip_defrag` (net/ipv4/ip_fragment.c) does, and
//!   IPv6 ones likewise (`ipv6_frag_rcv`): queues keyed by (source, destination, protocol,
//!   identification); an exact duplicate is
//!   ignored; any other overlap discards the whole queue (Linux ≥ 4.19, "FragmentSmack" fix);
//!   queues expire after `ipfrag_time` (30 s by default) of virtual time.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::{Layer, Result, WireError};
use crate::ipv4::Ipv4Repr;
use crate::ipv6::{self, Ipv6FragRepr, Ipv6Repr};
use crate::packet::{IpHeader, PacketBuilder};
use crate::proto::IpProto;
use crate::time::{Duration, Instant};

/// Linux's default reassembly timeout (`net.ipv4.ipfrag_time`).
pub const IPFRAG_TIME: Duration = Duration::from_secs(30);

/// Splits the IPv4 packet `packet` into fragments that fit `mtu` bytes. A packet that already
/// fits is returned as the only element, unchanged.
///
/// # Errors
/// The packet does not parse, its DF flag is set and `ignore_df` is false, or the MTU leaves no
/// room for 8 bytes of data after the header.
pub fn fragment_v4(packet: &[u8], mtu: usize, ignore_df: bool) -> Result<Vec<Vec<u8>>> {
    let (h, total) = Ipv4Repr::parse(packet, false)?;
    if total <= mtu {
        return Ok(vec![packet[..total].to_vec()]);
    }
    if h.dont_frag && !ignore_df {
        return Err(WireError::Build(
            "IPv4 packet larger than the MTU with DF set",
        ));
    }
    let hlen = h.header_len();
    if mtu < hlen + 8 {
        return Err(WireError::Build("MTU leaves no room for fragment data"));
    }
    let step = (mtu - hlen) & !7;
    let data = &packet[hlen..total];
    let later_options = h.options.for_later_fragment();
    let mut out = Vec::with_capacity(data.len().div_ceil(step));
    let mut off = 0;
    while off < data.len() {
        let len = step.min(data.len() - off);
        let last = off + len == data.len();
        let mut fh = h;
        if off > 0 {
            fh.options = later_options;
        }
        fh.frag_offset = h
            .frag_offset
            .checked_add(
                u16::try_from(off).map_err(|_| WireError::Build("fragment offset overflow"))?,
            )
            .ok_or(WireError::Build("fragment offset overflow"))?;
        fh.more_frags = !last || h.more_frags;
        let mut frag = vec![0; hlen + len];
        fh.emit(&mut frag, len)?;
        frag[hlen..].copy_from_slice(&data[off..off + len]);
        out.push(frag);
        off += len;
    }
    Ok(out)
}

/// Splits an IPv6 packet (fixed header, no extension headers) into fragments of at most `mtu`
/// bytes with a fragment header carrying `ident`. A packet that fits is returned unchanged.
///
/// # Errors
/// The packet does not parse, or the MTU is below 1280 (IPv6's minimum).
pub fn fragment_v6(packet: &[u8], mtu: usize, ident: u32) -> Result<Vec<Vec<u8>>> {
    let (h, total) = Ipv6Repr::parse(packet)?;
    if total <= mtu {
        return Ok(vec![packet[..total].to_vec()]);
    }
    if mtu < ipv6::MIN_MTU {
        return Err(WireError::Build("IPv6 MTU below 1280"));
    }
    let unfrag = ipv6::HEADER_LEN;
    let step = (mtu - unfrag - ipv6::FRAG_HEADER_LEN) & !7;
    let data = &packet[unfrag..total];
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let len = step.min(data.len() - off);
        let fr = Ipv6FragRepr {
            next_header: h.next_header,
            offset: off as u16,
            more_frags: off + len < data.len(),
            ident,
        };
        let mut frag = vec![0; unfrag + ipv6::FRAG_HEADER_LEN + len];
        Ipv6Repr {
            next_header: IpProto::Ipv6Frag,
            ..h
        }
        .emit(&mut frag, ipv6::FRAG_HEADER_LEN + len)?;
        fr.emit(&mut frag[unfrag..])?;
        frag[unfrag + ipv6::FRAG_HEADER_LEN..].copy_from_slice(&data[off..off + len]);
        out.push(frag);
        off += len;
    }
    Ok(out)
}

/// The key of a reassembly queue: (source, destination, protocol, identification). IPv4
/// identifications are 16 bits, IPv6 ones 32.
type QueueKey = (IpAddr, IpAddr, u8, u32);

#[derive(Debug)]
struct Queue {
    first_seen: Instant,
    /// Header to rebuild the datagram with: the first fragment's (offset 0).
    first: Option<IpHeader>,
    /// Data pieces by offset.
    pieces: BTreeMap<usize, Vec<u8>>,
    /// Total data length, known once the last fragment (MF clear) arrived.
    total: Option<usize>,
}

/// What [`Reassembler::push`] did with a packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Reassembly {
    /// Not a fragment: the packet is complete as it is.
    NotFragment,
    /// Fragment stored; the datagram is not complete yet.
    Pending,
    /// The datagram is complete: here it is, rebuilt (header of the first fragment, fragment
    /// fields or fragment header removed, lengths and checksum recomputed).
    Complete(Vec<u8>),
    /// An exact duplicate of a fragment already held: ignored.
    Duplicate,
}

/// IPv4 and IPv6 reassembly queues, expired on virtual time. IPv6 fragments are accepted when
/// the fragment header directly follows the fixed header (what [`fragment_v6`] and IPVS
/// produce); other extension-header layouts are refused with [`WireError::Unsupported`].
#[derive(Debug, Default)]
pub struct Reassembler {
    queues: BTreeMap<QueueKey, Queue>,
    timeout: Option<Duration>,
}

impl Reassembler {
    /// A reassembler with Linux's 30 s timeout.
    pub fn new() -> Self {
        Self {
            queues: BTreeMap::new(),
            timeout: Some(IPFRAG_TIME),
        }
    }

    /// A reassembler with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            queues: BTreeMap::new(),
            timeout: Some(timeout),
        }
    }

    /// Number of incomplete datagrams held.
    pub fn pending(&self) -> usize {
        self.queues.len()
    }

    /// Drops queues older than the timeout; returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let Some(t) = self.timeout else { return 0 };
        let before = self.queues.len();
        self.queues.retain(|_, q| now - q.first_seen < t);
        before - self.queues.len()
    }

    /// Offers an IPv4 or IPv6 packet.
    ///
    /// # Errors
    /// The packet does not parse, its fragment overlaps held data (the whole queue is
    /// discarded, as Linux does), or the datagram would exceed 65,535 bytes.
    pub fn push(&mut self, now: Instant, packet: &[u8]) -> Result<Reassembly> {
        // Headers only: a first fragment may be too short to hold its transport header.
        let (key, header, start, more, data) = match packet.first().map(|b| b >> 4) {
            Some(6) => {
                let (h, len) = Ipv6Repr::parse(packet)?;
                let ul = crate::icmp::upper_layer_v6(packet, len)?;
                let Some((offset, more, ident)) = ul.frag else {
                    return Ok(Reassembly::NotFragment);
                };
                if h.next_header != IpProto::Ipv6Frag {
                    return Err(WireError::Unsupported {
                        layer: Layer::Ipv6,
                        what: "extension header before the fragment header",
                        value: u32::from(h.next_header.number()),
                    });
                }
                let hdr = IpHeader::V6(Ipv6Repr {
                    next_header: ul.proto,
                    ..h
                });
                let key = (h.src.into(), h.dst.into(), ul.proto.number(), ident);
                (key, hdr, usize::from(offset), more, &packet[ul.offset..len])
            }
            _ => {
                let (h, len) = Ipv4Repr::parse(packet, false)?;
                if !h.is_fragment() {
                    return Ok(Reassembly::NotFragment);
                }
                let key = (
                    h.src.into(),
                    h.dst.into(),
                    h.proto.number(),
                    u32::from(h.ident),
                );
                let data = &packet[h.header_len()..len];
                (
                    key,
                    IpHeader::V4(h),
                    usize::from(h.frag_offset),
                    h.more_frags,
                    data,
                )
            }
        };
        self.expire(now);
        let hlen = match header {
            IpHeader::V4(h) => h.header_len(),
            IpHeader::V6(_) => 0,
        };
        let end = start + data.len();
        if end + hlen > usize::from(u16::MAX) {
            self.queues.remove(&key);
            return Err(WireError::BadFragment("datagram would exceed 65,535 bytes"));
        }
        if more && !data.len().is_multiple_of(8) {
            self.queues.remove(&key);
            return Err(WireError::BadFragment(
                "non-last fragment length not a multiple of 8",
            ));
        }
        let q = self.queues.entry(key).or_insert_with(|| Queue {
            first_seen: now,
            first: None,
            pieces: BTreeMap::new(),
            total: None,
        });
        if q.pieces.get(&start).is_some_and(|d| d.as_slice() == data) {
            return Ok(Reassembly::Duplicate);
        }
        let overlaps = q
            .pieces
            .range(..end)
            .next_back()
            .is_some_and(|(&s, d)| s + d.len() > start);
        let past_end = q.total.is_some_and(|t| end > t || (!more && end != t));
        if overlaps || past_end {
            self.queues.remove(&key);
            return Err(WireError::BadFragment(
                "fragment overlaps data already received",
            ));
        }
        if !more {
            q.total = Some(end);
        }
        if start == 0 {
            q.first = Some(header);
        }
        q.pieces.insert(start, data.to_vec());
        let (Some(total), Some(first)) = (q.total, q.first) else {
            return Ok(Reassembly::Pending);
        };
        let mut covered = 0;
        for (&s, d) in &q.pieces {
            if s != covered {
                return Ok(Reassembly::Pending);
            }
            covered += d.len();
        }
        if covered != total {
            return Ok(Reassembly::Pending);
        }
        let q = self.queues.remove(&key).expect("queue present: just used");
        let mut body = Vec::with_capacity(total);
        for d in q.pieces.values() {
            body.extend_from_slice(d);
        }
        let header = match first {
            IpHeader::V4(h) => IpHeader::V4(Ipv4Repr {
                more_frags: false,
                frag_offset: 0,
                ..h
            }),
            v6 => v6,
        };
        let proto = match header {
            IpHeader::V4(h) => h.proto,
            IpHeader::V6(h) => h.next_header,
        };
        Ok(Reassembly::Complete(
            PacketBuilder::from_header(header).raw(proto, &body)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, PacketBuilder};
    use crate::tcp::{TcpFlags, TcpRepr, TcpSeq};

    fn big_packet(len: usize, df: bool) -> Vec<u8> {
        let tcp = TcpRepr {
            sport: 1234,
            dport: 80,
            seq: TcpSeq(9),
            ack: TcpSeq(3),
            flags: TcpFlags::ACK,
            window: 100,
            ..TcpRepr::default()
        };
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        PacketBuilder::new(
            "203.0.113.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
        .unwrap()
        .ident(0x4242)
        .dont_frag(df)
        .tcp(&tcp, &payload)
        .unwrap()
    }

    #[test]
    fn fragments_like_linux_and_reassemble() {
        let p = big_packet(3000, false);
        let frags = fragment_v4(&p, 1500, false).unwrap();
        let lens: Vec<usize> = frags.iter().map(Vec::len).collect();
        // 3040 bytes: 20 + 1480, 20 + 1480, 20 + 60.
        assert_eq!(lens, vec![1500, 1500, 80]);
        for f in &frags {
            Ipv4Repr::parse(f, true).unwrap();
        }
        let mut r = Reassembler::new();
        // Out of order: last first.
        assert_eq!(
            r.push(Instant::ZERO, &frags[2]).unwrap(),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(Instant::ZERO, &frags[0]).unwrap(),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(Instant::ZERO, &frags[0]).unwrap(),
            Reassembly::Duplicate
        );
        match r.push(Instant::ZERO, &frags[1]).unwrap() {
            Reassembly::Complete(whole) => {
                assert_eq!(whole, p);
                Packet::parse(&whole, true).unwrap();
            }
            other => panic!("expected complete, got {other:?}"),
        }
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn df_is_respected_unless_ignored() {
        let p = big_packet(2000, true);
        assert!(fragment_v4(&p, 1500, false).is_err());
        assert_eq!(fragment_v4(&p, 1500, true).unwrap().len(), 2);
        assert_eq!(fragment_v4(&p, 4000, false).unwrap(), vec![p]);
    }

    #[test]
    fn overlap_discards_queue_and_timeout_expires() {
        let p = big_packet(3000, false);
        let frags = fragment_v4(&p, 1500, false).unwrap();
        let mut bad = fragment_v4(&p, 1000, false).unwrap()[1].clone(); // offset 976: overlaps 0..1480
        let mut r = Reassembler::new();
        r.push(Instant::ZERO, &frags[0]).unwrap();
        assert!(r.push(Instant::ZERO, &bad).is_err());
        assert_eq!(r.pending(), 0);
        bad.clear();
        r.push(Instant::ZERO, &frags[0]).unwrap();
        assert_eq!(r.expire(Instant::from_secs(29)), 0);
        assert_eq!(r.expire(Instant::from_secs(30)), 1);
    }

    #[test]
    fn v6_fragments_carry_a_fragment_header() {
        let tcp = TcpRepr {
            sport: 1,
            dport: 2,
            flags: TcpFlags::ACK,
            ..TcpRepr::default()
        };
        let p = PacketBuilder::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
        .unwrap()
        .tcp(&tcp, &[7u8; 3000])
        .unwrap();
        let frags = fragment_v6(&p, 1280, 99).unwrap();
        assert_eq!(frags.len(), 3);
        let first = Packet::parse(&frags[0], false).unwrap();
        assert_eq!(first.ipv6_frag, Some((0, true, 99)));
        assert_eq!(first.tcp().unwrap().dport, 2);
        let second = Packet::parse(&frags[1], false).unwrap();
        assert_eq!(second.ipv6_frag, Some((1232, true, 99)));
        let total: usize = frags.iter().map(|f| f.len() - 48).sum();
        assert_eq!(total, p.len() - 40);
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(Instant::ZERO, &frags[1]).unwrap(),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(Instant::ZERO, &frags[2]).unwrap(),
            Reassembly::Pending
        );
        assert_eq!(
            r.push(Instant::ZERO, &frags[0]).unwrap(),
            Reassembly::Complete(p.clone())
        );
        assert_eq!(r.push(Instant::ZERO, &p).unwrap(), Reassembly::NotFragment);
    }
}
