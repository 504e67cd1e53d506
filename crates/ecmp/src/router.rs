//! A router's ECMP decision: hash configuration + FIB of next-hop groups.
//!
//! [`Router`] is what a discrete-event engine calls for each packet it forwards: given the
//! packet (or a [`HashInput`]), it finds the longest-prefix route, computes the multipath hash
//! the way the kernel would on this router, and returns the next hop. Route updates return the
//! exact share of that route's flow space that moves.

use std::net::IpAddr;

use tierlab_wire::{Instant, Packet, SimRng};

use crate::error::EcmpError;
use crate::fib::{Fib, Prefix};
use crate::group::{GroupUpdate, NextHopGroup, NextHopId, Share, moved_share};
use crate::hash::{HashConfig, HashFields, HashInput, HashSeed, MultipathHasher, Policy};
use crate::toeplitz::Toeplitz;

/// The decision for one packet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Selection {
    /// The route that matched.
    pub prefix: Prefix,
    /// Index of the next hop in the route's group, in the order given.
    pub index: usize,
    /// Id of that next hop.
    pub id: NextHopId,
    /// The 31-bit multipath hash.
    pub hash: u32,
}

/// A router: its multipath hash configuration, an optional RSS hasher (a NIC that sets
/// `skb->l4_hash` on received TCP/UDP packets), and its FIB.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Router {
    hash: MultipathHasher,
    rss: Option<Toeplitz>,
    fib: Fib<NextHopGroup>,
}

impl Router {
    /// A router with an empty FIB.
    pub fn new(hash: HashConfig) -> Self {
        Self {
            hash: MultipathHasher::new(hash),
            rss: None,
            fib: Fib::new(),
        }
    }

    /// A router whose seed was not configured: a random seed from the scenario's generator, as a
    /// booted kernel picks one.
    pub fn with_random_seed(policy: Policy, fields: HashFields, rng: &mut SimRng) -> Self {
        Self::new(HashConfig::new(policy, fields, HashSeed::random(rng)))
    }

    /// The same router whose NIC computes an RSS hash for TCP/UDP packets, which policy 1 then
    /// uses instead of its own hash (forwarding path).
    pub fn with_rss(mut self, rss: Toeplitz) -> Self {
        self.rss = Some(rss);
        self
    }

    /// The hash configuration.
    pub const fn hash_config(&self) -> &HashConfig {
        self.hash.config()
    }

    /// The FIB.
    pub const fn fib(&self) -> &Fib<NextHopGroup> {
        &self.fib
    }

    /// Adds or replaces a route.
    pub fn add_route(&mut self, prefix: Prefix, group: NextHopGroup) -> Option<NextHopGroup> {
        self.fib.insert(prefix, group)
    }

    /// Removes a route.
    ///
    /// # Errors
    /// [`EcmpError::NoRoute`] when there is no such route.
    pub fn remove_route(&mut self, prefix: &Prefix) -> Result<NextHopGroup, EcmpError> {
        self.fib
            .remove(prefix)
            .ok_or_else(|| EcmpError::NoRoute(prefix.to_string()))
    }

    /// Applies an update to the group of `prefix` at `now`, and returns the share of that
    /// route's flow space whose next hop changed.
    ///
    /// # Errors
    /// No such route, or the update is refused by the group (the route is unchanged then).
    pub fn update_route(
        &mut self,
        prefix: &Prefix,
        update: &GroupUpdate,
        now: Instant,
    ) -> Result<Share, EcmpError> {
        let g = self
            .fib
            .get_mut(prefix)
            .ok_or_else(|| EcmpError::NoRoute(prefix.to_string()))?;
        let before = g.clone();
        g.apply(update, now)?;
        moved_share(&before, g)
    }

    /// Runs resilient-group upkeep on every route at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let prefixes: Vec<Prefix> = self.fib.routes().into_iter().map(|(p, _)| p).collect();
        for p in prefixes {
            if let Some(g) = self.fib.get_mut(&p)
                && g.poll_timeout().is_some_and(|t| t <= now)
            {
                g.upkeep(now);
            }
        }
    }

    /// The earliest time a resilient group needs upkeep.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fib
            .routes()
            .into_iter()
            .filter_map(|(_, g)| g.poll_timeout())
            .min()
    }

    /// The multipath hash this router computes for an input (31 bits).
    pub fn hash(&self, input: &HashInput) -> u32 {
        match &self.rss {
            // A NIC with RSS sets skb->l4_hash on TCP/UDP packets it receives.
            Some(rss) if input.l4_hash.is_none() => {
                let mut i = *input;
                i.l4_hash = rss.l4_hash(&i.flow);
                self.hash.hash(&i)
            }
            _ => self.hash.hash(input),
        }
    }

    /// The next hop for an input.
    ///
    /// # Errors
    /// [`EcmpError::NoRoute`] when no route covers the destination.
    pub fn select(&self, input: &HashInput) -> Result<Selection, EcmpError> {
        let dst: IpAddr = input.flow.dst();
        let (prefix, group) = self
            .fib
            .lookup(dst)
            .ok_or_else(|| EcmpError::NoRoute(dst.to_string()))?;
        let hash = self.hash(input);
        let index = group.select(hash);
        Ok(Selection {
            prefix,
            index,
            id: group.members()[index].id,
            hash,
        })
    }

    /// The next hop for a parsed packet (ICMP errors, fragments and labels as the kernel sees
    /// them; see [`HashInput::from_packet`]).
    ///
    /// # Errors
    /// [`EcmpError::NoRoute`].
    pub fn select_packet(&self, packet: &Packet<'_>) -> Result<Selection, EcmpError> {
        self.select(&HashInput::from_packet(packet))
    }

    /// Like [`Self::select`], and records the use of a resilient bucket at `now` (what keeps a
    /// busy bucket from migrating).
    ///
    /// # Errors
    /// [`EcmpError::NoRoute`].
    pub fn forward(&mut self, input: &HashInput, now: Instant) -> Result<Selection, EcmpError> {
        let dst: IpAddr = input.flow.dst();
        let hash = self.hash(input);
        let (prefix, group) = self
            .fib
            .lookup_mut(dst)
            .ok_or_else(|| EcmpError::NoRoute(dst.to_string()))?;
        let index = group.select_at(hash, now);
        Ok(Selection {
            prefix,
            index,
            id: group.members()[index].id,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{Algorithm, NextHop};
    use tierlab_wire::icmp::{IcmpError, build_error};
    use tierlab_wire::{FlowKey, IpProto, PacketBuilder, TcpFlags, TcpRepr, TcpSeq, rng};

    fn router(policy: Policy) -> Router {
        let mut r = Router::new(HashConfig::new(
            policy,
            HashFields::DEFAULT,
            HashSeed::Fixed(77),
        ));
        r.add_route(Prefix::default_route(true), NextHopGroup::equal(7).unwrap());
        r
    }

    #[test]
    fn packet_and_flow_agree_and_icmp_errors_depend_on_policy() {
        let syn = TcpRepr {
            sport: 41000,
            dport: 80,
            seq: TcpSeq(1),
            flags: TcpFlags::SYN,
            ..TcpRepr::default()
        };
        let bytes = PacketBuilder::new(
            "203.0.113.9".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
        .unwrap()
        .tcp(&syn, &[])
        .unwrap();
        let p = Packet::parse(&bytes, true).unwrap();
        let flow = p.flow_key();
        let err = build_error(
            &bytes,
            "192.0.2.1".parse().unwrap(),
            IcmpError::TooBig { mtu: 1400 },
            1,
        )
        .unwrap()
        .unwrap();
        let e = Packet::parse(&err, true).unwrap();
        for (policy, follows) in [(Policy::L3, true), (Policy::L4, false)] {
            let r = router(policy);
            let a = r.select_packet(&p).unwrap();
            assert_eq!(a, r.select(&HashInput::flow(flow)).unwrap());
            // The error goes towards the client (reverse direction). Under L3 it hashes like
            // the flow (the hash is symmetric); under L4 it hashes its own outer header.
            let ei = HashInput::from_packet(&e);
            assert!(ei.icmp_quote.is_some());
            let want = if follows {
                r.hash(&HashInput::flow(flow))
            } else {
                r.hash(&HashInput::flow(FlowKey::v4(
                    "192.0.2.1".parse().unwrap(),
                    "203.0.113.9".parse().unwrap(),
                    IpProto::Icmp,
                    0,
                    0,
                )))
            };
            assert_eq!(r.hash(&ei), want, "{policy:?}");
        }
    }

    #[test]
    fn random_seeds_come_from_the_scenario_rng() {
        let a = Router::with_random_seed(Policy::L4, HashFields::DEFAULT, &mut rng::seeded(1));
        let b = Router::with_random_seed(Policy::L4, HashFields::DEFAULT, &mut rng::seeded(1));
        let c = Router::with_random_seed(Policy::L4, HashFields::DEFAULT, &mut rng::seeded(2));
        assert_eq!(a.hash_config().seed, b.hash_config().seed);
        assert_ne!(a.hash_config().seed, c.hash_config().seed);
    }

    #[test]
    fn update_route_reports_the_moved_share() {
        let mut r = router(Policy::L4);
        let p = Prefix::default_route(true);
        let s = r
            .update_route(&p, &GroupUpdate::Remove(NextHopId(6)), Instant::ZERO)
            .unwrap();
        // 7 -> 6 equal slices under hash-threshold: 1/7 lost + the reshuffle of the rest.
        assert!(
            s.fraction() > 1.0 / 7.0 && s.fraction() < 0.6,
            "{}",
            s.fraction()
        );
        assert!(
            r.update_route(
                &Prefix::default_route(false),
                &GroupUpdate::Remove(NextHopId(0)),
                Instant::ZERO
            )
            .is_err()
        );
        let none = FlowKey::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            IpProto::Tcp,
            1,
            2,
            0,
        );
        assert!(matches!(
            r.select(&HashInput::flow(none)),
            Err(EcmpError::NoRoute(_))
        ));
    }

    #[test]
    fn rss_hash_replaces_policy_1_hash() {
        let base = router(Policy::L4);
        let rss = base.clone().with_rss(Toeplitz::default());
        let f = FlowKey::v4(
            "66.9.149.187".parse().unwrap(),
            "161.142.100.80".parse().unwrap(),
            IpProto::Tcp,
            2794,
            1766,
        );
        assert_eq!(rss.hash(&HashInput::flow(f)), 0x51cc_c178 >> 1);
        assert_ne!(
            base.hash(&HashInput::flow(f)),
            rss.hash(&HashInput::flow(f))
        );
        let mut res = Router::new(*base.hash_config());
        let g = NextHopGroup::new(
            Algorithm::Resilient(Default::default()),
            (0..3).map(NextHop::new).collect(),
            Instant::ZERO,
        )
        .unwrap();
        res.add_route(Prefix::default_route(true), g);
        let sel = res
            .forward(&HashInput::flow(f), Instant::from_secs(5))
            .unwrap();
        assert!(sel.index < 3);
        assert_eq!(res.poll_timeout(), None);
    }
}
