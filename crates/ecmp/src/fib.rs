//! A longest-prefix-match FIB for IPv4 and IPv6 whose routes hold next-hop groups.
//!
//! Routes are kept in ordered maps (one per prefix length present, longest first), so
//! iteration and output are deterministic; a lookup masks the destination once per length
//! present, longest first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::EcmpError;

/// An IP prefix (address with the host bits cleared, and a length).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix; host bits of `addr` are cleared.
    ///
    /// # Errors
    /// [`EcmpError::BadPrefix`] when `len` exceeds 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, EcmpError> {
        let v4 = addr.is_ipv4();
        if len > if v4 { 32 } else { 128 } {
            return Err(EcmpError::BadPrefix { addr, len });
        }
        Ok(Self {
            addr: from_key(key(addr) & key_mask(v4, len), v4),
            len,
        })
    }

    /// The default route of a family (`0.0.0.0/0` or `::/0`).
    pub fn default_route(v4: bool) -> Self {
        Self {
            addr: from_key(0, v4),
            len: 0,
        }
    }

    /// The network address.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `a` is inside the prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        let v4 = a.is_ipv4();
        v4 == self.addr.is_ipv4() && key(a) & key_mask(v4, self.len) == key(self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
fn key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_key(k: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::from((k as u32).to_be_bytes())
    } else {
        IpAddr::from(k.to_be_bytes())
    }
}

/// The mask of a prefix length over [`key`].
fn key_mask(v4: bool, len: u8) -> u128 {
    match (v4, len) {
        (_, 0) => 0,
        (true, l) => u128::from(u32::MAX << (32 - u32::from(l))),
        (false, l) => u128::MAX << (128 - u32::from(l)),
    }
}

/// Routes of one family: per prefix length present (longest first), its mask over [`key`],
/// and the routes by masked key.
#[derive(Clone, Debug, Eq, PartialEq)]
struct Table<V> {
    by_len: Vec<(u8, u128, BTreeMap<u128, V>)>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

impl<V> Table<V> {
    fn routes(&self, len: u8) -> Option<&BTreeMap<u128, V>> {
        self.by_len
            .iter()
            .find(|(l, _, _)| *l == len)
            .map(|(_, _, m)| m)
    }

    fn routes_mut(&mut self, len: u8) -> Option<&mut BTreeMap<u128, V>> {
        self.by_len
            .iter_mut()
            .find(|(l, _, _)| *l == len)
            .map(|(_, _, m)| m)
    }
}

/// A longest-prefix-match table for both families, holding a `V` (a next-hop group) per route.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Fib<V> {
    v4: Table<V>,
    v6: Table<V>,
}

impl<V> Default for Fib<V> {
    fn default() -> Self {
        Self {
            v4: Table::default(),
            v6: Table::default(),
        }
    }
}

impl<V> Fib<V> {
    /// An empty FIB.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, v4: bool) -> &Table<V> {
        if v4 { &self.v4 } else { &self.v6 }
    }

    fn table_mut(&mut self, v4: bool) -> &mut Table<V> {
        if v4 { &mut self.v4 } else { &mut self.v6 }
    }

    /// Adds or replaces the route for `prefix`; returns the previous value.
    pub fn insert(&mut self, prefix: Prefix, value: V) -> Option<V> {
        let v4 = prefix.addr.is_ipv4();
        let t = self.table_mut(v4);
        if t.routes(prefix.len).is_none() {
            // Keep the lengths longest first, for lookups.
            let at = t.by_len.partition_point(|(l, _, _)| *l > prefix.len);
            t.by_len
                .insert(at, (prefix.len, key_mask(v4, prefix.len), BTreeMap::new()));
        }
        t.routes_mut(prefix.len)?.insert(key(prefix.addr), value)
    }

    /// Removes the route for `prefix`.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<V> {
        let t = self.table_mut(prefix.addr.is_ipv4());
        let m = t.routes_mut(prefix.len)?;
        let v = m.remove(&key(prefix.addr));
        if m.is_empty() {
            t.by_len.retain(|(l, _, _)| *l != prefix.len);
        }
        v
    }

    /// The route for exactly `prefix`.
    pub fn get(&self, prefix: &Prefix) -> Option<&V> {
        self.table(prefix.addr.is_ipv4())
            .routes(prefix.len)?
            .get(&key(prefix.addr))
    }

    /// The route for exactly `prefix`, mutable.
    pub fn get_mut(&mut self, prefix: &Prefix) -> Option<&mut V> {
        let v4 = prefix.addr.is_ipv4();
        self.table_mut(v4)
            .routes_mut(prefix.len)?
            .get_mut(&key(prefix.addr))
    }

    /// The longest prefix containing `dst`, with its value.
    pub fn lookup(&self, dst: IpAddr) -> Option<(Prefix, &V)> {
        let v4 = dst.is_ipv4();
        let k = key(dst);
        for (len, m, routes) in &self.table(v4).by_len {
            if let Some(v) = routes.get(&(k & m)) {
                return Some((
                    Prefix {
                        addr: from_key(k & m, v4),
                        len: *len,
                    },
                    v,
                ));
            }
        }
        None
    }

    /// The longest prefix containing `dst`, with its value, mutable.
    pub fn lookup_mut(&mut self, dst: IpAddr) -> Option<(Prefix, &mut V)> {
        let v4 = dst.is_ipv4();
        let k = key(dst);
        for (len, m, routes) in &mut self.table_mut(v4).by_len {
            if let Some(v) = routes.get_mut(&(k & *m)) {
                return Some((
                    Prefix {
                        addr: from_key(k & *m, v4),
                        len: *len,
                    },
                    v,
                ));
            }
        }
        None
    }

    /// Every route, IPv4 first, then by prefix length and address (a stable order).
    pub fn routes(&self) -> Vec<(Prefix, &V)> {
        let mut out = Vec::new();
        for (v4, t) in [(true, &self.v4), (false, &self.v6)] {
            for (len, _, routes) in t.by_len.iter().rev() {
                for (&k, v) in routes {
                    out.push((
                        Prefix {
                            addr: from_key(k, v4),
                            len: *len,
                        },
                        v,
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, len: u8) -> Prefix {
        Prefix::new(s.parse().unwrap(), len).unwrap()
    }

    #[test]
    fn longest_prefix_wins_per_family() {
        let mut f = Fib::new();
        f.insert(Prefix::default_route(true), "default4");
        f.insert(p("198.51.100.0", 24), "vip-net");
        f.insert(p("198.51.100.1", 32), "vip1");
        f.insert(p("2001:db8::", 32), "v6-net");
        fn look(f: &Fib<&'static str>, a: &str) -> Option<(String, &'static str)> {
            f.lookup(a.parse().unwrap())
                .map(|(pr, v)| (pr.to_string(), *v))
        }
        assert_eq!(
            look(&f, "198.51.100.1"),
            Some(("198.51.100.1/32".into(), "vip1"))
        );
        assert_eq!(
            look(&f, "198.51.100.2"),
            Some(("198.51.100.0/24".into(), "vip-net"))
        );
        assert_eq!(
            look(&f, "203.0.113.9"),
            Some(("0.0.0.0/0".into(), "default4"))
        );
        assert_eq!(
            look(&f, "2001:db8::198.51.100.1"),
            Some(("2001:db8::/32".into(), "v6-net"))
        );
        assert_eq!(look(&f, "2001:db9::1"), None);
        // The mutable lookup finds the same route, and what it changes is that route.
        for a in [
            "198.51.100.1",
            "198.51.100.2",
            "203.0.113.9",
            "2001:db8::1",
            "2001:db9::1",
        ] {
            let want = look(&f, a);
            let got = f.lookup_mut(a.parse().unwrap()).map(|(pr, v)| {
                let was = *v;
                *v = "changed";
                (pr.to_string(), was)
            });
            assert_eq!(got, want, "{a}");
            if let Some((pr, was)) = want {
                assert_eq!(look(&f, a), Some((pr.clone(), "changed")));
                *f.lookup_mut(a.parse().unwrap()).unwrap().1 = was;
            }
        }
        assert_eq!(f.remove(&p("198.51.100.1", 32)), Some("vip1"));
        assert_eq!(
            look(&f, "198.51.100.1"),
            Some(("198.51.100.0/24".into(), "vip-net"))
        );
        assert_eq!(p("198.51.100.77", 24).to_string(), "198.51.100.0/24");
        assert!(Prefix::new("1.2.3.4".parse().unwrap(), 33).is_err());
        assert!(p("2001:db8::", 32).contains("2001:db8:1::5".parse().unwrap()));
        assert!(!p("2001:db8::", 32).contains("198.51.100.1".parse().unwrap()));
        assert_eq!(p("2001:db8:ffff::1", 24).to_string(), "2001:d00::/24");
        let order: Vec<String> = f.routes().iter().map(|(pr, _)| pr.to_string()).collect();
        assert_eq!(order, ["0.0.0.0/0", "198.51.100.0/24", "2001:db8::/32"]);
    }
}
