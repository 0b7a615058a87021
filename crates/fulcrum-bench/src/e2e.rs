//! Suite e2e: end-to-end forwarding rate through a veth lab, Fulcrum against a minimal
//! `XDP_TX` forwarder measured in the same lab and run.
//!
//! ```text
//!   one namespace of our own, three identical veth paths and a spare:
//!   gen0 ──veth── lb0   Fulcrum: VIP:80/tcp → 3 backends (permanent neighbours on lb0)
//!   gen1 ──veth── lb1   MAC-swap XDP_TX: the baseline
//!   gen2 ──veth── lb2   a second Fulcrum, fed only a few flows (attribution)
//!   gx0  ──veth── gx1   holds the generator, so it runs through the XDP dispatcher
//! ```
//! The generator (`bench_gen`) runs with `BPF_PROG_TEST_RUN` in live-frames mode, one
//! thread pinned per CPU, with `genN` as its "ingress" interface: its `XDP_TX` transmits
//! the frame into the veth, the forwarder on `lbN` sends it back with `XDP_TX`, and the
//! counter (`bench_count`) on `genN` counts it by destination MAC and drops it. Only what
//! reaches the counter is counted, and only in the MAC slots that path delivers to. The
//! generator threads stay up; the forwarders are fed in turn, a short window each,
//! rotating the order every round, so each round's figures share the machine's state.
//!
//! Each CPU generates, forwards and counts its own frames (the veth hops run in the
//! sending CPU's softirq), so a rate is the inverse of the whole path's CPU cost per
//! frame: the ratio to the baseline is (generator + veth + counter + MAC swap) over
//! (generator + veth + counter + Fulcrum). The traffic is TCP ACKs, so every flow is an
//! established one after its first packet (a non-SYN miss, during the warm-up).

mod figures;
mod lab;
mod traffic;

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use fulcrum::{Counter, Forwarding};
use fulcrum_lab::netns::{NetNs, unique_prefix};

use crate::{
    object::{self, OBJECT},
    report::Figure,
};

use figures::figures;
use lab::{BASELINE, FULCRUM, Forwarder, PATHS, STOP, balancer, build_lab, ifindex};
use traffic::{generate, per_cpu, read_sent, read_slots, sent_between, write_template};

/// The VIP; nothing in the lab holds it.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 90, 99, 1);
/// The service port.
const PORT: u16 = 80;
/// The generated traffic's client address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 90, 50, 7);
/// Backends per balancer.
const BACKENDS: u8 = 3;

/// Distinct source ports (flows) each generating CPU cycles through, for the figures.
const FLOWS_PER_CPU: u32 = 4096;
/// Flows per CPU for the attribution path: few enough that flow state stays in cache.
const FEW_FLOWS_PER_CPU: u32 = 16;
/// First source port.
const PORT_BASE: u32 = 10_000;
/// Generator threads, one pinned per CPU (the machines have 2).
const GEN_THREADS: usize = 2;
/// RX/TX queues of every veth: one per generating CPU, so CPUs do not share a ring.
const QUEUES: usize = GEN_THREADS;
/// Frames per live-frames batch (the kernel's default, NAPI's budget).
const BATCH: u32 = 64;
/// Frames per `BPF_PROG_TEST_RUN` call: a few milliseconds, so a switch of path reaches
/// every thread well within `SETTLE`.
const FRAMES_PER_CALL: u32 = 1 << 14;

/// Measured rounds; each feeds every path once, the order rotating every round.
const ROUNDS: usize = 30;
/// Counting window of one path in one round.
const WINDOW: Duration = Duration::from_millis(200);
/// Traffic before each window, not counted (the switch reaches every thread).
const SETTLE: Duration = Duration::from_millis(30);
/// The unmeasured warm-up round's window per path (fills the flow tables).
const WARMUP: Duration = Duration::from_millis(500);

/// Frame length the generator writes (`bench-ebpf`'s `GEN_FRAME_LEN`).
const FRAME_LEN: usize = 64;
/// Generator templates, indexed by ifindex (`bench-ebpf`'s `GEN_TEMPLATES`).
const TEMPLATES: u32 = 64;
/// Counter slots, the low 4 bits of the destination MAC (`bench-ebpf`'s `COUNT_SLOTS`).
const COUNT_SLOTS: u32 = 16;

/// What one path did in one counting window.
#[derive(Clone, Default)]
struct Segment {
    /// Frames delivered to the right place per second.
    pps: f64,
    /// Frames the generator produced per second.
    offered: f64,
    /// Delivered frames per counter slot.
    slots: Vec<u64>,
    /// Frames counted in other paths' slots during the window (a switch of path that
    /// reached a thread late).
    stray: u64,
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    run_with(Forwarding::L2Dsr)
}

/// The suite with Fulcrum's service forwarding as `forwarding` (the tunnel suite's
/// IP-in-IP rate; the backends stay on-link, so only the encapsulation differs).
pub fn run_with(forwarding: Forwarding) -> anyhow::Result<Vec<Figure>> {
    let ns = NetNs::create(&format!("{}-lb", unique_prefix("e2e")))?;
    build_lab(&ns).context("building the e2e lab")?;
    ns.run_in(|| measure(&ns, forwarding))?
}

/// Everything after the lab exists; runs with the calling thread inside `ns`.
fn measure(ns: &NetNs, forwarding: Forwarding) -> anyhow::Result<Vec<Figure>> {
    // The far end: one counter on every generator-side veth.
    let mut counter = Ebpf::load(OBJECT).context("loading the bench object (counter)")?;
    {
        let prog: &mut Xdp = counter
            .program_mut("bench_count")
            .context("no program bench_count")?
            .try_into()?;
        prog.load().context("verifying bench_count")?;
        for p in &PATHS {
            prog.attach(p.gen_iface, XdpMode::Driver)
                .with_context(|| format!("attaching bench_count to {}", p.gen_iface))?;
        }
    }
    let mut generator = object::attach("bench_gen", "gx0")?;
    let mut ingress = Vec::with_capacity(PATHS.len());
    let mut balancers = Vec::new();
    let mut baselines = Vec::new();
    for p in &PATHS {
        let ifindex = ifindex(p.gen_iface)?;
        write_template(&mut generator, ifindex, p)?;
        ingress.push(ifindex);
        match p.forwarder {
            Forwarder::Fulcrum => balancers.push(
                balancer(p, forwarding)
                    .with_context(|| format!("setting up Fulcrum on {}", p.lb_iface))?,
            ),
            Forwarder::Baseline => baselines.push(object::attach("bench_macswap", p.lb_iface)?),
        }
    }
    let stats_before = balancers
        .iter()
        .map(|lb| lb.stats().context("reading Fulcrum's counters"))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let program = object::program(&generator, "bench_gen")?;
    let counts = per_cpu::<u64>(&counter, "E2E_COUNTS")?;
    let sent = per_cpu::<u32>(&generator, "E2E_SENT")?;
    let phase = AtomicUsize::new(STOP);
    let rounds = thread::scope(|scope| {
        let workers: Vec<_> = (0..GEN_THREADS)
            .map(|cpu| {
                let (phase, ingress) = (&phase, &ingress);
                scope.spawn(move || generate(ns, program, ingress, cpu, phase))
            })
            .collect();
        let rounds = schedule(&phase, &counts, &sent);
        phase.store(STOP, Ordering::Relaxed);
        // A generator's failure explains a failed schedule: report it first.
        for (cpu, w) in workers.into_iter().enumerate() {
            w.join()
                .map_err(|_| anyhow!("generator thread {cpu} panicked"))?
                .with_context(|| format!("generator thread {cpu}"))?;
        }
        rounds
    })?;

    for (lb, before) in balancers.iter().zip(&stats_before) {
        let moved = lb
            .stats()
            .context("reading Fulcrum's counters")?
            .since(before);
        if moved.get(Counter::Drop) != 0 || moved.get(Counter::Tx) == 0 {
            bail!(
                "Fulcrum did not forward all the generated traffic; counters that moved: {:?}",
                moved.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>()
            );
        }
    }
    Ok(figures(&rounds))
}

/// Drives the generator threads through the warm-up and the rounds; returns the rounds,
/// each a segment per path (indexed as `PATHS`).
fn schedule(
    phase: &AtomicUsize,
    counts: &PerCpuArray<&MapData, u64>,
    sent: &PerCpuArray<&MapData, u32>,
) -> anyhow::Result<Vec<Vec<Segment>>> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let window = if round == 0 { WARMUP } else { WINDOW };
        let mut segments = vec![Segment::default(); PATHS.len()];
        for k in 0..PATHS.len() {
            let i = (round + k) % PATHS.len();
            let path = &PATHS[i];
            phase.store(i, Ordering::Relaxed);
            thread::sleep(SETTLE);
            let (c0, s0, t0) = (read_slots(counts)?, read_sent(sent)?, Instant::now());
            thread::sleep(window);
            let (c1, s1, t1) = (read_slots(counts)?, read_sent(sent)?, Instant::now());
            let secs = (t1 - t0).as_secs_f64();
            let slots: Vec<u64> = c1
                .iter()
                .zip(&c0)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            let delivered: u64 = path.slots().iter().filter_map(|s| slots.get(*s)).sum();
            let stray = slots.iter().sum::<u64>() - delivered;
            if delivered == 0 {
                bail!(
                    "{} delivered nothing to the counter (per MAC slot: {slots:?})",
                    path.name
                );
            }
            segments[i] = Segment {
                pps: delivered as f64 / secs,
                offered: sent_between(&s0, &s1) as f64 / secs,
                slots,
                stray,
            };
        }
        if round > 0 {
            if round % 10 == 0 {
                eprintln!(
                    "e2e: round {round}/{ROUNDS}: Fulcrum {:.2} Mpps, baseline {:.2} Mpps",
                    segments[FULCRUM].pps / 1e6,
                    segments[BASELINE].pps / 1e6
                );
            }
            rounds.push(segments);
        }
    }
    Ok(rounds)
}
