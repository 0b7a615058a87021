//! Fuzzing the real, verified program with BPF_PROG_TEST_RUN: random frames and frames
//! mutated from valid VIP traffic. Per frame, against an independent reading of the
//! documented rules (`fuzz/reference.rs`):
//! - the action and the reason are the ones the rules give for those bytes;
//! - a forwarded frame is the input byte for byte but for the two MACs (L2 DSR) and, for
//!   the backend on a VLAN, the 802.1Q tag (rewritten or pushed), and goes
//!   to a configured, usable backend of its service, the same one for every packet of a
//!   5-tuple;
//! - a tunnelled one (IP-in-IP 4in4, 4in6, 6in6; GUE over IPv4 and IPv6 on its own
//!   port; fixed and per-flow outer sources) carries the input's IP packet as it came
//!   behind the outer headers the rules give (`fuzz/tunnel.rs`: addresses, lengths, DF,
//!   TTL / hop limit, checksum, GUE ports), with the hash's fields (source host bits,
//!   flow label, GUE source port) in range, agreeing and fixed per 5-tuple; a packet over
//!   its backends' MTU once encapsulated is answered or dropped as the oversize rule says;
//! - nothing the rules drop or pass is forwarded, and nothing is changed unless forwarded;
//! - the frame moved exactly one action counter and one reason counter, by one;
//! - flow sharing is on, and a frame yields at most one flow event, only when forwarded
//!   (or found too big after its flow was pinned), naming its 5-tuple and the backend it
//!   went to; an ICMP error only promotes its flow's pending pin: nothing malformed
//!   reaches the peers;
//! - a flow enters the shared table (is pinned, counted, shared) only once proven: never
//!   by its first packet (unless that packet rewrites an entry the table holds), always
//!   by the further packet that finds its pending choice.
//!
//! `FUZZ_SEED` replays a run (the seed is printed), `FUZZ_FRAMES` sets how many frames
//! (default a million), `FUZZ_SECONDS` bounds the time. A failure prints the seed, the
//! frame's index and its bytes. `make fuzz` runs ten million frames.

mod l3;
mod mutate;
mod reference;
mod services;
mod tunnel;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use fulcrum::{
    Counter, Destination, FlowEvent, FlowEvents, FlowRecord, GlobalStats, Protocol, Service,
    ServiceId,
};
use fulcrum_lab::{
    fixture::{Fixture, backend_mac},
    testrun::action,
};
use mutate::{ETH_HLEN, Rng, corpus, mutant};
use reference::{Expected, Inner, Svc, TCP, Tuple, UDP, classify};
use services::{
    LINK_MTU, SERVICES, TAGGED_BACKEND, backend_addr, flow_record, forwarded_as, tag_backend,
};
use tunnel::Hashed;

const DEFAULT_FRAMES: u64 = 1_000_000;

const ACTIONS: [Counter; 4] = [Counter::Tx, Counter::Redirect, Counter::Pass, Counter::Drop];

/// Counters of the flow event ring, checked through the events themselves, and of the
/// flow table's inserts, checked against them.
const SHARING: [Counter; 4] = [
    Counter::FlowEventsEmitted,
    Counter::FlowEventsLost,
    Counter::FlowPinned,
    Counter::FlowPinOverBudget,
];

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?}: {e}")))
}

struct Fuzz {
    f: Fixture,
    seed: u64,
    stats: GlobalStats,
    /// The backend each forwarded 5-tuple went to.
    seen: HashMap<Tuple, u8>,
    /// 5-tuples an oversize first packet chose, to a backend no output named.
    pinned_unseen: HashSet<Tuple>,
    /// 5-tuples shared, so in the flow table as far as the run knows (the LRU may still
    /// drop them: their next first-packet miss takes them out).
    in_table: HashSet<Tuple>,
    /// The outer fields each tunnelled 5-tuple took from its hash.
    hashed: HashMap<Tuple, Hashed>,
    /// Frames per expected reason, to show what the run covered.
    covered: BTreeMap<&'static str, u64>,
    events: FlowEvents,
    drained: Vec<FlowEvent>,
}

impl Fuzz {
    fn new(seed: u64) -> Self {
        // No insert budget to speak of: the fixtures show the budget, this run the rule
        // that every proven flow is pinned.
        let mut f = Fixture::with_builder(|b| {
            b.share_flows(true)
                .max_services(16)
                .flow_insert_budget(u32::MAX)
        });
        tunnel::prepare(&f, SERVICES, LINK_MTU);
        let events = f.lb.flow_events().expect("take the flow event ring");
        for svc in SERVICES {
            let protocol = if svc.proto == TCP {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let id = ServiceId::new(svc.vip, svc.port, protocol);
            let mut service = Service::new(id);
            if let Some(t) = &svc.tunnel {
                service.forwarding = t.forwarding();
            }
            f.lb.add_service(service).expect("add service");
            let dests: Vec<_> = svc
                .backends
                .iter()
                .map(|n| Destination::new(backend_addr(svc, *n)))
                .collect();
            f.lb.set_destinations(&id, &dests)
                .expect("set destinations");
        }
        f.lb.refresh_neighbours().expect("refresh");
        tag_backend(&f);
        let stats = f.stats();
        Self {
            f,
            seed,
            stats,
            seen: HashMap::new(),
            hashed: HashMap::new(),
            pinned_unseen: HashSet::new(),
            in_table: HashSet::new(),
            covered: BTreeMap::new(),
            events,
            drained: Vec::new(),
        }
    }

    /// The flow records the frame's run emitted.
    fn shared(&mut self) -> Vec<FlowRecord> {
        self.drained.clear();
        self.events.drain(&mut self.drained);
        let records = self.f.lb.flow_records(&self.drained);
        assert_eq!(
            records.len(),
            self.drained.len(),
            "an event named a backend slot that is not in use"
        );
        records
    }

    /// Checks what left for the service's backend against the rules (L2 DSR: the frame
    /// with new MACs and the backend's tag; tunnels: `tunnel`, the hashed fields held to
    /// the flow's earlier packets); returns the backend.
    fn sent(
        &mut self,
        svc: &Svc,
        inner: Inner,
        frame: &[u8],
        out: &[u8],
        tuple: &Tuple,
    ) -> Result<u8, String> {
        let Some(t) = &svc.tunnel else {
            let dst: [u8; 6] = out
                .get(0..6)
                .and_then(|m| m.try_into().ok())
                .unwrap_or_default();
            let Some(n) = svc
                .backends
                .iter()
                .copied()
                .find(|n| backend_mac(*n) == dst)
            else {
                return Err(format!(
                    "destination MAC {dst:02x?} is none of the service's backends {:?}",
                    svc.backends
                ));
            };
            if n == TAGGED_BACKEND {
                *self.covered.entry("vlan_retagged").or_default() += 1;
            }
            if out != forwarded_as(frame, n, self.f.fx0_mac) {
                return Err(
                    "differs from the input beyond the MACs and the backend's VLAN tag".into(),
                );
            }
            return Ok(n);
        };
        let (n, hashed) = tunnel::check_output(out, frame, inner, t, svc.backends, self.f.fx0_mac)?;
        if let Some(before) = self.hashed.insert(*tuple, hashed)
            && before != hashed
        {
            return Err(format!(
                "the flow's hashed outer fields changed: {before:?}, now {hashed:?}"
            ));
        }
        *self.covered.entry(t.label(svc.vip)).or_default() += 1;
        Ok(n)
    }

    /// Whether `tuple`'s flow may be pinned to `n`: it is, or to a backend not seen.
    fn pinned(&self, tuple: &Tuple, n: u8) -> bool {
        self.seen.get(tuple) == Some(&n) || self.pinned_unseen.contains(tuple)
    }

    fn check(&mut self, index: u64, frame: &[u8]) {
        let expected = classify(frame, SERVICES);
        let ran = self.f.run(frame);
        let shared = self.shared();
        let now = self.f.stats();
        let delta = now.since(&self.stats);
        self.stats = now;
        let moved: Vec<(Counter, u64)> = delta.iter().filter(|(_, v)| *v != 0).collect();
        let seed = self.seed;
        let fail = |why: String| -> ! {
            let hex = |b: &[u8]| -> String { b.iter().map(|b| format!("{b:02x}")).collect() };
            panic!(
                "fuzz seed {seed} (FUZZ_SEED={seed}), frame {index}: {why}\n  frame ({} bytes): \
                 {}\n  rules say {expected:?}; program said action {}, counters moved \
                 {moved:?}, sent ({} bytes): {}",
                frame.len(),
                hex(frame),
                ran.action,
                ran.frame.len(),
                hex(&ran.frame)
            )
        };
        let actions: Vec<_> = moved.iter().filter(|(c, _)| ACTIONS.contains(c)).collect();
        let reasons: Vec<_> = moved
            .iter()
            .filter(|(c, _)| !ACTIONS.contains(c) && !SHARING.contains(c))
            .collect();
        // An ICMP error may only share the flow it is about, already pinned (a SYN's
        // pending choice earns its place in the table on the flow's next packet).
        let may_share = matches!(
            expected,
            Expected::Forward { .. } | Expected::Oversize { .. } | Expected::ForwardIcmp { .. }
        );
        if !may_share && !shared.is_empty() {
            fail(format!(
                "a frame that is not forwarded was shared: {shared:?}"
            ));
        }
        if shared.len() > 1 {
            fail(format!(
                "one frame shared {} flows: {shared:?}",
                shared.len()
            ));
        }
        let pinned = delta.get(Counter::FlowPinned);
        if delta.get(Counter::FlowPinOverBudget) != 0 {
            fail("over an unbounded budget".into());
        }
        if pinned > 1 || (pinned == 1 && shared.len() != 1) {
            fail(format!(
                "{pinned} flows pinned, {} shared: every insert is shared",
                shared.len()
            ));
        }
        if actions.len() != 1 || actions[0].1 != 1 || reasons.len() != 1 || reasons[0].1 != 1 {
            fail("not counted exactly once per action and once per reason".into());
        }
        let (counted_action, reason) = (actions[0].0, reasons[0].0);
        let untouched = |want_action: u32, want_counter: Counter, want_reason: Counter| {
            if ran.action != want_action || counted_action != want_counter || reason != want_reason
            {
                fail(format!(
                    "wrong verdict (want {want_counter:?} for {want_reason:?})"
                ));
            }
            if ran.frame != frame {
                fail("a frame that is not forwarded was changed".into());
            }
        };
        match &expected {
            Expected::Pass(r) => untouched(action::PASS, Counter::Pass, *r),
            Expected::Drop(r) => untouched(action::DROP, Counter::Drop, *r),
            Expected::Reply {
                frame: want,
                reason: r,
            } => {
                if ran.action != action::TX || counted_action != Counter::Tx || reason != *r {
                    fail(format!("wrong verdict (want Tx for {r:?})"));
                }
                if ran.frame != *want {
                    fail("the answer differs from the rules' reply".into());
                }
            }
            Expected::ForwardIcmp { svc, tuple, inner } => {
                if ran.action != action::TX || reason != Counter::IcmpErrorForwarded {
                    fail("an ICMP error about a flow was not forwarded".into());
                }
                let n = self
                    .sent(svc, *inner, frame, &ran.frame, tuple)
                    .unwrap_or_else(|why| fail(format!("forwarded ICMP error: {why}")));
                if let Some(b) = self.seen.get(tuple)
                    && *b != n
                {
                    fail(format!(
                        "ICMP error for {tuple:?} went to {n}, its flow to {b}"
                    ));
                }
                if let Some(record) = shared.first() {
                    if !self.pinned(tuple, n) || *record != flow_record(svc, tuple, n) {
                        fail(format!(
                            "an ICMP error sent to {n} shared {record:?}, not its pinned flow's"
                        ));
                    }
                    self.seen.insert(*tuple, n);
                    self.in_table.insert(*tuple);
                }
            }
            Expected::Oversize {
                svc,
                tuple,
                answer,
                icmp,
                syn: _,
            } => {
                match answer {
                    Some(want) => {
                        if ran.action != action::TX
                            || counted_action != Counter::Tx
                            || reason != Counter::IcmpTooBigSent
                        {
                            fail("an oversize packet was not answered".into());
                        }
                        if ran.frame != *want {
                            fail("the oversize answer differs from the rules'".into());
                        }
                    }
                    None => untouched(action::DROP, Counter::Drop, Counter::DropTooBig),
                }
                // A new flow is pinned before its packet is found too big; an ICMP error
                // pins nothing new.
                if let Some(record) = shared.first() {
                    let n = svc
                        .backends
                        .iter()
                        .copied()
                        .find(|n| *record == flow_record(svc, tuple, *n));
                    let Some(n) = n.filter(|n| !*icmp || self.pinned(tuple, *n)) else {
                        fail(format!(
                            "shared {record:?} for an oversize packet of {tuple:?}"
                        ));
                    };
                    if self.seen.insert(*tuple, n).is_some_and(|b| b != n) {
                        fail(format!("5-tuple pinned to {n}, earlier to another"));
                    }
                    self.in_table.insert(*tuple);
                } else if !*icmp && !self.seen.contains_key(tuple) {
                    // Cached, pending the flow's next packet: no event yet.
                    self.pinned_unseen.insert(*tuple);
                }
            }
            Expected::Forward {
                svc,
                tuple,
                syn,
                inner,
            } => {
                if ran.action != action::TX || counted_action != Counter::Tx {
                    fail("not forwarded (XDP_TX) though the rules forward it".into());
                }
                let n = self
                    .sent(svc, *inner, frame, &ran.frame, tuple)
                    .unwrap_or_else(|why| fail(format!("forwarded frame: {why}")));
                if let Some(record) = shared.first()
                    && *record != flow_record(svc, tuple, n)
                {
                    fail(format!(
                        "shared {record:?} for a frame of {tuple:?} sent to {n}"
                    ));
                }
                let before = self.seen.insert(*tuple, n);
                if before.is_some_and(|b| b != n) {
                    fail(format!(
                        "5-tuple went to backend {n}, earlier to {before:?}"
                    ));
                }
                let fresh = if tuple.proto == UDP {
                    Counter::FlowNewUdp
                } else {
                    Counter::FlowMissNonSyn
                };
                let unseen = self.pinned_unseen.remove(tuple);
                let ok = if *syn {
                    reason == Counter::FlowNewSyn
                } else if before.is_none() && !unseen {
                    reason == fresh
                } else {
                    reason == fresh || reason == Counter::FlowHit
                };
                if !ok {
                    fail(format!(
                        "reason {reason:?} for a forwarded frame (seen before: {})",
                        before.is_some()
                    ));
                }
                // Unproven: a first packet (a miss) waits in the cache and pins nothing;
                // a SYN may only rewrite an entry the table holds.
                let first = *syn || reason == fresh;
                if first && pinned != 0 {
                    fail("a flow's first packet inserted it into the flow table".into());
                }
                if reason == fresh {
                    if !shared.is_empty() {
                        fail(format!("an unproven flow was shared: {shared:?}"));
                    }
                    self.in_table.remove(tuple);
                } else if *syn {
                    if !shared.is_empty() && !self.in_table.contains(tuple) {
                        fail(format!(
                            "a SYN shared a flow the table did not hold: {shared:?}"
                        ));
                    }
                } else if !self.in_table.contains(tuple) {
                    // The further packet that finds the pending choice proves the flow.
                    if pinned != 1 {
                        fail("a proven flow was not pinned".into());
                    }
                    self.in_table.insert(*tuple);
                    *self.covered.entry("proven").or_default() += 1;
                }
            }
        }
        *self.covered.entry(reason.label()).or_default() += 1;
        *self.covered.entry("shared").or_default() += shared.len() as u64;
    }
}

#[test]
fn every_frame_follows_the_documented_rules() {
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let frames = env_u64("FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let limit = env_u64("FUZZ_SECONDS").map(Duration::from_secs);
    println!("fuzz seed {seed} (FUZZ_SEED={seed} replays it), up to {frames} frames");
    let mut fuzz = Fuzz::new(seed);
    let corpus = corpus();
    let start = Instant::now();
    let mut index = 0u64;
    // Every valid frame, then every truncation of it.
    for frame in &corpus {
        for len in (ETH_HLEN..=frame.len()).rev() {
            fuzz.check(index, &frame[..len]);
            index += 1;
        }
    }
    let mut rng = Rng::new(seed);
    while index < frames && limit.is_none_or(|l| start.elapsed() < l) {
        let frame = mutant(&mut rng, &corpus);
        fuzz.check(index, &frame);
        index += 1;
    }
    println!(
        "fuzz seed {seed}: {index} frames in {:.1?}, all as the rules say; per reason: {:?}",
        start.elapsed(),
        fuzz.covered
    );
    assert!(
        fuzz.covered.get("shared").is_some_and(|n| *n > 0),
        "no forwarded flow was shared"
    );
    assert!(
        fuzz.covered.get("proven").is_some_and(|n| *n > 0),
        "no flow was proven by a further packet"
    );
    assert!(
        fuzz.covered.contains_key("vlan_retagged"),
        "no frame went to the backend on a VLAN"
    );
    if index >= DEFAULT_FRAMES {
        let missed: Vec<_> = REACHABLE
            .iter()
            .filter(|c| !fuzz.covered.contains_key(c.label()))
            .collect();
        assert!(missed.is_empty(), "{index} frames never reached {missed:?}");
        let modes: Vec<_> = SERVICES
            .iter()
            .filter_map(|s| Some(s.tunnel?.label(s.vip)))
            .filter(|l| !fuzz.covered.contains_key(l))
            .collect();
        assert!(
            modes.is_empty(),
            "{index} frames never tunnelled in {modes:?}"
        );
    }
}

/// Every reason this configuration can give: a long enough run reaches each of them.
const REACHABLE: &[Counter] = &[
    Counter::PassMalformedL2,
    Counter::PassNotIp,
    Counter::PassMalformedIp,
    Counter::PassNotVip,
    Counter::PassNoService,
    Counter::DropBadIpHeader,
    Counter::DropIpLength,
    Counter::DropIpOptions,
    Counter::DropFragment,
    Counter::DropIpv6ExtHeaders,
    Counter::PassIcmp,
    Counter::DropTruncatedL4,
    Counter::DropBadL4Header,
    Counter::DropNoBackend,
    Counter::FlowHit,
    Counter::FlowNewSyn,
    Counter::FlowNewUdp,
    Counter::FlowMissNonSyn,
    Counter::DropBadIcmp,
    Counter::IcmpEchoReply,
    Counter::IcmpErrorForwarded,
    Counter::IcmpTooBigSent,
    Counter::DropTooBig,
];
