//! The bytes the L7 hosts exchange: the PROXY protocol v1 header, the HTTP/1.x request line
//! and the response head, the agent-check line, and the deterministic body pattern.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

/// Longest PROXY v1 header (spec: 107 bytes including CRLF).
pub const PROXY_V1_MAX: usize = 107;

/// Errors parsing what a peer sent.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[non_exhaustive]
pub enum ParseError {
    /// More bytes are needed.
    #[error("incomplete: need more bytes")]
    Incomplete,
    /// The PROXY header is malformed.
    #[error("PROXY header: {0}")]
    Proxy(&'static str),
    /// The request is malformed.
    #[error("HTTP request: {0}")]
    Request(&'static str),
    /// The response is malformed.
    #[error("HTTP response: {0}")]
    Response(&'static str),
}

/// The PROXY protocol v1 header HAProxy's `send-proxy` writes before the first byte
/// (haproxy doc/proxy-protocol.txt §2.1): `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, or
/// `TCP6` for IPv6, or `UNKNOWN` when the families differ.
pub fn proxy_v1(client: SocketAddr, server: SocketAddr) -> String {
    let mut out = Vec::with_capacity(PROXY_V1_MAX);
    proxy_v1_into(client, server, &mut out);
    String::from_utf8(out).expect("the header is ASCII")
}

/// Appends the PROXY v1 header of [`proxy_v1`] to `out`. IPv4 addresses and the ports are
/// written digit by digit (the proxy writes one header per connection; the formatting
/// machinery cost more than the rest of the connect); IPv6 addresses go through their
/// `Display` (RFC 5952 form).
pub fn proxy_v1_into(client: SocketAddr, server: SocketAddr, out: &mut Vec<u8>) {
    match (client.ip(), server.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(b"PROXY TCP4 ");
            push_ipv4(out, s.octets());
            out.push(b' ');
            push_ipv4(out, d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "PROXY TCP6 {s} {d}");
        }
        _ => return out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
    }
    out.push(b' ');
    push_decimal(out, client.port());
    out.push(b' ');
    push_decimal(out, server.port());
    out.extend_from_slice(b"\r\n");
}

/// Appends `a.b.c.d`.
fn push_ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_decimal(out, u16::from(o));
    }
}

/// Appends `n` in decimal, without leading zeros.
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses a PROXY v1 header at the start of `buf`: returns (client, proxied-to) addresses
/// (`None` for `UNKNOWN`) and the header length.
///
/// # Errors
/// [`ParseError::Incomplete`] before the CRLF (within 107 bytes), [`ParseError::Proxy`] for
/// anything malformed.
pub fn parse_proxy_v1(buf: &[u8]) -> Result<(Option<(SocketAddr, SocketAddr)>, usize), ParseError> {
    let lim = buf.len().min(PROXY_V1_MAX);
    let Some(end) = buf[..lim].windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= PROXY_V1_MAX
            || (!buf.is_empty() && !b"PROXY ".starts_with(&buf[..buf.len().min(6)]))
        {
            Err(ParseError::Proxy(
                "no CRLF within 107 bytes or bad signature",
            ))
        } else {
            Err(ParseError::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Proxy("not ASCII"))?;
    let mut it = line.split(' ');
    if it.next() != Some("PROXY") {
        return Err(ParseError::Proxy("missing PROXY signature"));
    }
    let fam = it.next().ok_or(ParseError::Proxy("missing family"))?;
    if fam == "UNKNOWN" {
        return Ok((None, end + 2));
    }
    let mut field = || it.next().ok_or(ParseError::Proxy("missing field"));
    let (s, d, sp, dp) = (field()?, field()?, field()?, field()?);
    let ip = |x: &str| {
        x.parse::<IpAddr>()
            .map_err(|_| ParseError::Proxy("bad address"))
    };
    let port = |x: &str| x.parse::<u16>().map_err(|_| ParseError::Proxy("bad port"));
    let (s, d) = (ip(s)?, ip(d)?);
    let ok = match fam {
        "TCP4" => s.is_ipv4() && d.is_ipv4(),
        "TCP6" => s.is_ipv6() && d.is_ipv6(),
        _ => return Err(ParseError::Proxy("unknown family")),
    };
    if !ok {
        return Err(ParseError::Proxy("address does not match family"));
    }
    Ok((
        Some((SocketAddr::new(s, port(sp)?), SocketAddr::new(d, port(dp)?))),
        end + 2,
    ))
}

/// Position just past the blank line ending an HTTP head, if complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The path of a complete request head (`GET /path HTTP/1.x`).
///
/// # Errors
/// [`ParseError::Request`] when the request line is not `METHOD SP PATH SP HTTP/x`.
pub fn request_path(head: &[u8]) -> Result<&str, ParseError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ParseError::Request("no request line"))?;
    let line =
        std::str::from_utf8(&head[..line_end]).map_err(|_| ParseError::Request("not ASCII"))?;
    let mut it = line.split(' ');
    let (_method, path, version) = (
        it.next().ok_or(ParseError::Request("no method"))?,
        it.next().ok_or(ParseError::Request("no path"))?,
        it.next().ok_or(ParseError::Request("no version"))?,
    );
    if !version.starts_with("HTTP/") || !path.starts_with('/') {
        return Err(ParseError::Request("bad path or version"));
    }
    Ok(path)
}

/// A request for `/SIZE` as the lab's client sends it.
pub fn get_request(size: u64, host: IpAddr) -> String {
    format!("GET /{size} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tierlab\r\n\r\n")
}

/// The response head a backend sends before a body of `len` bytes.
pub fn response_head(status: u16, reason: &str, len: u64) -> String {
    format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// HAProxy's `monitor-uri` answers (src/http_ana.c, `http_reply_200`-style bodies): 200 when
/// the monitor condition does not fail, 503 otherwise; the connection is closed after.
pub fn monitor_response(ok: bool) -> &'static [u8] {
    if ok {
        b"HTTP/1.1 200 OK\r\ncontent-length: 58\r\ncache-control: no-cache\r\ncontent-type: text/html\r\n\r\n<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 107\r\ncache-control: no-cache\r\ncontent-type: text/html\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"
    }
}

/// Status code and `Content-Length` of a complete response head.
///
/// # Errors
/// [`ParseError::Response`] when the status line or the length is malformed.
pub fn parse_response_head(head: &[u8]) -> Result<(u16, Option<u64>), ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::Response("not ASCII"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(ParseError::Response("bad status line"))?;
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| ParseError::Response("bad content-length"))?,
            );
        }
    }
    Ok((status, len))
}

/// Byte `i` of every response body: lowercase letters in a cycle, so a body can be checked
/// for integrity at any offset and reads well in a packet dump.
pub fn body_byte(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}

/// The body pattern repeated so that any 26-aligned window of it is contiguous.
const PATTERN: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz";

/// Fills `out` with body bytes from offset `from`.
pub fn fill_body(out: &mut Vec<u8>, from: u64, len: usize) {
    let base = out.len();
    let start = (from % 26) as usize;
    out.reserve(len);
    out.extend_from_slice(&PATTERN[start..start + len.min(26)]);
    // The body repeats every 26 bytes: copy what is written, in whole periods, until done.
    while out.len() - base < len {
        let have = out.len() - base;
        let n = (have - have % 26).min(len - have);
        out.extend_from_within(base..base + n);
    }
}

/// Longest body run [`body`] gives at once: the default send buffer (64 KiB), so that a
/// server writes whatever its buffer takes in one piece.
pub const BODY_RUN: usize = 65_536;

/// The body pattern over `BODY_RUN` + 26 bytes, so a run can start at any phase.
static BODY: [u8; BODY_RUN + 26] = {
    let mut p = [0u8; BODY_RUN + 26];
    let mut i = 0;
    while i < p.len() {
        p[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    p
};

/// The body bytes from offset `from`, `len` of them or [`BODY_RUN`] if fewer, borrowed from
/// a static copy of the pattern (nothing to generate; see [`fill_body`] for any length).
pub fn body(from: u64, len: usize) -> &'static [u8] {
    let start = (from % 26) as usize;
    &BODY[start..start + len.min(BODY_RUN)]
}

/// Bytes compared at once by [`check_body`]: a whole number of 26-byte periods.
const CHECK_BLOCK: usize = 26 * 40;

/// The body pattern over `CHECK_BLOCK` + 26 bytes, so a block can start at any phase.
const LONG_PATTERN: [u8; CHECK_BLOCK + 26] = {
    let mut p = [0u8; CHECK_BLOCK + 26];
    let mut i = 0;
    while i < p.len() {
        p[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    p
};

/// Whether `data` equals the body bytes from offset `from`.
pub fn check_body(data: &[u8], from: u64) -> bool {
    // Every block starts at the same phase (blocks are whole periods long).
    let start = (from % 26) as usize;
    data.chunks(CHECK_BLOCK)
        .all(|c| c == &LONG_PATTERN[start..start + c.len()])
}

/// What an agent check reply says (HAProxy doc/configuration.txt, `agent-check`).
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Deserialize, serde::Serialize)]
pub enum AgentWord {
    /// `up`: the server is operational.
    Up,
    /// `down` (also `fail`, `stopped`): the server is not operational.
    Down,
    /// `drain`: weight 0, no new connections; existing ones continue.
    Drain,
    /// `maint`: maintenance mode (no new traffic).
    Maint,
    /// `ready`: leaves drain and maintenance.
    Ready,
    /// `NN%`: weight set to NN % of the configured weight.
    Weight(u16),
}

/// Parses an agent reply: comma- or space-separated words, each applied in order.
/// Unknown words are ignored, as HAProxy does.
pub fn parse_agent(reply: &str) -> Vec<AgentWord> {
    reply
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|w| {
            let w = w.trim().to_ascii_lowercase();
            Some(match w.as_str() {
                "up" => AgentWord::Up,
                "down" | "fail" | "stopped" => AgentWord::Down,
                "drain" => AgentWord::Drain,
                "maint" => AgentWord::Maint,
                "ready" => AgentWord::Ready,
                _ => AgentWord::Weight(w.strip_suffix('%')?.parse().ok()?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body as the first version wrote it: 26 bytes at a time.
    fn body_reference(from: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < len {
            let start = ((from + k as u64) % 26) as usize;
            let n = (len - k).min(26);
            out.extend_from_slice(&PATTERN[start..start + n]);
            k += n;
        }
        out
    }

    #[test]
    fn fill_body_writes_the_pattern_from_any_offset() {
        for from in [0u64, 1, 25, 26, 27, 1_000_003] {
            for len in [0usize, 1, 25, 26, 27, 51, 52, 53, 1460, 16_384, 65_536] {
                let mut out = vec![7u8; 3];
                fill_body(&mut out, from, len);
                assert_eq!(&out[..3], &[7, 7, 7]);
                assert_eq!(
                    out[3..],
                    body_reference(from, len)[..],
                    "from {from} len {len}"
                );
                assert!(check_body(&out[3..], from));
                if len > 0 {
                    let mut bad = out[3..].to_vec();
                    bad[len - 1] ^= 1;
                    assert!(!check_body(&bad, from), "from {from} len {len}");
                }
            }
        }
        assert_eq!(&LONG_PATTERN[..52], PATTERN);
    }

    #[test]
    fn body_runs_are_the_pattern_and_stop_at_body_run() {
        for from in [0u64, 1, 25, 26, 27, 1_000_003] {
            for len in [0usize, 1, 26, 1460, BODY_RUN - 1, BODY_RUN] {
                assert_eq!(
                    body(from, len),
                    &body_reference(from, len)[..],
                    "{from} {len}"
                );
            }
            assert_eq!(body(from, BODY_RUN + 100).len(), BODY_RUN);
        }
    }

    #[test]
    fn proxy_v1_round_trip_both_families() {
        let c: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let s: SocketAddr = "198.51.100.1:80".parse().unwrap();
        let h = proxy_v1(c, s);
        assert_eq!(h, "PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\n");
        let mut buf = h.clone().into_bytes();
        buf.extend_from_slice(b"GET / HTTP/1.0\r\n");
        assert_eq!(parse_proxy_v1(&buf), Ok((Some((c, s)), h.len())));
        let c6: SocketAddr = "[2001:db8::cb00:7107]:40000".parse().unwrap();
        let s6: SocketAddr = "[2001:db8::c633:6401]:80".parse().unwrap();
        let h6 = proxy_v1(c6, s6);
        assert!(h6.starts_with("PROXY TCP6 2001:db8::cb00:7107 "));
        assert!(h6.len() <= PROXY_V1_MAX);
        assert_eq!(parse_proxy_v1(h6.as_bytes()).unwrap().0, Some((c6, s6)));
        assert_eq!(proxy_v1(c, s6), "PROXY UNKNOWN\r\n");
        // Digit by digit as `format!` writes them: zeros, one to five digits, the extremes.
        for (a, p) in [
            ([0, 0, 0, 0], 0),
            ([9, 10, 99, 100], 9),
            ([199, 200, 249, 255], 10_000),
            ([1, 2, 3, 4], 65_535),
        ] {
            let (c, s) = (
                SocketAddr::from((a, p)),
                SocketAddr::from(([10, 0, 0, 1], 80)),
            );
            assert_eq!(
                proxy_v1(c, s),
                format!("PROXY TCP4 {} {} {} {}\r\n", c.ip(), s.ip(), p, 80)
            );
        }
    }

    #[test]
    fn proxy_v1_refusals() {
        assert_eq!(
            parse_proxy_v1(b"PROXY TCP4 1.2"),
            Err(ParseError::Incomplete)
        );
        assert!(matches!(
            parse_proxy_v1(b"GET / HTTP"),
            Err(ParseError::Proxy(_))
        ));
        assert!(matches!(
            parse_proxy_v1(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n"),
            Err(ParseError::Proxy(_))
        ));
        assert!(matches!(
            parse_proxy_v1(b"PROXY TCP4 1.2.3.4 1.2.3.5 99999 2\r\n"),
            Err(ParseError::Proxy(_))
        ));
        assert!(matches!(
            parse_proxy_v1(&[b'P'; 200]),
            Err(ParseError::Proxy(_))
        ));
    }

    #[test]
    fn request_and_response_heads() {
        let r = get_request(10_000, "198.51.100.1".parse().unwrap());
        let end = head_end(r.as_bytes()).unwrap();
        assert_eq!(end, r.len());
        assert_eq!(request_path(r.as_bytes()), Ok("/10000"));
        assert!(request_path(b"GET\r\n\r\n").is_err());
        let h = response_head(200, "OK", 42);
        assert_eq!(parse_response_head(h.as_bytes()), Ok((200, Some(42))));
        let m = monitor_response(false);
        assert_eq!(parse_response_head(m).unwrap().0, 503);
        let body_len = m.len() - head_end(m).unwrap();
        assert_eq!(parse_response_head(m).unwrap().1, Some(body_len as u64));
        let ok = monitor_response(true);
        assert_eq!(
            parse_response_head(ok).unwrap(),
            (200, Some((ok.len() - head_end(ok).unwrap()) as u64))
        );
    }

    #[test]
    fn agent_words() {
        assert_eq!(
            parse_agent("drain\n"),
            vec![AgentWord::Drain],
            "a trailing newline is ignored"
        );
        assert_eq!(
            parse_agent("75%, UP ready"),
            vec![AgentWord::Weight(75), AgentWord::Up, AgentWord::Ready]
        );
        assert_eq!(
            parse_agent("stopped fail maint bogus x%"),
            vec![AgentWord::Down, AgentWord::Down, AgentWord::Maint]
        );
    }

    #[test]
    fn body_pattern() {
        let mut v = Vec::new();
        fill_body(&mut v, 24, 4);
        assert_eq!(v, b"yzab");
        let mut w = Vec::new();
        fill_body(&mut w, 5, 1000);
        assert!(
            w.iter()
                .enumerate()
                .all(|(i, b)| *b == body_byte(5 + i as u64))
        );
        assert!(check_body(&w, 5));
        assert!(!check_body(&w, 6));
        w[777] ^= 1;
        assert!(!check_body(&w, 5));
    }
}
