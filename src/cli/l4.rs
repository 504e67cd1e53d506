//! `tierlab l4`: which destination an IPVS director (or the Maglev paper's table) picks for
//! each flow, or the whole lookup table.

use std::io::{BufRead, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tierlab_l4::{SchedFlags, SchedulerKind, Service, ServiceConfig};
use tierlab_wire::{FlowKey, IpProto};

use super::CliError;

/// Scheduler names on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum SchedArg {
    /// IPVS Maglev hashing (ip_vs_mh), bit-exact with the Linux kernel.
    Mh,
    /// IPVS source hashing (ip_vs_sh), bit-exact with the Linux kernel.
    Sh,
    /// The Maglev paper's table (NSDI 2016), for comparison.
    Maglev,
}

/// Arguments of `tierlab l4`.
///
/// Reads flows as JSON lines on stdin (`{"src": "203.0.113.7", "sport": 40000, "dst":
/// "198.51.100.1", "dport": 80, "proto": 6}`) and writes one line per flow: `{"dest": I}`, the
/// 0-based index into `--dests` of the destination chosen, or `{"dest": null}` when no
/// destination can take the flow. Bad input exits with status 2 and names the line or flag.
#[derive(Debug, clap::Args)]
pub(crate) struct L4Args {
    /// Scheduler.
    #[arg(long, value_enum)]
    scheduler: SchedArg,
    /// Table size. mh: one of the kernel's primes 251, 509, 1021, 2039, 4093 (default), 8191,
    /// 16381, 32749, 65521, 131071. sh: a power of two from 16 to 1048576 (default 256).
    /// maglev: a prime (default 65537; the paper also uses 655373).
    #[arg(long, value_name = "M")]
    table_size: Option<usize>,
    /// Hash the client's source port too (mh-port / sh-port; the lab sets it).
    #[arg(long)]
    port: bool,
    /// When the slot's destination is drained, walk the table for another (mh-fallback /
    /// sh-fallback; not for maglev).
    #[arg(long)]
    fallback: bool,
    /// Destinations in the order they were added, oldest first: ADDR[:PORT][@WEIGHT],...
    /// (port 80 and weight 1 by default; an IPv6 address with a port is written [ADDR]:PORT).
    /// The kernel puts each new destination at the head of its list, and mh and sh fill their
    /// tables in list order, so the order matters.
    #[arg(long, value_name = "LIST")]
    dests: String,
    /// Destinations whose weight was later set to 0: ADDR[:PORT],... They keep their last
    /// weight, hence their mh slots: flows landing there get no destination unless
    /// --fallback.
    #[arg(long, value_name = "LIST")]
    drained: Option<String>,
    /// Print the lookup table instead of reading flows: one line per slot,
    /// `{"slot": S, "dest": I}` (or `null` for an empty slot).
    #[arg(long)]
    dump_table: bool,
}

/// One `--dests` item.
#[derive(Debug, Eq, PartialEq)]
struct DestArg {
    addr: IpAddr,
    port: u16,
    weight: u32,
}

/// Parses `ADDR[:PORT]`: IPv4 `a.b.c.d[:p]`, IPv6 bare `x::y` or bracketed `[x::y][:p]`.
fn parse_addr_port(s: &str) -> Result<(IpAddr, u16), String> {
    let parse_port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or("missing ']'")?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("bad IPv6 address {addr:?}"))?;
        let port = match after {
            "" => 80,
            p => parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("expected ':PORT' after ']', got {p:?}"))?,
            )?,
        };
        return Ok((IpAddr::V6(addr), port));
    }
    if s.matches(':').count() > 1 {
        let addr: Ipv6Addr = s.parse().map_err(|_| format!("bad IPv6 address {s:?}"))?;
        return Ok((IpAddr::V6(addr), 80));
    }
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (a, parse_port(p)?),
        None => (s, 80),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    Ok((IpAddr::V4(addr), port))
}

/// Parses one `--dests` item `ADDR[:PORT][@WEIGHT]`.
fn parse_dest(s: &str) -> Result<DestArg, String> {
    let (ap, weight) = match s.rsplit_once('@') {
        Some((ap, w)) => {
            let w: u32 = w.parse().map_err(|_| format!("bad weight {w:?}"))?;
            if w > 65535 {
                return Err(format!("weight {w} out of ipvsadm's range 0..=65535"));
            }
            (ap, w)
        }
        None => (s, 1),
    };
    let (addr, port) = parse_addr_port(ap)?;
    Ok(DestArg { addr, port, weight })
}

fn items(list: &str) -> impl Iterator<Item = (usize, &str)> {
    list.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, s)| (i + 1, s))
}

/// Builds the service the flags describe.
fn build_service(args: &L4Args) -> Result<Service, CliError> {
    let kind = match args.scheduler {
        SchedArg::Mh => SchedulerKind::Mh,
        SchedArg::Sh => SchedulerKind::Sh,
        SchedArg::Maglev => SchedulerKind::Maglev,
    };
    let mut dests = Vec::new();
    for (i, s) in items(&args.dests) {
        dests.push(
            parse_dest(s)
                .map_err(|e| CliError::BadInput(format!("--dests: item {i} {s:?}: {e}")))?,
        );
    }
    let Some(first) = dests.first() else {
        return Err(CliError::BadInput("--dests: no destination".into()));
    };
    let vip = if first.addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let config = ServiceConfig {
        vip,
        port: 80,
        proto: IpProto::Tcp,
        scheduler: kind,
        table_size: args.table_size,
        flags: SchedFlags {
            port: args.port,
            fallback: args.fallback,
        },
    };
    let mut svc =
        Service::new(config).map_err(|e| CliError::BadInput(format!("--table-size: {e}")))?;
    for (i, d) in dests.iter().enumerate() {
        let id = svc
            .add_dest(d.addr, d.port, d.weight)
            .map_err(|e| CliError::BadInput(format!("--dests: item {}: {e}", i + 1)))?;
        // Destinations are new, so their ids are their positions in --dests.
        debug_assert_eq!(id.0 as usize, i);
    }
    if let Some(drained) = &args.drained {
        for (i, s) in items(drained) {
            let (addr, port) = parse_addr_port(s)
                .map_err(|e| CliError::BadInput(format!("--drained: item {i} {s:?}: {e}")))?;
            svc.edit_dest(addr, port, 0)
                .map_err(|e| CliError::BadInput(format!("--drained: item {i} {s:?}: {e}")))?;
        }
    }
    Ok(svc)
}

/// Runs `tierlab l4`.
pub(crate) fn run(args: &L4Args) -> Result<(), CliError> {
    let svc = build_service(args)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let io = |e: std::io::Error| CliError::Failed(format!("writing stdout: {e}"));
    if args.dump_table {
        for (slot, d) in svc.table().iter().enumerate() {
            match d {
                Some(id) => writeln!(out, "{{\"slot\": {slot}, \"dest\": {}}}", id.0),
                None => writeln!(out, "{{\"slot\": {slot}, \"dest\": null}}"),
            }
            .map_err(io)?;
        }
        return out.flush().map_err(io);
    }
    let family_v4 = svc.config().vip.is_ipv4();
    let stdin = std::io::stdin();
    for (n, line) in stdin.lock().lines().enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| CliError::BadInput(format!("stdin line {n}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let flow: FlowKey = serde_json::from_str(&line)
            .map_err(|e| CliError::BadInput(format!("stdin line {n}: {e}")))?;
        if flow.is_ipv4() != family_v4 {
            return Err(CliError::BadInput(format!(
                "stdin line {n}: flow {flow} is not of the destinations' address family"
            )));
        }
        match svc.schedule(&flow) {
            Some(id) => writeln!(out, "{{\"dest\": {}}}", id.0),
            None => writeln!(out, "{{\"dest\": null}}"),
        }
        .map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_items_parse() {
        assert_eq!(
            parse_dest("10.0.0.1").unwrap(),
            DestArg {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                weight: 1
            }
        );
        assert_eq!(
            parse_dest("10.0.0.1:8080@3").unwrap(),
            DestArg {
                addr: "10.0.0.1".parse().unwrap(),
                port: 8080,
                weight: 3
            }
        );
        assert_eq!(parse_dest("2001:db8::1@2").unwrap().port, 80);
        assert_eq!(parse_dest("[2001:db8::1]:88").unwrap().port, 88);
        assert!(parse_dest("10.0.0.1:x").is_err());
        assert!(parse_dest("10.0.0.1@70000").is_err());
        assert!(parse_dest("[2001:db8::1]88").is_err());
        assert!(parse_dest("host").is_err());
    }
}
