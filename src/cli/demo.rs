//! `tierlab demo`: one packet through the first two tiers, written to a pcap.
//!
//! Builds a TCP SYN from a lab user to VIP 198.51.100.1:80, forwards it as an IPVS director in
//! TUN mode would (TTL decrement, IPIP to a proxy), decapsulates it at the proxy's tunnel, and
//! does the same for IPv6 and for a 1500-byte data segment that the director fragments
//! silently (`pmtu_disc=0`). Every packet is written to a pcap file and described on stdout.

use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;

use tierlab_ipip::TunnelEndpoint;
use tierlab_ipip::ipvs::{TunConfig, TunOutput, tun_xmit};
use tierlab_wire::frag::{Reassembler, Reassembly};
use tierlab_wire::pcap::PcapWriter;
use tierlab_wire::{
    Duration, Instant, IpHeader, Packet, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, Transport,
};

use super::CliError;

/// Arguments of `tierlab demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where to write the capture (pcap, link type RAW; open it with `tcpdump -r FILE -vv -n`).
    #[arg(long, default_value = "demo.pcap")]
    pub(crate) pcap: PathBuf,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            pcap: PathBuf::from("demo.pcap"),
        }
    }
}

struct Demo {
    pcap: PcapWriter<BufWriter<File>>,
    now: Instant,
}

impl Demo {
    fn emit(&mut self, who: &str, bytes: &[u8]) -> Result<(), CliError> {
        self.pcap
            .write_packet(self.now, bytes)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!(
            "{:>12}  {:<10} {}",
            self.now.to_string(),
            who,
            describe(bytes)
        );
        self.now += Duration::from_micros(100);
        Ok(())
    }
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> Result<(), CliError> {
    let file = File::create(&args.pcap)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", args.pcap.display())))?;
    let pcap =
        PcapWriter::new(BufWriter::new(file)).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut demo = Demo {
        pcap,
        now: Instant::ZERO,
    };
    let fail = |e: &dyn std::fmt::Display| CliError::Failed(e.to_string());

    let cases: [(&str, &str, &str, &str, usize); 3] = [
        (
            "203.0.113.184",
            "198.51.100.1",
            "192.0.2.4",
            "192.0.2.101",
            0,
        ),
        (
            "2001:db8::cb00:71b8",
            "2001:db8::c633:6401",
            "2001:db8:0:1::4",
            "2001:db8:0:1::101",
            0,
        ),
        (
            "203.0.113.184",
            "198.51.100.1",
            "192.0.2.4",
            "192.0.2.101",
            1460,
        ),
    ];
    for (i, (client, vip, director, proxy, data)) in cases.into_iter().enumerate() {
        let (client, vip): (IpAddr, IpAddr) = (parse(client)?, parse(vip)?);
        let (director, proxy): (IpAddr, IpAddr) = (parse(director)?, parse(proxy)?);
        let tcp = TcpRepr {
            sport: 40_000 + i as u16,
            dport: 80,
            seq: TcpSeq(1_000_000 * (i as u32 + 1)),
            ack: TcpSeq(if data > 0 { 7 } else { 0 }),
            flags: if data > 0 {
                TcpFlags::ACK | TcpFlags::PSH
            } else {
                TcpFlags::SYN
            },
            window: 64_240,
            mss: (data == 0).then_some(1460),
            window_scale: (data == 0).then_some(7),
            sack_permitted: data == 0,
        };
        let packet = PacketBuilder::new(client, vip)
            .map_err(|e| fail(&e))?
            .ttl(62)
            .tcp(&tcp, &vec![b'x'; data])
            .map_err(|e| fail(&e))?;
        demo.emit("client", &packet)?;
        let out = tun_xmit(
            &packet,
            director,
            proxy,
            &TunConfig::default(),
            0x1000 + i as u16,
        )
        .map_err(|e| fail(&e))?;
        let TunOutput::Forward(outer) = out else {
            return Err(CliError::Failed(format!(
                "director did not forward: {out:?}"
            )));
        };
        let endpoint = TunnelEndpoint::new(proxy, [vip], 1500, false);
        let mut reassembler = Reassembler::new();
        for piece in &outer {
            demo.emit("director", piece)?;
            let whole = match reassembler.push(demo.now, piece).map_err(|e| fail(&e))? {
                Reassembly::NotFragment => piece.clone(),
                Reassembly::Complete(w) => w,
                Reassembly::Pending | Reassembly::Duplicate => continue,
            };
            let inner = endpoint.decap(&whole).map_err(|e| fail(&e))?;
            println!(
                "{:>12}  {:<10} decapsulated: {}",
                "",
                "proxy",
                describe(&inner.inner)
            );
        }
    }
    let records = demo.pcap.records();
    demo.pcap.finish().map_err(|e| fail(&e))?;
    println!(
        "wrote {records} packets to {} (read it with: tcpdump -r {} -vv -n)",
        args.pcap.display(),
        args.pcap.display()
    );
    Ok(())
}

fn parse(s: &str) -> Result<IpAddr, CliError> {
    s.parse()
        .map_err(|e| CliError::Failed(format!("built-in address {s}: {e}")))
}

/// A one-line, tcpdump-like description of a packet (nested for IPIP).
fn describe(bytes: &[u8]) -> String {
    match Packet::parse(bytes, true) {
        Err(e) => format!("unparseable: {e}"),
        Ok(p) => {
            let base = format!("{} > {} ttl {} len {}", p.src(), p.dst(), p.ip.ttl(), p.len);
            if let IpHeader::V4(h) = p.ip
                && h.is_fragment()
            {
                let mf = if h.more_frags { " MF" } else { "" };
                return format!(
                    "{base} {} fragment id {:#06x} offset {}{mf}",
                    h.proto, h.ident, h.frag_offset
                );
            }
            match p.transport {
                Transport::Tcp(t) => format!(
                    "{base} tcp {}>{} {} seq {} ack {} data {}",
                    t.sport,
                    t.dport,
                    t.flags,
                    t.seq,
                    t.ack,
                    p.payload.len()
                ),
                Transport::Tunnel(proto) => format!("{base} {proto} [{}]", describe(p.payload)),
                Transport::Fragment(proto) => format!("{base} {proto} fragment"),
                other => format!("{base} {other:?}"),
            }
        }
    }
}
