//! `tierlab ecmp`: which next hop a Linux router picks for each flow, bit for bit as the kernel
//! does (see the `tierlab-ecmp` crate and `docs/ecmp.md`).

use std::io::{BufRead, BufWriter, Write};

use tierlab_ecmp::{
    Algorithm, HashConfig, HashFields, HashInput, HashPath, HashSeed, MultipathHasher, NextHop,
    NextHopGroup, Policy, ResilientParams,
};
use tierlab_wire::{FlowKey, Instant};

use super::CliError;

/// Next-hop selection algorithms on the command line.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub(crate) enum AlgorithmArg {
    /// Weighted hash-threshold, as Linux multipath routes (the default).
    #[default]
    HashThreshold,
    /// Weighted modulo-N (Linux IPv6 before 4.14), for comparison.
    Modulo,
    /// Resilient next-hop group (`ip nexthop ... type resilient`), freshly created.
    Resilient,
}

/// Kernel code paths on the command line.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub(crate) enum PathArg {
    /// A forwarded packet, as a router sees it (the default).
    #[default]
    Forwarding,
    /// A route lookup from a flow description (`ip -6 route get`, local output).
    RouteLookup,
}

/// Arguments of `tierlab ecmp`.
///
/// Reads flows as JSON lines on stdin, one object per line with keys `src`, `dst`, `proto`,
/// `sport`, `dport` and optional `flowlabel` (IPv6), for example
/// `{"src":"203.0.113.7","dst":"198.51.100.1","proto":6,"sport":40000,"dport":80}`, and writes
/// one line per flow: `{"nexthop": I}`, I the 0-based index of the next hop in the order given.
/// Blank lines are skipped. A bad line stops the run with a message naming its line number and
/// the problem, exit status 2; lines before it have been answered, nothing is written for it.
#[derive(Debug, clap::Args)]
pub(crate) struct EcmpArgs {
    /// Address family of the flows: 4 or 6.
    #[arg(long, value_parser = ["4", "6"])]
    family: String,
    /// `fib_multipath_hash_policy`: 0 (L3), 1 (L4), 2 (L3 or inner L3), 3 (custom).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
    policy: u8,
    /// `fib_multipath_hash_fields` for policy 3 (bit mask, decimal or 0x hex; default 0x7 =
    /// source IP, destination IP, protocol; 0x8 flow label, 0x10 source port, 0x20
    /// destination port).
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    hash_fields: Option<u32>,
    /// `net.ipv4.fib_multipath_hash_seed` in force (IPv6 uses it too), non-zero: the kernel
    /// replaces 0 by a random seed.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    seed: u32,
    /// Number of next hops.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    nexthops: u32,
    /// Weights, one per next hop, comma-separated (default: all 1). Linux routes accept 1-256.
    #[arg(long, value_name = "W1,W2,...", value_delimiter = ',')]
    weights: Option<Vec<u32>>,
    /// Selection algorithm.
    #[arg(long, value_enum, default_value_t)]
    algorithm: AlgorithmArg,
    /// Buckets of a resilient group.
    #[arg(long, value_name = "N", default_value_t = 128)]
    buckets: u16,
    /// Which kernel code path to model: a forwarded packet (what routers do), or a route
    /// lookup. They differ for IPv6 under policy 3, and policy 2 with non-zero flow labels.
    #[arg(long, value_enum, default_value_t)]
    path: PathArg,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a 32-bit unsigned number"))
}

/// Runs `tierlab ecmp` on stdin/stdout.
pub(crate) fn run(args: &EcmpArgs) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    run_io(args, stdin.lock(), stdout.lock())
}

fn build(args: &EcmpArgs) -> Result<(HashConfig, NextHopGroup), CliError> {
    let bad = |m: String| CliError::BadInput(m);
    let policy = Policy::try_from(args.policy).map_err(|e| bad(format!("--policy: {e}")))?;
    let fields = HashFields::new(args.hash_fields.unwrap_or(HashFields::DEFAULT.bits()))
        .map_err(|e| bad(format!("--hash-fields: {e}")))?;
    if args.seed == 0 {
        return Err(bad(
            "--seed: 0 makes the kernel draw a random seed; give the non-zero seed in force".into(),
        ));
    }
    let weights = match &args.weights {
        Some(w) if w.len() != args.nexthops as usize => {
            return Err(bad(format!(
                "--weights: {} weights for {} next hops",
                w.len(),
                args.nexthops
            )));
        }
        Some(w) => w.clone(),
        None => vec![1; args.nexthops as usize],
    };
    let members: Vec<NextHop> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| NextHop::weighted(i as u32, w))
        .collect();
    let algorithm = match args.algorithm {
        AlgorithmArg::HashThreshold => Algorithm::HashThreshold,
        AlgorithmArg::Modulo => Algorithm::Modulo,
        AlgorithmArg::Resilient => Algorithm::Resilient(ResilientParams {
            buckets: args.buckets,
            ..ResilientParams::default()
        }),
    };
    let group = NextHopGroup::new(algorithm, members, Instant::ZERO)
        .map_err(|e| bad(format!("next hops: {e}")))?;
    let path = match args.path {
        PathArg::Forwarding => HashPath::Forwarding,
        PathArg::RouteLookup => HashPath::RouteLookup,
    };
    Ok((
        HashConfig::new(policy, fields, HashSeed::Fixed(args.seed)).with_path(path),
        group,
    ))
}

fn run_io(args: &EcmpArgs, input: impl BufRead, output: impl Write) -> Result<(), CliError> {
    let (config, group) = build(args)?;
    let hasher = MultipathHasher::new(config);
    let want_v4 = args.family == "4";
    let mut out = BufWriter::new(output);
    let io = |e: std::io::Error| CliError::Failed(format!("writing stdout: {e}"));
    for (n, line) in input.lines().enumerate() {
        let lineno = n + 1;
        let fail = |msg: String| CliError::BadInput(format!("stdin line {lineno}: {msg}"));
        let line = line.map_err(|e| fail(format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = serde_json::from_str::<FlowKey>(&line)
            .map_err(|e| {
                // serde_json says "at line 1 column C" of the one-line document: keep the column.
                let msg = e.to_string();
                let msg = msg
                    .rsplit_once(" at line ")
                    .map_or(msg.as_str(), |(m, _)| m);
                fail(format!("not a flow object (column {}): {msg}", e.column()))
            })
            .and_then(|flow| {
                if flow.is_ipv4() != want_v4 {
                    Err(fail(format!(
                        "an IPv{} flow, but --family {}",
                        if flow.is_ipv4() { 4 } else { 6 },
                        args.family
                    )))
                } else {
                    Ok(group.select(hasher.hash(&HashInput::flow(flow))))
                }
            });
        match answer {
            Ok(i) => writeln!(out, "{{\"nexthop\": {i}}}").map_err(io)?,
            Err(e) => {
                out.flush().map_err(io)?;
                return Err(e);
            }
        }
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: EcmpArgs,
    }

    fn args(v: &[&str]) -> EcmpArgs {
        let mut all = vec!["t"];
        all.extend_from_slice(v);
        T::try_parse_from(all).unwrap().a
    }

    fn run_str(a: &EcmpArgs, input: &str) -> (Result<(), CliError>, String) {
        let mut out = Vec::new();
        let r = run_io(a, input.as_bytes(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn answers_each_line_and_stops_at_a_bad_one() {
        let a = args(&[
            "--family",
            "4",
            "--policy",
            "1",
            "--seed",
            "7",
            "--nexthops",
            "3",
        ]);
        let good =
            r#"{"src":"203.0.113.7","dst":"198.51.100.1","proto":6,"sport":40000,"dport":80}"#;
        let input = format!("{good}\n\n{good}\n{{\"src\":\"nope\"}}\n{good}\n");
        let (r, out) = run_str(&a, &input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], lines[1]);
        assert!(lines[0].starts_with("{\"nexthop\": "));
        let err = r.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("stdin line 4"), "{err}");
        let v6 = r#"{"src":"2001:db8::1","dst":"2001:db8::2","proto":6,"sport":1,"dport":2,"flowlabel":5}"#;
        let (r, out) = run_str(&a, v6);
        assert!(out.is_empty());
        assert!(r.unwrap_err().to_string().contains("line 1: an IPv6 flow"));
    }

    #[test]
    fn flags_are_checked() {
        let w = args(&[
            "--family",
            "6",
            "--policy",
            "3",
            "--seed",
            "1",
            "--nexthops",
            "2",
            "--weights",
            "1,2,3",
        ]);
        assert!(
            run_str(&w, "")
                .0
                .unwrap_err()
                .to_string()
                .contains("--weights")
        );
        let z = args(&[
            "--family",
            "6",
            "--policy",
            "0",
            "--seed",
            "0",
            "--nexthops",
            "2",
        ]);
        assert!(
            run_str(&z, "")
                .0
                .unwrap_err()
                .to_string()
                .contains("--seed")
        );
        let f = args(&[
            "--family",
            "4",
            "--policy",
            "3",
            "--hash-fields",
            "0x1000",
            "--seed",
            "1",
            "--nexthops",
            "2",
        ]);
        assert!(
            run_str(&f, "")
                .0
                .unwrap_err()
                .to_string()
                .contains("--hash-fields")
        );
        let r = args(&[
            "--family",
            "4",
            "--policy",
            "1",
            "--seed",
            "9",
            "--nexthops",
            "5",
            "--algorithm",
            "resilient",
            "--weights",
            "1,1,2,1,1",
        ]);
        let good =
            r#"{"src":"203.0.113.7","dst":"198.51.100.1","proto":6,"sport":40000,"dport":80}"#;
        let (res, out) = run_str(&r, good);
        assert!(res.is_ok());
        assert_eq!(out.lines().count(), 1);
    }
}
