//! Next-hop groups: how a 31-bit multipath hash picks a next hop, and what share of the flow
//! space moves when the group changes.
//!
//! Three algorithms ([`Algorithm`]):
//! - **Hash-threshold** (Linux's multipath routes and `ip nexthop` groups of type `mpath`): each
//!   next hop owns a contiguous slice of the hash space sized by its weight; the first next hop
//!   whose upper bound is ≥ the hash wins. Mirrors net/ipv4/fib_semantics.c `fib_rebalance` and
//!   `fib_select_multipath`, net/ipv6/route.c `rt6_upper_bound_set` / `fib6_select_path`,
//!   net/ipv4/nexthop.c `nh_hthr_group_rebalance` / `nexthop_select_path_hthr` (Linux 6.18).
//! - **Modulo-N**: `hash % total_weight`, walked over the cumulative weights. Linux's IPv6 used
//!   this before 4.14 (`rt6_multipath_select`: `mp_hash % (nsiblings + 1)`); kept for
//!   comparison: almost every flow moves when N changes.
//! - **Resilient** (`ip nexthop ... type resilient`): `hash % buckets` picks a bucket; buckets
//!   are assigned to next hops in proportion to their weights and move only when a next hop
//!   leaves, or when a bucket of an over-weight next hop has been idle for `idle_timer` (or the
//!   group has been unbalanced for `unbalanced_timer`). Mirrors net/ipv4/nexthop.c
//!   `nh_res_group_rebalance`, `nh_res_table_upkeep`, `nh_res_bucket_should_migrate`,
//!   `nh_res_bucket_migrate`, `nh_res_table_migrate_buckets`, `nexthop_select_path_res`.
//!
//! ## Resilient timers: what is modelled
//! Each bucket keeps the virtual time it was last used ([`NextHopGroup::select_at`] records a
//! use) and last migrated. A bucket is idle `idle_timer` after its last use, or at once if it
//! has not been used since its last migration (so a group that never carried traffic
//! rebalances at once when changed; a group carrying traffic waits). [`NextHopGroup::upkeep`]
//! is the kernel's upkeep work: it walks the buckets in index order and hands every unoccupied
//! bucket, and every idle bucket of an over-weight next hop, to the head of the under-weight
//! list (built in reverse member order, as the kernel's `list_add` builds it); with
//! `unbalanced_timer` non-zero, once the group has been unbalanced longer than that, busy
//! buckets move too. The bucket tables were checked against `ip nexthop bucket show` on
//! Linux 6.18 (see the tests). [`NextHopGroup::poll_timeout`] says when
//! upkeep must run next, as the kernel's delayed work would. Not modelled: hardware offload
//! notifications, and the `jiffies` granularity (times are nanoseconds).

use serde::{Deserialize, Serialize};
use tierlab_wire::{Duration, Instant};

use crate::error::EcmpError;

/// The identity of a next hop (a nexthop object id, or the index of a gateway in a route):
/// what stays the same across updates, so flows can be followed.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct NextHopId(pub u32);

/// A next hop and its weight (1..=65535; Linux routes accept 1..=256).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct NextHop {
    /// Identity.
    pub id: NextHopId,
    /// Weight.
    pub weight: u32,
}

impl NextHop {
    /// A next hop of weight 1.
    pub const fn new(id: u32) -> Self {
        Self {
            id: NextHopId(id),
            weight: 1,
        }
    }

    /// A next hop with a weight.
    pub const fn weighted(id: u32, weight: u32) -> Self {
        Self {
            id: NextHopId(id),
            weight,
        }
    }
}

/// Parameters of a resilient group (`ip nexthop add id N group ... type resilient buckets B
/// idle_timer I unbalanced_timer U`).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct ResilientParams {
    /// Number of buckets (the kernel has no default: `buckets` must be given; tierlab's default
    /// is 128).
    pub buckets: u16,
    /// A bucket unused this long may move (kernel default 120 s).
    pub idle_timer: Duration,
    /// Once unbalanced this long, busy buckets move too; zero disables (kernel default 0).
    pub unbalanced_timer: Duration,
}

impl Default for ResilientParams {
    fn default() -> Self {
        Self {
            buckets: 128,
            idle_timer: Duration::from_secs(120),
            unbalanced_timer: Duration::ZERO,
        }
    }
}

/// How a group maps a hash to a next hop.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub enum Algorithm {
    /// Weighted hash-threshold (Linux's default for multipath routes).
    #[default]
    HashThreshold,
    /// Weighted modulo-N.
    Modulo,
    /// Resilient hashing with buckets.
    Resilient(ResilientParams),
}

/// A change to a group.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum GroupUpdate {
    /// Append a next hop (Linux appends a new gateway to the route's list).
    Add(NextHop),
    /// Remove a next hop (route changed, link down, BGP withdraw).
    Remove(NextHopId),
    /// Change a next hop's weight.
    Reweight(NextHopId, u32),
    /// The same next hops in another order (a route re-announced with its paths reordered).
    Reorder(Vec<NextHopId>),
    /// Replace all next hops.
    Replace(Vec<NextHop>),
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Bucket {
    nh: Option<NextHopId>,
    /// Last use (`used_time`).
    used: Instant,
    /// Last migration (`migrated_time`).
    migrated: Instant,
}

impl Bucket {
    /// nexthop.c `nh_res_bucket_idle_point` (Linux 6.18): a bucket not used since it was
    /// migrated is idle now; otherwise `idle_timer` after its last use.
    fn idle_point(&self, idle_timer: Duration, now: Instant) -> Instant {
        if self.used == self.migrated {
            now
        } else {
            self.used + idle_timer
        }
    }
}

#[derive(Clone, Debug, Eq, PartialEq)]
struct ResTable {
    params: ResilientParams,
    buckets: Vec<Bucket>,
    /// Buckets each member should have (`wants_buckets`), by member index.
    wants: Vec<u32>,
    /// Buckets each member has (`count_buckets`), by member index.
    counts: Vec<u32>,
    /// Under-weight members, head first (member indices).
    uw: Vec<usize>,
    unbalanced_since: Option<Instant>,
}

/// A next-hop group: members in order, and the structure that maps a hash to one of them.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct NextHopGroup {
    algorithm: Algorithm,
    members: Vec<NextHop>,
    /// Hash-threshold upper bounds, by member (`fib_nh_upper_bound`).
    bounds: Vec<i32>,
    total_weight: u64,
    res: Option<ResTable>,
}

/// The size of the hash space: hashes are 31 bits.
pub const HASH_SPACE: u64 = 1 << 31;

impl NextHopGroup {
    /// A group created at virtual time `now` (resilient buckets are filled at once, as the
    /// kernel's first upkeep does).
    ///
    /// # Errors
    /// Empty group, duplicate id, weight outside 1..=65535, zero buckets.
    pub fn new(
        algorithm: Algorithm,
        members: Vec<NextHop>,
        now: Instant,
    ) -> Result<Self, EcmpError> {
        validate(&members)?;
        let res = match algorithm {
            Algorithm::Resilient(p) if p.buckets == 0 => return Err(EcmpError::NoBuckets),
            Algorithm::Resilient(p) => Some(ResTable {
                params: p,
                buckets: vec![
                    Bucket {
                        nh: None,
                        used: now,
                        migrated: now
                    };
                    usize::from(p.buckets)
                ],
                wants: Vec::new(),
                counts: Vec::new(),
                uw: Vec::new(),
                unbalanced_since: None,
            }),
            _ => None,
        };
        let mut g = Self {
            algorithm,
            members,
            bounds: Vec::new(),
            total_weight: 0,
            res,
        };
        g.rebalance(now);
        Ok(g)
    }

    /// Equal-weight hash-threshold group of next hops `0..n`.
    ///
    /// # Errors
    /// `n == 0`.
    pub fn equal(n: u32) -> Result<Self, EcmpError> {
        Self::new(
            Algorithm::HashThreshold,
            (0..n).map(NextHop::new).collect(),
            Instant::ZERO,
        )
    }

    /// The algorithm.
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The members, in order.
    pub fn members(&self) -> &[NextHop] {
        &self.members
    }

    /// Hash-threshold upper bounds by member (meaningful for [`Algorithm::HashThreshold`]).
    pub fn upper_bounds(&self) -> &[i32] {
        &self.bounds
    }

    /// The next hop a 31-bit hash selects, as an index into [`Self::members`]. Does not record
    /// a use of a resilient bucket (see [`Self::select_at`]).
    pub fn select(&self, hash: u32) -> usize {
        match self.algorithm {
            Algorithm::HashThreshold => {
                let h = (hash & 0x7fff_ffff) as i32;
                // fib_select_multipath: first next hop with hash <= upper bound; the last bound
                // is 2^31 - 1, so one always matches.
                self.bounds.iter().position(|&ub| h <= ub).unwrap_or(0)
            }
            Algorithm::Modulo => {
                let mut r = u64::from(hash) % self.total_weight;
                for (i, m) in self.members.iter().enumerate() {
                    if r < u64::from(m.weight) {
                        return i;
                    }
                    r -= u64::from(m.weight);
                }
                0
            }
            Algorithm::Resilient(_) => self.bucket_member(self.bucket_of(hash)).unwrap_or(0),
        }
    }

    /// The id of the next hop a hash selects.
    pub fn select_id(&self, hash: u32) -> NextHopId {
        self.members[self.select(hash)].id
    }

    /// Selects like [`Self::select`] and, for a resilient group, records that the bucket was
    /// used at `now` (`nh_res_bucket_set_busy`), which keeps it from migrating.
    pub fn select_at(&mut self, hash: u32, now: Instant) -> usize {
        if let Some(res) = &mut self.res {
            let b = (hash as usize) % res.buckets.len();
            res.buckets[b].used = now;
        }
        self.select(hash)
    }

    /// The resilient bucket a hash falls in (`hash % num_nh_buckets`); 0 for other groups.
    pub fn bucket_of(&self, hash: u32) -> usize {
        self.res
            .as_ref()
            .map_or(0, |r| (hash as usize) % r.buckets.len())
    }

    /// The next hops of the resilient buckets, in bucket order (`ip nexthop bucket show`).
    pub fn buckets(&self) -> Vec<Option<NextHopId>> {
        self.res
            .as_ref()
            .map_or_else(Vec::new, |r| r.buckets.iter().map(|b| b.nh).collect())
    }

    fn bucket_member(&self, bucket: usize) -> Option<usize> {
        let id = self.res.as_ref()?.buckets.get(bucket)?.nh?;
        self.members.iter().position(|m| m.id == id)
    }

    /// Applies an update at virtual time `now`.
    ///
    /// # Errors
    /// The update names an unknown next hop, duplicates one, leaves the group empty, or has a
    /// bad weight; the group is unchanged then.
    pub fn apply(&mut self, update: &GroupUpdate, now: Instant) -> Result<(), EcmpError> {
        let mut members = self.members.clone();
        let pos = |ms: &[NextHop], id: NextHopId| {
            ms.iter()
                .position(|m| m.id == id)
                .ok_or(EcmpError::UnknownNextHop(id.0))
        };
        match update {
            GroupUpdate::Add(nh) => members.push(*nh),
            GroupUpdate::Remove(id) => {
                let i = pos(&members, *id)?;
                members.remove(i);
            }
            GroupUpdate::Reweight(id, w) => {
                let i = pos(&members, *id)?;
                members[i].weight = *w;
            }
            GroupUpdate::Reorder(order) => {
                if order.len() != members.len() {
                    return Err(EcmpError::BadReorder);
                }
                let mut next = Vec::with_capacity(order.len());
                for id in order {
                    let i = pos(&members, *id).map_err(|_| EcmpError::BadReorder)?;
                    next.push(members[i]);
                }
                members = next;
            }
            GroupUpdate::Replace(ms) => members.clone_from(ms),
        }
        validate(&members)?;
        self.members = members;
        if let Some(res) = &mut self.res {
            // nh_res_table_migrate_buckets: buckets whose next hop left become unoccupied.
            for b in &mut res.buckets {
                if let Some(id) = b.nh
                    && !self.members.iter().any(|m| m.id == id)
                {
                    b.nh = None;
                }
            }
        }
        self.rebalance(now);
        Ok(())
    }

    /// Changes a resilient group's timers (`ip nexthop replace ... idle_timer I unbalanced_timer
    /// U`); the bucket count cannot change and is kept. No-op for other groups.
    pub fn set_resilient_params(&mut self, params: ResilientParams) {
        if let (Algorithm::Resilient(p), Some(res)) = (&mut self.algorithm, &mut self.res) {
            let kept = ResilientParams {
                buckets: p.buckets,
                ..params
            };
            *p = kept;
            res.params = kept;
        }
    }

    /// Runs the resilient group's upkeep at `now` (no-op for other groups). Call it at
    /// [`Self::poll_timeout`].
    pub fn upkeep(&mut self, now: Instant) {
        let members = &self.members;
        let Some(res) = &mut self.res else { return };
        res_upkeep(res, members, now);
    }

    /// When the resilient group's upkeep must run next (`None`: balanced, or not resilient).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let res = self.res.as_ref()?;
        if res.uw.is_empty() {
            return None;
        }
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        };
        for b in &res.buckets {
            let Some(i) =
                b.nh.and_then(|id| self.members.iter().position(|m| m.id == id))
            else {
                continue;
            };
            if res.counts[i] > res.wants[i] {
                consider(b.idle_point(res.params.idle_timer, b.used));
            }
        }
        if res.params.unbalanced_timer > Duration::ZERO
            && let Some(since) = res.unbalanced_since
        {
            consider(since + res.params.unbalanced_timer + Duration::from_nanos(1));
        }
        deadline
    }

    fn rebalance(&mut self, now: Instant) {
        self.total_weight = self.members.iter().map(|m| u64::from(m.weight)).sum();
        // fib_rebalance: upper_bound = DIV_ROUND_CLOSEST_ULL(w << 31, total) - 1.
        let total = self.total_weight;
        let mut w = 0u64;
        self.bounds = self
            .members
            .iter()
            .map(|m| {
                w += u64::from(m.weight);
                (((w << 31) + total / 2) / total - 1) as i32
            })
            .collect();
        let members = &self.members;
        if let Some(res) = &mut self.res {
            let prev_has_uw = !res.uw.is_empty();
            let prev_since = res.unbalanced_since;
            res_rebalance(res, members, now);
            // replace_nexthop_grp_res keeps the old unbalanced_since when the group was already
            // unbalanced and still is.
            if prev_has_uw && !res.uw.is_empty() {
                res.unbalanced_since = prev_since;
            }
            res_upkeep(res, members, now);
        }
    }

    /// The flow space as periodic segments: `(period, [(start, member id)])`, segment starts
    /// ascending from 0 within one period.
    fn segments(&self) -> (u64, Vec<(u64, Option<NextHopId>)>) {
        match self.algorithm {
            Algorithm::HashThreshold => {
                let mut segs = Vec::new();
                let mut start = 0u64;
                for (m, &ub) in self.members.iter().zip(&self.bounds) {
                    let end = (i64::from(ub) + 1).max(0) as u64;
                    if end > start {
                        segs.push((start, Some(m.id)));
                        start = end;
                    }
                }
                (HASH_SPACE, segs)
            }
            Algorithm::Modulo => {
                let mut segs = Vec::new();
                let mut start = 0u64;
                for m in &self.members {
                    segs.push((start, Some(m.id)));
                    start += u64::from(m.weight);
                }
                (self.total_weight, segs)
            }
            Algorithm::Resilient(_) => {
                let b = self.buckets();
                let segs = b
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (i as u64, *id))
                    .collect();
                (b.len() as u64, segs)
            }
        }
    }

    /// The share of each member in the flow space (exact counts of 31-bit hashes), by member
    /// index.
    pub fn shares(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.members.len()];
        let (period, segs) = self.segments();
        for (k, &(start, id)) in segs.iter().enumerate() {
            let end = segs.get(k + 1).map_or(period, |s| s.0);
            let n = count_in_space(start, end, period);
            if let Some(i) = id.and_then(|id| self.members.iter().position(|m| m.id == id)) {
                out[i] += n;
            }
        }
        out
    }
}

fn validate(members: &[NextHop]) -> Result<(), EcmpError> {
    if members.is_empty() {
        return Err(EcmpError::EmptyGroup);
    }
    for (i, m) in members.iter().enumerate() {
        if m.weight == 0 || m.weight > 65535 {
            return Err(EcmpError::BadWeight {
                id: m.id.0,
                weight: m.weight,
            });
        }
        if members[..i].iter().any(|o| o.id == m.id) {
            return Err(EcmpError::DuplicateNextHop(m.id.0));
        }
    }
    Ok(())
}

/// nexthop.c `nh_res_group_rebalance` (Linux 6.18): wanted buckets by DIV_ROUND_CLOSEST of the
/// cumulative weight; under-weight members pushed at the head of the list.
fn res_rebalance(res: &mut ResTable, members: &[NextHop], now: Instant) {
    let n = res.buckets.len() as u64;
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    res.counts = members
        .iter()
        .map(|m| res.buckets.iter().filter(|b| b.nh == Some(m.id)).count() as u32)
        .collect();
    res.wants = Vec::with_capacity(members.len());
    res.uw.clear();
    res.unbalanced_since = None;
    let (mut w, mut prev) = (0u64, 0u64);
    for (i, m) in members.iter().enumerate() {
        w += u64::from(m.weight);
        let upper = (n * w + total / 2) / total;
        res.wants.push((upper - prev) as u32);
        prev = upper;
        if res.counts[i] < res.wants[i] {
            if res.uw.is_empty() {
                res.unbalanced_since = Some(now);
            }
            res.uw.insert(0, i);
        }
    }
}

/// nexthop.c `nh_res_table_upkeep` with `nh_res_bucket_should_migrate` and
/// `nh_res_bucket_migrate` (Linux 6.18).
fn res_upkeep(res: &mut ResTable, members: &[NextHop], now: Instant) {
    let idle = res.params.idle_timer;
    let unb = res.params.unbalanced_timer;
    for bi in 0..res.buckets.len() {
        let Some(&head) = res.uw.first() else { break };
        let b = res.buckets[bi];
        let cur = b.nh.and_then(|id| members.iter().position(|m| m.id == id));
        let migrate = match cur {
            None => true,
            Some(i) if res.counts[i] > res.wants[i] => {
                let idle_point = b.idle_point(idle, now);
                let unbalanced = unb > Duration::ZERO
                    && res.unbalanced_since.is_some_and(|since| now > since + unb);
                now >= idle_point || unbalanced
            }
            Some(_) => false,
        };
        if !migrate {
            continue;
        }
        if let Some(i) = cur {
            res.counts[i] -= 1;
        }
        res.counts[head] += 1;
        res.buckets[bi] = Bucket {
            nh: Some(members[head].id),
            used: now,
            migrated: now,
        };
        if res.counts[head] == res.wants[head] {
            res.uw.remove(0);
        }
    }
    if res.uw.is_empty() {
        res.unbalanced_since = None;
    }
}

/// How many 31-bit hashes `h` have `h % period` in `[start, end)`.
fn count_in_space(start: u64, end: u64, period: u64) -> u64 {
    if period >= HASH_SPACE {
        return end.min(HASH_SPACE).saturating_sub(start.min(HASH_SPACE));
    }
    let q = HASH_SPACE / period;
    let r = HASH_SPACE % period;
    (end - start) * q + end.min(r).saturating_sub(start.min(r))
}

/// How many integers `h` in `[lo, hi)` have `h % p == r`.
fn count_residue(lo: u64, hi: u64, r: u64, p: u64) -> u64 {
    // Numbers < x with residue r: ceil((x - r) / p) for x > r.
    let below = |x: u64| if x > r { (x - r).div_ceil(p) } else { 0 };
    below(hi) - below(lo)
}

/// A share of the 31-bit flow space, exactly: `moved` hashes out of `total` (2^31).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct Share {
    /// Hash values whose next hop changes.
    pub moved: u64,
    /// All hash values (2^31).
    pub total: u64,
}

impl Share {
    /// The share as a fraction in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.moved as f64 / self.total as f64
    }
}

/// The share of the flow space (31-bit hash values, each equally likely for random flows)
/// whose next hop — by id — differs between two groups. Computed over the thresholds,
/// residues and buckets, not sampled.
///
/// # Errors
/// [`EcmpError::ShareTooComplex`] when both groups are periodic (modulo or resilient) with
/// periods whose least common multiple would take too many steps to walk.
pub fn moved_share(before: &NextHopGroup, after: &NextHopGroup) -> Result<Share, EcmpError> {
    let (p1, s1) = before.segments();
    let (p2, s2) = after.segments();
    let total = HASH_SPACE;
    let moved = if p1 == HASH_SPACE || p2 == HASH_SPACE {
        if p1 == HASH_SPACE && p2 == HASH_SPACE {
            walk(&s1, p1, &s2, p2, HASH_SPACE)
        } else {
            // One threshold group against a periodic one: per interval, per residue.
            let (iv, iv_p, per, per_p) = if p1 == HASH_SPACE {
                (&s1, p1, &s2, p2)
            } else {
                (&s2, p2, &s1, p1)
            };
            let mut moved = 0u64;
            for (k, &(lo, id)) in iv.iter().enumerate() {
                let hi = iv.get(k + 1).map_or(iv_p, |s| s.0);
                for (j, &(rs, rid)) in per.iter().enumerate() {
                    if rid == id {
                        continue;
                    }
                    let re = per.get(j + 1).map_or(per_p, |s| s.0);
                    for r in rs..re {
                        moved += count_residue(lo, hi, r, per_p);
                    }
                }
            }
            moved
        }
    } else {
        let l = lcm(p1, p2);
        let steps = (l / p1) * s1.len() as u64 + (l / p2) * s2.len() as u64;
        if l > HASH_SPACE || steps > 50_000_000 {
            return Err(EcmpError::ShareTooComplex(p1, p2));
        }
        walk(&s1, p1, &s2, p2, l)
    };
    Ok(Share { moved, total })
}

/// Walks `[0, span)` over both periodic segment lists, counting the hash values (in the whole
/// 31-bit space, `span` being a common period) where the ids differ.
fn walk(
    s1: &[(u64, Option<NextHopId>)],
    p1: u64,
    s2: &[(u64, Option<NextHopId>)],
    p2: u64,
    span: u64,
) -> u64 {
    let at = |s: &[(u64, Option<NextHopId>)], p: u64, x: u64| {
        let off = x % p;
        let base = x - off;
        let k = s.partition_point(|seg| seg.0 <= off).saturating_sub(1);
        let next = s.get(k + 1).map_or(p, |seg| seg.0);
        (s.get(k).and_then(|seg| seg.1), base + next)
    };
    let mut x = 0u64;
    let mut moved = 0u64;
    while x < span {
        let (a, na) = at(s1, p1, x);
        let (b, nb) = at(s2, p2, x);
        let end = na.min(nb).min(span);
        if a != b {
            moved += count_in_space(x, end, span);
        }
        x = end;
    }
    moved
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hthr(ws: &[u32]) -> NextHopGroup {
        let ms = ws
            .iter()
            .enumerate()
            .map(|(i, &w)| NextHop::weighted(i as u32, w))
            .collect();
        NextHopGroup::new(Algorithm::HashThreshold, ms, Instant::ZERO).unwrap()
    }

    #[test]
    fn upper_bounds_follow_fib_rebalance() {
        let g = hthr(&[1, 1]);
        assert_eq!(g.upper_bounds(), &[(1 << 30) - 1, i32::MAX]);
        assert_eq!(g.select(0), 0);
        assert_eq!(g.select((1 << 30) - 1), 0);
        assert_eq!(g.select(1 << 30), 1);
        let g = hthr(&[1, 1, 1]);
        // DIV_ROUND_CLOSEST(2^31, 3) = 715827883 (2147483648/3 = 715827882.67).
        assert_eq!(g.upper_bounds()[0], 715_827_882);
        assert_eq!(g.upper_bounds()[2], i32::MAX);
        let w = hthr(&[1, 3]);
        assert_eq!(w.shares(), vec![1 << 29, 3 << 29]);
    }

    #[test]
    fn modulo_and_resilient_select() {
        let m = NextHopGroup::new(
            Algorithm::Modulo,
            vec![NextHop::weighted(7, 2), NextHop::new(9)],
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!([0, 1, 2, 3, 4, 5].map(|h| m.select(h)), [0, 0, 1, 0, 0, 1]);
        let p = ResilientParams {
            buckets: 8,
            ..ResilientParams::default()
        };
        let r = NextHopGroup::new(
            Algorithm::Resilient(p),
            vec![NextHop::new(1), NextHop::new(2)],
            Instant::ZERO,
        )
        .unwrap();
        // The under-weight list is built head-first in reverse: the last member gets the first
        // buckets.
        let two = Some(NextHopId(2));
        let one = Some(NextHopId(1));
        assert_eq!(r.buckets(), vec![two, two, two, two, one, one, one, one]);
        assert_eq!(r.select(9), 1); // bucket 1
        assert_eq!(r.shares().iter().sum::<u64>(), HASH_SPACE);
    }

    #[test]
    fn moved_share_hash_threshold_remove_last_and_first() {
        let before = hthr(&[1, 1, 1, 1]);
        let mut after = before.clone();
        after
            .apply(&GroupUpdate::Remove(NextHopId(3)), Instant::ZERO)
            .unwrap();
        // 4 -> 3 equal slices: [1/4,1/3) moves 1 -> 0, [1/2,2/3) moves 2 -> 1, [3/4,1) moves
        // 3 -> 2: 1/12 + 1/6 + 1/4 = 1/2, also recounted boundary by boundary.
        let s = moved_share(&before, &after).unwrap();
        let brute = brute_force(&before, &after);
        assert_eq!(s.moved, brute);
        assert!((s.fraction() - 0.5).abs() < 1e-6, "{}", s.fraction());
    }

    /// Exact count by checking each threshold crossing: for hash-threshold, the boundaries are
    /// known, so compare against a direct recount that walks every boundary of both.
    fn brute_force(a: &NextHopGroup, b: &NextHopGroup) -> u64 {
        let mut cuts: Vec<u64> = vec![0, HASH_SPACE];
        for g in [a, b] {
            cuts.extend(g.upper_bounds().iter().map(|&u| (i64::from(u) + 1) as u64));
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .filter(|w| a.select_id(w[0] as u32) != b.select_id(w[0] as u32))
            .map(|w| w[1] - w[0])
            .sum()
    }

    #[test]
    fn moved_share_periodic_groups_match_enumeration() {
        // Modulo with small totals: enumerate one lcm period and scale, cross-checking the walk.
        let mk = |n: u32| {
            NextHopGroup::new(
                Algorithm::Modulo,
                (0..n).map(NextHop::new).collect(),
                Instant::ZERO,
            )
            .unwrap()
        };
        for n in 2..9u32 {
            let (a, b) = (mk(n), mk(n + 1));
            let s = moved_share(&a, &b).unwrap();
            let mut direct = 0u64;
            let l = lcm(u64::from(n), u64::from(n + 1));
            for h in 0..l {
                if a.select_id(h as u32) != b.select_id(h as u32) {
                    direct += count_in_space(h, h + 1, l);
                }
            }
            assert_eq!(s.moved, direct, "n={n}");
            // Modulo N -> N+1 keeps h only where h % N == h % (N + 1): 1/(N+1) of the space
            // (up to the 2^31 edge).
            let kept = 1.0 - s.fraction();
            assert!(
                (kept - 1.0 / f64::from(n + 1)).abs() < 1e-6,
                "n={n}: {kept}"
            );
        }
        // Threshold vs modulo, by hand: halves [0, 2^30) -> 0 and [2^30, 2^31) -> 1 against
        // even -> 0, odd -> 1: the odd half of the first half and the even half of the second
        // move, 2^30 hashes.
        let t = hthr(&[1, 1]);
        let m = mk(2);
        assert_eq!(moved_share(&t, &m).unwrap().moved, 1 << 30);
        assert_eq!(moved_share(&m, &t).unwrap().moved, 1 << 30);
        let t3 = hthr(&[1, 1, 1]);
        let m3 = mk(3);
        assert_eq!(
            moved_share(&t3, &m3).unwrap(),
            moved_share(&m3, &t3).unwrap()
        );
    }

    #[test]
    fn resilient_remove_moves_only_the_removed_buckets() {
        let p = ResilientParams {
            buckets: 64,
            ..ResilientParams::default()
        };
        let before = NextHopGroup::new(
            Algorithm::Resilient(p),
            (0..4).map(NextHop::new).collect(),
            Instant::ZERO,
        )
        .unwrap();
        let mut after = before.clone();
        after
            .apply(&GroupUpdate::Remove(NextHopId(2)), Instant::from_secs(1))
            .unwrap();
        assert!(
            after
                .buckets()
                .iter()
                .all(|b| b.is_some() && *b != Some(NextHopId(2)))
        );
        let s = moved_share(&before, &after).unwrap();
        assert_eq!(s.moved, HASH_SPACE / 4);
        // A group that never carried traffic rebalances at once (its buckets are idle since
        // their migration), as the kernel does.
        let mut fresh = before.clone();
        fresh
            .apply(&GroupUpdate::Add(NextHop::new(9)), Instant::from_secs(1))
            .unwrap();
        assert_eq!(fresh.shares()[4], 13 * (HASH_SPACE / 64));
        // With traffic on every bucket, adding a next hop moves nothing until buckets have
        // been idle for idle_timer.
        let mut grown = before.clone();
        for h in 0..64 {
            grown.select_at(h, Instant::from_millis(500));
        }
        grown
            .apply(&GroupUpdate::Add(NextHop::new(9)), Instant::from_secs(1))
            .unwrap();
        assert_eq!(moved_share(&before, &grown).unwrap().moved, 0);
        let t = grown.poll_timeout().unwrap();
        assert_eq!(t, Instant::from_millis(120_500));
        grown.upkeep(t);
        let counts = grown.shares();
        assert_eq!(counts[4], 13 * (HASH_SPACE / 64)); // wants 13 of 64 buckets
        assert_eq!(grown.poll_timeout(), None);
    }

    #[test]
    fn resilient_busy_buckets_wait_for_unbalanced_timer() {
        let p = ResilientParams {
            buckets: 8,
            idle_timer: Duration::from_secs(10),
            unbalanced_timer: Duration::from_secs(30),
        };
        let mut g = NextHopGroup::new(
            Algorithm::Resilient(p),
            vec![NextHop::new(1)],
            Instant::ZERO,
        )
        .unwrap();
        g.apply(&GroupUpdate::Add(NextHop::new(2)), Instant::ZERO)
            .unwrap();
        // Keep every bucket busy.
        for s in 1..=40u64 {
            let now = Instant::from_secs(s);
            for h in 0..8 {
                g.select_at(h, now);
            }
            if let Some(t) = g.poll_timeout()
                && t <= now
            {
                g.upkeep(now);
            }
        }
        assert_eq!(g.shares(), vec![HASH_SPACE / 2, HASH_SPACE / 2]);
    }

    /// The bucket tables `ip nexthop bucket show` printed on Linux 6.18 for this sequence of
    /// `ip nexthop add/replace ... type resilient buckets 8` commands (idle_timer 0, then 100).
    #[test]
    fn resilient_tables_match_the_kernel() {
        let p0 = ResilientParams {
            buckets: 8,
            idle_timer: Duration::ZERO,
            ..ResilientParams::default()
        };
        let ids =
            |g: &NextHopGroup| -> Vec<u32> { g.buckets().iter().map(|b| b.unwrap().0).collect() };
        let mut g = NextHopGroup::new(
            Algorithm::Resilient(p0),
            vec![NextHop::new(1), NextHop::new(2), NextHop::new(3)],
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(ids(&g), [3, 3, 3, 2, 2, 1, 1, 1]);
        let t = Instant::from_secs(1);
        g.apply(&GroupUpdate::Remove(NextHopId(2)), t).unwrap();
        assert_eq!(ids(&g), [3, 3, 3, 3, 1, 1, 1, 1]);
        g.apply(&GroupUpdate::Add(NextHop::new(4)), t).unwrap();
        assert_eq!(ids(&g), [4, 4, 3, 3, 4, 1, 1, 1]);
        // idle_timer 100 s: only buckets unused since their last migration move at once.
        g.set_resilient_params(ResilientParams {
            idle_timer: Duration::from_secs(100),
            ..p0
        });
        g.apply(&GroupUpdate::Add(NextHop::new(2)), t).unwrap();
        assert_eq!(ids(&g), [2, 4, 3, 3, 4, 2, 1, 1]);
        let w = NextHopGroup::new(
            Algorithm::Resilient(ResilientParams { buckets: 16, ..p0 }),
            vec![NextHop::new(1), NextHop::weighted(2, 3), NextHop::new(3)],
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(ids(&w), [3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1]);
    }

    #[test]
    fn updates_are_validated() {
        let mut g = hthr(&[1, 1]);
        let e = g.apply(&GroupUpdate::Remove(NextHopId(5)), Instant::ZERO);
        assert_eq!(e, Err(EcmpError::UnknownNextHop(5)));
        let e = g.apply(&GroupUpdate::Reweight(NextHopId(0), 0), Instant::ZERO);
        assert_eq!(e, Err(EcmpError::BadWeight { id: 0, weight: 0 }));
        assert_eq!(g.members().len(), 2);
        g.apply(
            &GroupUpdate::Reorder(vec![NextHopId(1), NextHopId(0)]),
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(g.select_id(0), NextHopId(1));
        // Reordering two equal next hops swaps their halves: everything moves.
        assert_eq!(moved_share(&hthr(&[1, 1]), &g).unwrap().moved, HASH_SPACE);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn group_of(alg: u8, ws: &[u32]) -> NextHopGroup {
            let algorithm = match alg % 3 {
                0 => Algorithm::HashThreshold,
                1 => Algorithm::Modulo,
                _ => Algorithm::Resilient(ResilientParams {
                    buckets: 32,
                    ..ResilientParams::default()
                }),
            };
            let ms = ws
                .iter()
                .enumerate()
                .map(|(i, &w)| NextHop::weighted(i as u32, w))
                .collect();
            NextHopGroup::new(algorithm, ms, Instant::ZERO).unwrap()
        }

        proptest! {
            // A fixed seed: a test run is a function of the code (see tests/common/props.rs).
            #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7469_6572_6c61_6201), ..ProptestConfig::default() })]
            #[test]
            fn shares_cover_the_space_and_moves_are_symmetric(
                alg in 0u8..3,
                a in proptest::collection::vec(1u32..20, 1..10),
                b in proptest::collection::vec(1u32..20, 1..10),
                h in 0u32..(1 << 31),
            ) {
                let (ga, gb) = (group_of(alg, &a), group_of(alg, &b));
                prop_assert_eq!(ga.shares().iter().sum::<u64>(), HASH_SPACE);
                prop_assert!(ga.select(h) < a.len());
                let ab = moved_share(&ga, &gb).unwrap();
                prop_assert_eq!(ab, moved_share(&gb, &ga).unwrap());
                prop_assert_eq!(moved_share(&ga, &ga).unwrap().moved, 0);
                if ga.select_id(h) != gb.select_id(h) {
                    prop_assert!(ab.moved > 0);
                }
                if alg % 3 == 0 {
                    prop_assert_eq!(ab.moved, brute_force(&ga, &gb));
                }
            }

            #[test]
            fn quoted_header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                let _ = crate::hash::QuotedHeader::parse(&bytes);
            }
        }
    }
}
