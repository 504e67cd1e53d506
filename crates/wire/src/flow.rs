//! `FlowKey`: the 5-tuple (plus IPv6 flow label) that every tier hashes or looks up.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Result, WireError};
use crate::proto::IpProto;

/// The identity of a flow as seen on the wire: source and destination address (same family), IP
/// protocol, source and destination port (zero for protocols without ports) and the IPv6 flow
/// label (20 bits; always zero for IPv4).
///
/// A `FlowKey` can only be built with both addresses of one family, so code that hashes it never
/// meets a mixed key. Ordering is total and stable (by family, then fields), so sorted output is
/// deterministic.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "FlowKeyFields", into = "FlowKeyFields")]
pub struct FlowKey {
    src: IpAddr,
    dst: IpAddr,
    proto: IpProto,
    sport: u16,
    dport: u16,
    flow_label: u32,
}

/// The mask of the 20-bit IPv6 flow label.
pub const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

impl FlowKey {
    /// A flow between two addresses of the same family.
    ///
    /// # Errors
    /// [`WireError::MixedFamilies`] when one address is IPv4 and the other IPv6.
    pub fn new(src: IpAddr, dst: IpAddr, proto: IpProto, sport: u16, dport: u16) -> Result<Self> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(WireError::MixedFamilies);
        }
        Ok(Self {
            src,
            dst,
            proto,
            sport,
            dport,
            flow_label: 0,
        })
    }

    /// An IPv4 flow.
    pub const fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProto, sport: u16, dport: u16) -> Self {
        Self {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            proto,
            sport,
            dport,
            flow_label: 0,
        }
    }

    /// An IPv6 flow; `flow_label` is masked to its 20 bits.
    pub const fn v6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        proto: IpProto,
        sport: u16,
        dport: u16,
        flow_label: u32,
    ) -> Self {
        Self {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            proto,
            sport,
            dport,
            flow_label: flow_label & FLOW_LABEL_MASK,
        }
    }

    /// A TCP flow between two addresses of the same family.
    ///
    /// # Errors
    /// [`WireError::MixedFamilies`] when the families differ.
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Result<Self> {
        Self::new(src, dst, IpProto::Tcp, sport, dport)
    }

    /// Source address.
    pub const fn src(&self) -> IpAddr {
        self.src
    }

    /// Destination address.
    pub const fn dst(&self) -> IpAddr {
        self.dst
    }

    /// IP protocol.
    pub const fn proto(&self) -> IpProto {
        self.proto
    }

    /// Source port (0 for protocols without ports).
    pub const fn sport(&self) -> u16 {
        self.sport
    }

    /// Destination port (0 for protocols without ports).
    pub const fn dport(&self) -> u16 {
        self.dport
    }

    /// IPv6 flow label (20 bits; 0 for IPv4).
    pub const fn flow_label(&self) -> u32 {
        self.flow_label
    }

    /// Whether the flow is IPv4.
    pub const fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The same flow with another flow label (ignored, i.e. kept 0, for IPv4).
    pub const fn with_flow_label(mut self, flow_label: u32) -> Self {
        if !self.src.is_ipv4() {
            self.flow_label = flow_label & FLOW_LABEL_MASK;
        }
        self
    }

    /// The flow of the packets going the other way (addresses and ports swapped; label kept).
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
            flow_label: self.flow_label,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.src, self.dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => write!(
                f,
                "{} [{s}]:{} > [{d}]:{} label {:#07x}",
                self.proto, self.sport, self.dport, self.flow_label
            ),
            (s, d) => write!(f, "{} {s}:{} > {d}:{}", self.proto, self.sport, self.dport),
        }
    }
}

/// The serde shape of a [`FlowKey`]: the keys scripts use on the command line
/// (`src`, `dst`, `proto`, `sport`, `dport`, `flowlabel`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowKeyFields {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (6 = TCP).
    pub proto: u8,
    /// Source port.
    #[serde(default)]
    pub sport: u16,
    /// Destination port.
    #[serde(default)]
    pub dport: u16,
    /// IPv6 flow label (20 bits).
    #[serde(default)]
    pub flowlabel: u32,
}

impl TryFrom<FlowKeyFields> for FlowKey {
    type Error = WireError;
    fn try_from(f: FlowKeyFields) -> Result<Self> {
        if f.flowlabel > FLOW_LABEL_MASK {
            return Err(WireError::Build("flow label wider than 20 bits"));
        }
        if f.src.is_ipv4() && f.flowlabel != 0 {
            return Err(WireError::Build("an IPv4 flow has no flow label"));
        }
        Ok(
            Self::new(f.src, f.dst, IpProto::from(f.proto), f.sport, f.dport)?
                .with_flow_label(f.flowlabel),
        )
    }
}

impl From<FlowKey> for FlowKeyFields {
    fn from(k: FlowKey) -> Self {
        Self {
            src: k.src,
            dst: k.dst,
            proto: k.proto.number(),
            sport: k.sport,
            dport: k.dport,
            flowlabel: k.flow_label,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_families_are_refused() {
        let v4: IpAddr = "203.0.113.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            FlowKey::new(v4, v6, IpProto::Tcp, 1, 2),
            Err(WireError::MixedFamilies)
        );
    }

    #[test]
    fn reversed_swaps_and_labels_are_masked() {
        let k = FlowKey::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            IpProto::Tcp,
            1000,
            80,
            0xfff_ffff,
        );
        assert_eq!(k.flow_label(), 0xf_ffff);
        let r = k.reversed();
        assert_eq!((r.sport(), r.dport()), (80, 1000));
        assert_eq!(r.reversed(), k);
        let v4 = FlowKey::v4([1, 2, 3, 4].into(), [5, 6, 7, 8].into(), IpProto::Udp, 1, 2);
        assert_eq!(v4.with_flow_label(5).flow_label(), 0);
    }

    #[test]
    fn serde_uses_script_keys_and_validates() {
        let k: FlowKey = serde_json::from_str(
            r#"{"src":"203.0.113.7","dst":"198.51.100.1","proto":6,"sport":40000,"dport":80}"#,
        )
        .unwrap();
        assert_eq!(k.sport(), 40000);
        assert_eq!(k.proto(), IpProto::Tcp);
        let back: FlowKey = serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
        assert_eq!(back, k);
        let mixed = r#"{"src":"203.0.113.7","dst":"2001:db8::1","proto":6}"#;
        assert!(serde_json::from_str::<FlowKey>(mixed).is_err());
        let unknown = r#"{"src":"203.0.113.7","dst":"198.51.100.1","proto":6,"x":1}"#;
        assert!(serde_json::from_str::<FlowKey>(unknown).is_err());
    }
}
