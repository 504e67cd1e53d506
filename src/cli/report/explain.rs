//! Why a suite run's numbers differ from what the lab's README expects, citing the kernel
//! and daemon sources that decide it.
//!
//! Each explanation is written for one run and printed only when the measured numbers show
//! the difference it explains (so the page never explains a difference it did not measure).
//! Sources: torvalds/linux (net/netfilter/ipvs, net/ipv4) and acassen/keepalived, by function
//! name; the function names were read in those repositories, not recalled.

use tierlab_lab::report::{EventReport, RunReport};
use tierlab_lab::suite::SuiteRun;

/// Broken and broken-later totals of a run.
fn totals(r: &RunReport) -> (u64, u64) {
    (
        r.events.iter().map(|e| e.broken).sum(),
        r.events.iter().map(|e| e.broken_later).sum(),
    )
}

/// When each director's keepalived made `what` (e.g. `deleted proxy13`) after `e`, in
/// seconds after the event, and how many directors did.
fn keepalived_times(e: &EventReport, what: &str) -> Vec<f64> {
    let needle = format!("keepalived {what}");
    e.control
        .iter()
        .filter(|c| c.node.starts_with("director") && c.what == needle)
        .map(|c| c.at_s - e.at_s)
        .collect()
}

/// `n connection(s)`.
fn conns(n: u64) -> String {
    if n == 1 {
        "1 connection".to_owned()
    } else {
        format!("{n} connections")
    }
}

fn span(times: &[f64]) -> String {
    match (times.first(), times.last()) {
        (Some(a), Some(b)) if times.len() > 1 => format!("{a:.1} s to {b:.1} s"),
        (Some(a), _) => format!("{a:.1} s"),
        _ => "-".to_owned(),
    }
}

/// The paragraph explaining why `run` measured what it did, where that differs from the
/// README's expectation; `None` when the numbers show no such difference.
pub(crate) fn why(run: &SuiteRun, r: &RunReport) -> Option<String> {
    let (broken, later) = totals(r);
    let e = r.events.last()?;
    let target = e.target.as_deref().unwrap_or("the target");
    match run.name {
        "proxy_lost" if later > 0 => {
            let t = keepalived_times(e, &format!("deleted {target}"));
            Some(format!(
                "**proxy_lost** — the README expects only the dead proxy's connections to break: \
                 {broken} did, but {} opened *after* the failure broke too. \
                 keepalived notices a dead real server on each director separately: a check \
                 every `delay_loop` (10 s, each checker with its own phase), a 2 s connect \
                 timeout and one retry after `delay_before_retry` (1 s), so up to about 15 s; \
                 only then does `perform_svr_state()` (keepalived/check/ipwrapper.c) call \
                 `ipvs_cmd(LVS_CMD_DEL_DEST, …)`. Until its own keepalived acts, a director's \
                 `mh`/`sh` table still sends new flows to {target}, whose SYNs are lost. {}",
                conns(later),
                if t.is_empty() {
                    "In this run no director deleted it before the run ended.".to_owned()
                } else {
                    format!(
                        "In this run the directors deleted it {} after the failure ({} of them \
                         before the run ended).",
                        span(&t),
                        t.len()
                    )
                }
            ))
        }
        "backend_lost" if later > 0 => Some(format!(
            "**backend_lost** — the README expects only the dead backend's connections to break: \
             {broken} did, and {} opened after the loss broke too. Each proxy \
             keeps sending new sessions to the backend (`balance roundrobin`) until its own \
             health check marks it down: `fall 3` failed checks at `inter 2s`, about 6 s, on \
             each proxy separately. Those sessions get no answer from the backend and the \
             client's read times out.",
            conns(later)
        )),
        "proxy_drained" if broken + later > 0 => {
            let t = keepalived_times(e, &format!("deleted {target}"));
            Some(format!(
                "**proxy_drained** — the README hopes that putting a proxy in maintenance drains \
                 it; {broken} of its established connections broke instead (and {} opened \
                 after the agent change). The agent file makes HAProxy's `monitor-uri` fail, each \
                 director's HTTP_GET check fails and, without `inhibit_on_failure`, keepalived's \
                 `perform_svr_state()` deletes the real server (`LVS_CMD_DEL_DEST`; here {} after \
                 the change). In the kernel, `ip_vs_del_dest()` → `__ip_vs_unlink_dest()` \
                 (net/netfilter/ipvs/ip_vs_ctl.c) clears `IP_VS_DEST_F_AVAILABLE`, while the \
                 connection entries keep pointing at the destination. `ip_vs_in_hook()` \
                 (net/netfilter/ipvs/ip_vs_core.c; `ip_vs_in()` in older kernels) checks \"the \
                 server status\" of every packet's entry: with `expire_nodest_conn=0` it calls \
                 `__ip_vs_conn_put(cp)` and returns `NF_DROP` — the packet is dropped and the \
                 entry's timer is not refreshed. The proxy still holds the sessions but no client \
                 packet reaches it any more (the run's `dest_unavailable` drops), and the \
                 client's 2 s read timeout ends them. With `expire_nodest_conn=1` the entry is \
                 expired at once and the next packet is scheduled anew — to another proxy, which \
                 answers with a RST: the connection breaks either way; only a drain that keeps \
                 the destination (weight 0, next paragraph) lets it finish.",
                conns(later),
                span(&t)
            ))
        }
        "proxy_drained_inhibit" if later > 0 => Some(format!(
            "**proxy_drained_inhibit** — with `inhibit_on_failure`, keepalived's `ipvs_cmd()` \
             (keepalived/check/ipvswrapper.c) turns the delete into `IP_VS_SO_SET_EDITDEST` \
             with weight 0, so the established flows keep forwarding ({broken} broke, as the \
             kernel's rules predict). But {} opened after the change failed. A weight-0 \
             destination keeps its place in the lookup table: `__ip_vs_update_dest()` \
             (ip_vs_ctl.c) \"keep[s] the last_weight with latest non-0 weight\", and \
             `ip_vs_mh_permutate()` (ip_vs_mh.c) gives each destination its turns from \
             `last_weight`; `ip_vs_mh_get()` then returns no destination when the slot's \
             destination `is_unavailable()` (weight ≤ 0), unless the service has `mh-fallback` \
             (`ip_vs_mh_get_fallback()` walks on to another slot). `sh` does the same \
             (`ip_vs_sh_reassign()` still gives a weight-0 destination a bucket per round, \
             `ip_vs_sh_schedule()` refuses it). With no destination, `tcp_conn_schedule()` \
             (ip_vs_proto_tcp.c) hands the SYN to `ip_vs_leave()` (ip_vs_core.c), which answers \
             ICMP port unreachable and drops it: about one new flow in 13 fails for as long as \
             the proxy stays drained (the run's `no_destination` drops). The lab's services have \
             no fallback flag. The client's TCP takes the error as Linux's `tcp_v4_err()` / \
             `tcp_v6_err()` (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c) do: a connection in \
             SYN-SENT ends at once and its connect fails with ECONNREFUSED (cause `refused`); \
             the client then opens its next connection, which most likely hashes elsewhere.",
            conns(later)
        )),
        "proxy_check_flap" if e.director_views_after > 1 => {
            let del = keepalived_times(e, "deleted proxy1");
            let add = keepalived_times(e, "added back proxy1");
            Some(format!(
                "**proxy_check_flap** — director1 alone loses proxy1 for 20 s. Its keepalived \
                 deletes it ({} after the event; the entries of director1's flows to proxy1 are \
                 then dropped as in `proxy_drained`: {broken} established and {later} newer \
                 connections broke) and adds it back once the checks pass again ({} after). \
                 `ip_vs_add_dest()` takes the same destination back from the trash and \
                 `__ip_vs_update_dest()` (ip_vs_ctl.c) inserts it with \
                 `list_add_rcu(&dest->n_list, &svc->destinations)` — at the **head** of the \
                 list, whereas the other directors still hold proxy1 at the tail, where the \
                 initial configuration put it. `ip_vs_mh_populate()` (ip_vs_mh.c) fills the table \
                 by walking `svc->destinations` in list order, each destination taking its next \
                 preferred free slot in turn, so a different order gives some contested slots to \
                 different proxies: director1's tables no longer match the others' \
                 ({} different sets of tables at the end of the run), and stay so until every \
                 director rebuilds from the same list. Nothing breaks yet, but after the next \
                 ECMP change every flow that moves to or from director1 and hashes to one of \
                 those slots is scheduled on another proxy and reset.",
                span(&del),
                span(&add),
                e.director_views_after
            ))
        }
        "director_died" if broken + later > 0 => {
            let settle = e
                .control
                .iter()
                .filter(|c| c.node == "routers")
                .map(|c| c.at_s - e.at_s)
                .collect::<Vec<_>>();
            Some(format!(
                "**director_died** — not in the README. A director that dies does not withdraw \
                 its routes: the routers keep it in their ECMP groups until the BGP hold timer of \
                 its sessions expires (RFC 4271 §6.5; the lab's IPv6 peer group holds 3 s, IPv4 \
                 6 s, counted from its last keepalive: here the groups changed {} after the \
                 death). Until then, `fib_select_multipath()` (net/ipv4/fib_semantics.c) keeps \
                 hashing flows to it: with `fib_multipath_use_neigh=1` it skips a next hop only \
                 when `fib_good_nh()` finds its neighbour entry failed, which takes the \
                 neighbour subsystem's own probes (not modelled: tierlab keeps the dead director \
                 until the hold timer, the upper bound). Its connections ({broken}) and new ones \
                 hashed to it ({later}) read nothing for 2 s and fail; once the routers drop it, \
                 its flows move to directors that hold no entry for them but compute the same \
                 tables, and the rest survive.",
                span(&settle)
            ))
        }
        _ => None,
    }
}
