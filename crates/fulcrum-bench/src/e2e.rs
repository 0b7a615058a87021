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

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use fulcrum::{
    AttachMode, Balancer, Counter, Destination, Forwarding, Protocol, Service, ServiceId,
};
use fulcrum_lab::{
    frame::FrameBuilder,
    netns::{NetNs, unique_prefix},
};

use crate::{
    object::{self, OBJECT},
    report::Figure,
};

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

/// The generator's template; same layout as `GenTemplate` in `fulcrum-bench-ebpf`.
#[repr(C)]
#[derive(Clone, Copy)]
struct GenTemplate {
    frame: [u64; FRAME_LEN / 8],
    flows: u32,
    port_base: u32,
}

// SAFETY: plain integers, no padding (64 + 4 + 4 bytes).
unsafe impl aya::Pod for GenTemplate {}

/// What sits on a path's `lbN`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forwarder {
    Fulcrum,
    Baseline,
}

/// One veth path of the lab.
struct Path {
    /// For messages.
    name: &'static str,
    forwarder: Forwarder,
    /// The generator's side (counter attached) and the forwarder's side.
    gen_iface: &'static str,
    lb_iface: &'static str,
    gen_mac: [u8; 6],
    lb_mac: [u8; 6],
    /// The second octet of a Fulcrum path's subnet, 10.X.0.0/24 (backends .11 to .13).
    subnet: u8,
    /// A Fulcrum path's backends' MACs end in `first_slot..first_slot + BACKENDS`: their
    /// counter slots.
    first_slot: u8,
    /// Source ports per generating CPU.
    flows: u32,
}

/// The paths, in phase order (a phase is an index into this).
const PATHS: [Path; 3] = [
    Path {
        name: "Fulcrum",
        forwarder: Forwarder::Fulcrum,
        gen_iface: "gen0",
        lb_iface: "lb0",
        gen_mac: [0x02, 0xe2, 0, 0, 0, 0x0e],
        lb_mac: [0x02, 0xe2, 0, 0, 0, 0x0f],
        subnet: 90,
        first_slot: 1,
        flows: FLOWS_PER_CPU,
    },
    Path {
        name: "MAC-swap XDP_TX",
        forwarder: Forwarder::Baseline,
        gen_iface: "gen1",
        lb_iface: "lb1",
        // Baseline frames come back to the generator's MAC: counter slot 8.
        gen_mac: [0x02, 0xe2, 0, 0, 1, 0x08],
        lb_mac: [0x02, 0xe2, 0, 0, 1, 0x0f],
        subnet: 0,
        first_slot: 0,
        flows: FLOWS_PER_CPU,
    },
    Path {
        name: "Fulcrum, few flows",
        forwarder: Forwarder::Fulcrum,
        gen_iface: "gen2",
        lb_iface: "lb2",
        gen_mac: [0x02, 0xe2, 0, 0, 2, 0x0e],
        lb_mac: [0x02, 0xe2, 0, 0, 2, 0x0f],
        subnet: 91,
        first_slot: 4,
        flows: FEW_FLOWS_PER_CPU,
    },
];
const FULCRUM: usize = 0;
const BASELINE: usize = 1;
const FEW_FLOWS: usize = 2;
/// The phase that stops the generator threads.
const STOP: usize = PATHS.len();

impl Path {
    /// Backend `n` (1-based) of this path's balancer.
    fn backend(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 10 + n)
    }

    /// Its MAC: distinct per path; the low 4 bits of the last byte are its counter slot.
    fn backend_mac(&self, n: u8) -> [u8; 6] {
        [0x02, 0xbe, 0, 0, self.subnet, self.first_slot + n - 1]
    }

    /// Counter slots of the frames this path delivers correctly.
    fn slots(&self) -> Vec<usize> {
        match self.forwarder {
            Forwarder::Fulcrum => (0..BACKENDS)
                .map(|i| usize::from(self.first_slot + i))
                .collect(),
            Forwarder::Baseline => vec![usize::from(self.gen_mac[5]) % COUNT_SLOTS as usize],
        }
    }
}

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

/// The veth pairs in `ns`, `QUEUES` RX/TX queues each so every CPU has its own ring, and
/// each Fulcrum path's backends as permanent neighbours on its `lbN`.
fn build_lab(ns: &NetNs) -> anyhow::Result<()> {
    // No IPv6: the kernel's own router solicitations would only add noise.
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    let spare = (
        "gx0",
        [0x02, 0xe2, 0, 0, 3, 0],
        "gx1",
        [0x02, 0xe2, 0, 0, 3, 1],
    );
    let pairs = PATHS
        .iter()
        .map(|p| (p.gen_iface, p.gen_mac, p.lb_iface, p.lb_mac))
        .chain([spare]);
    let queues = QUEUES.to_string();
    for (a, a_mac, b, b_mac) in pairs {
        let q = ["numtxqueues", &queues, "numrxqueues", &queues];
        let mut args = vec!["link", "add", a];
        args.extend(q);
        args.extend(["type", "veth", "peer", "name", b]);
        args.extend(q);
        ns.ip(&args)?;
        for (dev, mac) in [(a, a_mac), (b, b_mac)] {
            ns.ip(&["link", "set", dev, "address", &fmt_mac(mac)])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
    }
    for p in PATHS.iter().filter(|p| p.forwarder == Forwarder::Fulcrum) {
        let addr = format!("10.{}.0.1/24", p.subnet);
        ns.ip(&["addr", "add", &addr, "dev", p.lb_iface])?;
        for n in 1..=BACKENDS {
            ns.ip(&[
                "neigh",
                "replace",
                &p.backend(n).to_string(),
                "lladdr",
                &fmt_mac(p.backend_mac(n)),
                "dev",
                p.lb_iface,
                "nud",
                "permanent",
            ])?;
        }
    }
    Ok(())
}

fn fmt_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
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

/// Fulcrum on the path's `lbN`, one service (VIP:80/tcp) on its three backends, all
/// resolved.
fn balancer(path: &Path, forwarding: Forwarding) -> anyhow::Result<Balancer> {
    let mut lb = Balancer::builder()
        .max_services(4)
        .max_flows(1 << 18)
        .build()
        .context("loading Fulcrum")?;
    lb.attach(path.lb_iface, AttachMode::Native)?;
    let id = ServiceId::new(VIP, PORT, Protocol::Tcp);
    let mut service = Service::new(id);
    service.forwarding = forwarding;
    lb.add_service(service)?;
    let dests: Vec<_> = (1..=BACKENDS)
        .map(|n| Destination::new(path.backend(n)))
        .collect();
    lb.set_destinations(&id, &dests)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        lb.refresh_neighbours()?;
        let resolved = lb
            .services()?
            .iter()
            .flat_map(|s| s.destinations.iter())
            .filter(|d| d.next_hop.is_some())
            .count();
        if resolved == usize::from(BACKENDS) {
            return Ok(lb);
        }
        if Instant::now() > deadline {
            bail!("only {resolved} of {BACKENDS} backends resolved after 5 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One generator thread, pinned to `cpu`: sends into the `genN` of the path `phase`
/// names, until `phase` is `STOP`.
fn generate(
    ns: &NetNs,
    program: &Xdp,
    ingress: &[u32],
    cpu: usize,
    phase: &AtomicUsize,
) -> anyhow::Result<()> {
    let result = (|| {
        let _guard = ns.enter()?;
        object::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
        let frame = [0u8; FRAME_LEN];
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let ctx: Vec<Vec<u8>> = ingress
            .iter()
            .map(|ifindex| {
                [0, FRAME_LEN as u32, 0, *ifindex, 0, 0]
                    .iter()
                    .flat_map(|v| v.to_ne_bytes())
                    .collect()
            })
            .collect();
        loop {
            let Some(ctx) = ctx.get(phase.load(Ordering::Relaxed)) else {
                return Ok(());
            };
            program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(ctx),
                    repeat: FRAMES_PER_CALL,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::default()
                })
                .context("BPF_PROG_TEST_RUN with live frames")?;
        }
    })();
    if result.is_err() {
        // Stop the others; the schedule then sees nothing delivered and stops too.
        phase.store(STOP, Ordering::Relaxed);
    }
    result
}

/// Writes the generator's template for frames sent into `ifindex`: a 64-byte TCP ACK
/// from CLIENT:0 to VIP:80, from the path's `genN` to its `lbN`.
fn write_template(generator: &mut Ebpf, ifindex: u32, path: &Path) -> anyhow::Result<()> {
    if ifindex >= TEMPLATES {
        bail!("ifindex {ifindex} is beyond the generator's {TEMPLATES} templates");
    }
    let bytes = FrameBuilder::tcp(SocketAddrV4::new(CLIENT, 0), SocketAddrV4::new(VIP, PORT))
        .macs(path.lb_mac, path.gen_mac)
        .payload(&[0; FRAME_LEN - 54])
        .build();
    if bytes.len() != FRAME_LEN {
        bail!("template is {} bytes, not {FRAME_LEN}", bytes.len());
    }
    let mut frame = [0u64; FRAME_LEN / 8];
    for (word, chunk) in frame.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    let template = GenTemplate {
        frame,
        flows: path.flows,
        port_base: PORT_BASE,
    };
    let mut map: Array<&mut MapData, GenTemplate> = generator
        .map_mut("E2E_TEMPLATE")
        .context("no map E2E_TEMPLATE")?
        .try_into()?;
    map.set(ifindex, template, 0)
        .context("writing the generator's template")?;
    Ok(())
}

fn per_cpu<'a, T: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &str,
) -> anyhow::Result<PerCpuArray<&'a MapData, T>> {
    Ok(ebpf
        .map(name)
        .with_context(|| format!("no map {name}"))?
        .try_into()?)
}

/// Every counter slot, summed over CPUs.
fn read_slots(map: &PerCpuArray<&MapData, u64>) -> anyhow::Result<Vec<u64>> {
    (0..COUNT_SLOTS)
        .map(|i| Ok(map.get(&i, 0).context("reading E2E_COUNTS")?.iter().sum()))
        .collect()
}

/// Frames each CPU has generated so far (a wrapping count).
fn read_sent(map: &PerCpuArray<&MapData, u32>) -> anyhow::Result<Vec<u32>> {
    Ok(map
        .get(&0, 0)
        .context("reading E2E_SENT")?
        .iter()
        .copied()
        .collect())
}

/// Frames generated between two `read_sent`s, over all CPUs.
fn sent_between(before: &[u32], after: &[u32]) -> u64 {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| u64::from(a.wrapping_sub(*b)))
        .sum()
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index)
}

/// Median, minimum and maximum.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    let min = v.first().copied().unwrap_or(0.0);
    let max = v.last().copied().unwrap_or(0.0);
    (median, min, max)
}

fn figures(rounds: &[Vec<Segment>]) -> Vec<Figure> {
    let of = |i: usize, f: fn(&Segment) -> f64| -> Vec<f64> {
        rounds.iter().filter_map(|r| r.get(i)).map(f).collect()
    };
    let ratio_to_baseline = |i: usize| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| Some(r.get(i)?.pps / r.get(BASELINE)?.pps))
            .collect()
    };
    let (f_med, f_min, f_max) = stats(of(FULCRUM, |s| s.pps));
    let (b_med, b_min, b_max) = stats(of(BASELINE, |s| s.pps));
    let (few_med, few_min, few_max) = stats(of(FEW_FLOWS, |s| s.pps));
    let (r_med, r_min, r_max) = stats(ratio_to_baseline(FULCRUM));
    let (few_r_med, ..) = stats(ratio_to_baseline(FEW_FLOWS));
    let (f_offered, ..) = stats(of(FULCRUM, |s| s.offered));
    let (b_offered, ..) = stats(of(BASELINE, |s| s.offered));
    let stray: u64 = rounds.iter().flatten().map(|s| s.stray).sum();
    let counted: u64 = rounds.iter().flatten().flat_map(|s| &s.slots).sum();
    let stray = 100.0 * stray as f64 / counted.max(1) as f64;

    // How evenly Fulcrum spread the flows over the backends, over all rounds.
    let per_backend: Vec<u64> = PATHS[FULCRUM]
        .slots()
        .into_iter()
        .map(|s| {
            rounds
                .iter()
                .filter_map(|r| r.get(FULCRUM)?.slots.get(s))
                .sum()
        })
        .collect();
    let total = per_backend.iter().sum::<u64>().max(1) as f64;
    let shares = per_backend
        .iter()
        .map(|n| format!("{:.1}", 100.0 * *n as f64 / total))
        .collect::<Vec<_>>()
        .join("/");

    let flows = GEN_THREADS as u32 * FLOWS_PER_CPU;
    let how = format!(
        "veth lab; 64 B TCP ACKs (established flows) to VIP:80 from {flows} source ports; \
         live-frames generator on {GEN_THREADS} pinned CPUs XDP_TX into the forwarder's veth, \
         forwarder XDP_TX back, XDP counter at the far end; median of {ROUNDS} rounds of \
         {} ms per forwarder, order rotated each round",
        WINDOW.as_millis()
    );
    let mpps = |v: f64| v / 1e6;
    vec![
        Figure::new(
            "e2e",
            format!("forwarding rate, Fulcrum, {flows} flows"),
            f_med,
            "pps",
        )
        .against("MAC-swap XDP_TX", b_med)
        .target(">= 80% of baseline", f_med >= 0.8 * b_med)
        .note(format!(
            "{how}; min-max {:.2}-{:.2} Mpps; backends {shares}%; generator sent {:.2} Mpps \
             (self-clocked: each CPU generates, forwards and counts its own frames)",
            mpps(f_min),
            mpps(f_max),
            mpps(f_offered)
        )),
        Figure::new(
            "e2e",
            "forwarding rate, baseline MAC-swap XDP_TX",
            b_med,
            "pps",
        )
        .note(format!(
            "same lab, run and rounds, its own veth pair; min-max {:.2}-{:.2} Mpps; generator \
             sent {:.2} Mpps",
            mpps(b_min),
            mpps(b_max),
            mpps(b_offered)
        )),
        Figure::new(
            "e2e",
            "forwarding rate, Fulcrum / baseline",
            100.0 * r_med,
            "%",
        )
        .target(">= 80%", r_med >= 0.8)
        .note(format!(
            "median of per-round ratios (both measured within 0.7 s); min-max {:.0}-{:.0}%; \
             frames counted in another path's window: {stray:.3}%",
            100.0 * r_min,
            100.0 * r_max
        )),
        Figure::new(
            "e2e",
            format!(
                "attribution: Fulcrum, {} flows",
                GEN_THREADS as u32 * FEW_FLOWS_PER_CPU
            ),
            few_med,
            "pps",
        )
        .against("MAC-swap XDP_TX", b_med)
        .note(format!(
            "a second Fulcrum on a third identical path, same rounds, flow state small \
             enough to stay in cache: the gap to the {flows}-flow figure is what the larger \
             flow working set costs; per-round ratio median {:.0}%; min-max {:.2}-{:.2} Mpps",
            100.0 * few_r_med,
            mpps(few_min),
            mpps(few_max)
        )),
    ]
}

#[cfg(test)]
mod tests {
    use fulcrum_lab::frame::checksum;

    use super::*;

    /// The generator's frames are the template with a cycling source port, and both
    /// checksums stay valid. Needs root (loads the program).
    #[test]
    fn generator_frames_are_valid() -> anyhow::Result<()> {
        let mut generator = Ebpf::load(OBJECT)?;
        let prog: &mut Xdp = generator
            .program_mut("bench_gen")
            .context("no bench_gen")?
            .try_into()?;
        prog.load()?;
        // Frames "arrive" on lo (ifindex 1) in the test's namespace.
        write_template(&mut generator, 1, &PATHS[FULCRUM])?;
        let template =
            FrameBuilder::tcp(SocketAddrV4::new(CLIENT, 0), SocketAddrV4::new(VIP, PORT))
                .macs(PATHS[FULCRUM].lb_mac, PATHS[FULCRUM].gen_mac)
                .payload(&[0; FRAME_LEN - 54])
                .build();
        let program = object::program(&generator, "bench_gen")?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            // Stale bytes, as a reused live frame would hold.
            let ran = fulcrum_lab::testrun::run_frame(program, &[0xa5; FRAME_LEN], 1)?;
            assert_eq!(ran.action, fulcrum_lab::testrun::action::TX);
            let f = ran.frame;
            assert_eq!(f.len(), FRAME_LEN);
            assert_eq!(f[..34], template[..34], "Ethernet and IPv4 as the template");
            assert_eq!(f[36..50], template[36..50], "TCP header as the template");
            assert_eq!(f[52..], template[52..], "payload as the template");
            assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 checksum");
            let mut pseudo = f[26..34].to_vec();
            pseudo.extend_from_slice(&[0, 6, 0, (FRAME_LEN - 34) as u8]);
            pseudo.extend_from_slice(&f[34..]);
            assert_eq!(checksum(&pseudo, 0), 0, "TCP checksum");
            ports.push(u16::from_be_bytes([f[34], f[35]]));
        }
        let range = PORT_BASE..PORT_BASE + GEN_THREADS as u32 * FLOWS_PER_CPU;
        assert!(
            ports.iter().all(|p| range.contains(&u32::from(*p))),
            "{ports:?}"
        );
        assert!(
            ports.windows(2).all(|w| w[1] == w[0] + 1),
            "cycling: {ports:?}"
        );
        Ok(())
    }
}
