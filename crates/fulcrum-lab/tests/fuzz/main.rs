//! Fuzzing the real, verified program with BPF_PROG_TEST_RUN: random frames and frames
//! mutated from valid VIP traffic. Per frame, against an independent reading of the
//! documented rules (`fuzz/reference.rs`):
//! - the action and the reason are the ones the rules give for those bytes;
//! - a forwarded frame is the input byte for byte but for the two MACs (L2 DSR) and, for
//!   the backend on a VLAN, the 802.1Q tag (rewritten or pushed), and goes
//!   to a configured, usable backend of its service, the same one for every packet of a
//!   5-tuple;
//! - nothing the rules drop or pass is forwarded, and nothing is changed unless forwarded;
//! - the frame moved exactly one action counter and one reason counter, by one;
//! - flow sharing is on, and a frame yields at most one flow event, only when forwarded,
//!   naming its 5-tuple and the backend it went to: nothing malformed reaches the peers.
//!
//! `FUZZ_SEED` replays a run (the seed is printed), `FUZZ_FRAMES` sets how many frames
//! (default a million), `FUZZ_SECONDS` bounds the time. A failure prints the seed, the
//! frame's index and its bytes. `make fuzz` runs ten million frames.

mod mutate;
mod reference;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use fulcrum::{
    Counter, Destination, FlowEvent, FlowEvents, FlowRecord, GlobalStats, Protocol, Service,
    ServiceId,
};
use fulcrum_common::{BACKEND_V_VLAN, BackendValue, maps};
use fulcrum_lab::{
    fixture::{Fixture, VIP, VIP_ALL_PORTS, VIP_EMPTY, VIP6, backend, backend_mac, backend6},
    testrun::action,
};
use mutate::{ETH_HLEN, Rng, corpus, mutant};
use reference::{Expected, Svc, TCP, Tuple, UDP, classify};

const DEFAULT_FRAMES: u64 = 1_000_000;

const SERVICES: &[Svc] = &[
    Svc {
        vip: IpAddr::V4(VIP),
        port: 80,
        proto: TCP,
        backends: &[1, 2, 3],
    },
    Svc {
        vip: IpAddr::V4(VIP),
        port: 53,
        proto: UDP,
        backends: &[1, 2],
    },
    Svc {
        vip: IpAddr::V4(VIP_ALL_PORTS),
        port: 0,
        proto: TCP,
        backends: &[4],
    },
    Svc {
        vip: IpAddr::V4(VIP_EMPTY),
        port: 80,
        proto: TCP,
        backends: &[],
    },
    Svc {
        vip: IpAddr::V6(VIP6),
        port: 80,
        proto: TCP,
        backends: &[1, 2, 3],
    },
    Svc {
        vip: IpAddr::V6(VIP6),
        port: 53,
        proto: UDP,
        backends: &[3, 4],
    },
];

/// The backend whose value carries `BACKEND_V_VLAN` with [`TRUNK_VLAN`], as the library
/// writes it for a backend behind a VLAN sub-interface: its frames leave tagged.
const TAGGED_BACKEND: u8 = 4;
/// See [`TAGGED_BACKEND`].
const TRUNK_VLAN: u16 = 300;

/// Puts [`TAGGED_BACKEND`]'s slots on [`TRUNK_VLAN`] (this kernel has no VLAN links for
/// the library to learn it from).
fn tag_backend(f: &Fixture) {
    let mut slots: Array<MapData, BackendValue> =
        Array::try_from(f.map(maps::BACKENDS)).expect("BACKENDS");
    for slot in 1..64 {
        let Ok(mut b) = slots.get(&slot, 0) else {
            continue;
        };
        if b.ifindex != 0 && b.mac == backend_mac(TAGGED_BACKEND) {
            b.flags |= BACKEND_V_VLAN;
            b.vlan = TRUNK_VLAN.to_be();
            slots.set(slot, b, 0).expect("write the backend");
        }
    }
}

/// What leaves for backend `n`: the frame with the MACs rewritten, and for
/// [`TAGGED_BACKEND`] with its tag (rewritten, or pushed onto an untagged frame).
fn forwarded_as(frame: &[u8], n: u8, src_mac: [u8; 6]) -> Vec<u8> {
    let mut want = frame.to_vec();
    if n == TAGGED_BACKEND {
        if frame[12..14] == [0x81, 0x00] {
            want[14..16].copy_from_slice(&TRUNK_VLAN.to_be_bytes());
        } else {
            let tag = [[0x81, 0x00], TRUNK_VLAN.to_be_bytes()].concat();
            want.splice(12..12, tag);
        }
    }
    want[0..6].copy_from_slice(&backend_mac(n));
    want[6..12].copy_from_slice(&src_mac);
    want
}

/// Backend `n`'s address in the family of the service's VIP.
fn backend_of(vip: IpAddr, n: u8) -> IpAddr {
    match vip {
        IpAddr::V4(_) => IpAddr::V4(backend(n)),
        IpAddr::V6(_) => IpAddr::V6(backend6(n)),
    }
}

const ACTIONS: [Counter; 4] = [Counter::Tx, Counter::Redirect, Counter::Pass, Counter::Drop];

/// Counters of the flow event ring, checked through the events themselves.
const SHARING: [Counter; 2] = [Counter::FlowEventsEmitted, Counter::FlowEventsLost];

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
    /// Frames per expected reason, to show what the run covered.
    covered: BTreeMap<&'static str, u64>,
    events: FlowEvents,
    drained: Vec<FlowEvent>,
}

impl Fuzz {
    fn new(seed: u64) -> Self {
        let mut f = Fixture::with_builder(|b| b.share_flows(true));
        let events = f.lb.flow_events().expect("take the flow event ring");
        for svc in SERVICES {
            let protocol = if svc.proto == TCP {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let id = ServiceId::new(svc.vip, svc.port, protocol);
            f.lb.add_service(Service::new(id)).expect("add service");
            let dests: Vec<_> = svc
                .backends
                .iter()
                .map(|n| Destination::new(backend_of(svc.vip, *n)))
                .collect();
            f.lb.set_destinations(&id, &dests)
                .expect("set destinations");
        }
        tag_backend(&f);
        let stats = f.stats();
        Self {
            f,
            seed,
            stats,
            seen: HashMap::new(),
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

    fn check(&mut self, index: u64, frame: &[u8]) {
        let expected = classify(frame, SERVICES);
        let ran = self.f.run(frame);
        let shared = self.shared();
        let now = self.f.stats();
        let delta = now.since(&self.stats);
        self.stats = now;
        let moved: Vec<(Counter, u64)> = delta.iter().filter(|(_, v)| *v != 0).collect();
        let fail = |why: String| -> ! {
            let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "fuzz seed {} (FUZZ_SEED={}), frame {index}: {why}\n  frame ({} bytes): {hex}\n  \
                 rules say {expected:?}; program said action {}, counters moved {moved:?}",
                self.seed,
                self.seed,
                frame.len(),
                ran.action
            )
        };
        let actions: Vec<_> = moved.iter().filter(|(c, _)| ACTIONS.contains(c)).collect();
        let reasons: Vec<_> = moved
            .iter()
            .filter(|(c, _)| !ACTIONS.contains(c) && !SHARING.contains(c))
            .collect();
        if !matches!(expected, Expected::Forward { .. }) && !shared.is_empty() {
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
            Expected::Forward {
                backends,
                tuple,
                syn,
            } => {
                if ran.action != action::TX || counted_action != Counter::Tx {
                    fail("not forwarded (XDP_TX) though the rules forward it".into());
                }
                let dst: [u8; 6] = ran
                    .frame
                    .get(0..6)
                    .and_then(|m| m.try_into().ok())
                    .unwrap_or_default();
                let Some(n) = backends.iter().copied().find(|n| backend_mac(*n) == dst) else {
                    fail(format!(
                        "destination MAC {dst:02x?} is none of the service's backends {backends:?}"
                    ));
                };
                if n == TAGGED_BACKEND {
                    *self.covered.entry("vlan_retagged").or_default() += 1;
                }
                if ran.frame != forwarded_as(frame, n, self.f.fx0_mac) {
                    fail(
                        "the forwarded frame differs from the input beyond the MACs and the \
                         backend's VLAN tag"
                            .into(),
                    );
                }
                if let Some(record) = shared.first() {
                    let want = (
                        SocketAddr::new(tuple.src, tuple.sport),
                        SocketAddr::new(tuple.dst, tuple.dport),
                        backend_of(tuple.dst, n),
                    );
                    if (record.client, record.vip, record.backend) != want {
                        fail(format!(
                            "shared {record:?} for a frame of {tuple:?} sent to {n}"
                        ));
                    }
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
                let ok = if *syn {
                    reason == Counter::FlowNewSyn
                } else if before.is_none() {
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
        fuzz.covered.contains_key("vlan_retagged"),
        "no frame went to the backend on a VLAN"
    );
    if index >= DEFAULT_FRAMES {
        let missed: Vec<_> = REACHABLE
            .iter()
            .filter(|c| !fuzz.covered.contains_key(c.label()))
            .collect();
        assert!(missed.is_empty(), "{index} frames never reached {missed:?}");
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
];
