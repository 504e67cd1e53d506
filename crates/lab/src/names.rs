//! Node names: a kind and a 1-based index (`director3`), as the lab names its machines
//! (LB4-3 is `director3`, LB7-14 `proxy14`).

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The kinds of nodes a disruption can target.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// An edge router doing ECMP over the directors.
    Router,
    /// An L4 director (IPVS).
    Director,
    /// An L7 proxy (HAProxy).
    Proxy,
    /// A backend server.
    Backend,
}

impl NodeKind {
    /// The name prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Router => "router",
            Self::Director => "director",
            Self::Proxy => "proxy",
            Self::Backend => "backend",
        }
    }
}

/// A node name: kind and 1-based index.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct NodeName {
    /// Kind.
    pub kind: NodeKind,
    /// 1-based index.
    pub index: u32,
}

/// Why a string is not a node name.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[error(
    "'{0}' is not a node name (expected router<N>, director<N>, proxy<N> or backend<N>, N ≥ 1)"
)]
pub struct BadName(pub String);

impl FromStr for NodeName {
    type Err = BadName;
    fn from_str(s: &str) -> Result<Self, BadName> {
        for kind in [
            NodeKind::Router,
            NodeKind::Director,
            NodeKind::Proxy,
            NodeKind::Backend,
        ] {
            if let Some(n) = s.strip_prefix(kind.prefix()) {
                return match n.parse::<u32>() {
                    Ok(index) if index >= 1 && !n.starts_with('0') => Ok(Self { kind, index }),
                    _ => Err(BadName(s.to_owned())),
                };
            }
        }
        Err(BadName(s.to_owned()))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_junk() {
        for s in ["router1", "director7", "proxy14", "backend10"] {
            assert_eq!(s.parse::<NodeName>().unwrap().to_string(), s);
        }
        for s in [
            "proxy0",
            "proxy",
            "proxy01",
            "lb4-1",
            "director-2",
            "backendx",
        ] {
            assert!(s.parse::<NodeName>().is_err(), "{s}");
        }
    }
}
