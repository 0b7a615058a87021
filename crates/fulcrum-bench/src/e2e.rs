//! Suite e2e: end-to-end forwarding rate through a veth lab, Fulcrum against a minimal
//! `XDP_TX` forwarder measured in the same lab and run.
//!
//! ```text
//!   one namespace of our own:
//!   gen0 ──veth── lb0   Fulcrum (VIP:80/tcp → 3 backends, neighbours on lb0), XDP_TX
//!   gen1 ──veth── lb1   MAC-swap XDP_TX (the baseline)
//!   gx0  ──veth── gx1   spare: holds the generator, so it runs through the XDP dispatcher
//! ```
//! The generator (`bench_gen`) runs with `BPF_PROG_TEST_RUN` in live-frames mode, one
//! thread pinned per CPU, with `gen0` (or `gen1`) as its "ingress" interface: its `XDP_TX`
//! transmits the frame into the veth, the forwarder on the peer sends it back with
//! `XDP_TX`, and the counter (`bench_count`) attached to `gen0`/`gen1` counts it per
//! destination MAC and drops it. Only what reaches the counter is counted. The two
//! forwarders are fed in turn, the order swapped round by round.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use fulcrum::{AttachMode, Balancer, Counter, Destination, Protocol, Service, ServiceId};
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
/// The balancer's address on `lb0`; backends are permanent neighbours on that subnet.
const LB_ADDR: &str = "10.90.0.1/24";
/// Backends 1..=BACKENDS: address 10.90.0.1N, MAC 02:be:00:00:00:0N (counter slot N).
const BACKENDS: u8 = 3;

/// MACs; the low 4 bits of the last byte are the counter slot of frames sent to them.
const GEN0_MAC: [u8; 6] = [0x02, 0xe2, 0, 0, 0, 0x09];
const LB0_MAC: [u8; 6] = [0x02, 0xe2, 0, 0, 0, 0x0a];
const GEN1_MAC: [u8; 6] = [0x02, 0xe2, 0, 0, 1, 0x08];
const LB1_MAC: [u8; 6] = [0x02, 0xe2, 0, 0, 1, 0x0b];

/// Distinct source ports (flows) each generating CPU cycles through.
#[allow(non_snake_case)]
fn FLOWS_() -> u32 {
    exp("E2E_FLOWS", 4096) as u32
}
const FLOWS_PER_CPU: u32 = 4096;
/// First source port.
const PORT_BASE: u32 = 10_000;
fn exp(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
#[allow(non_snake_case)]
fn GEN_THREADS_() -> usize {
    exp("E2E_THREADS", 2)
}
#[allow(non_snake_case)]
fn QUEUES_() -> usize {
    exp("E2E_QUEUES", 2)
}
#[allow(non_snake_case)]
fn BATCH_() -> u32 {
    exp("E2E_BATCH", 64) as u32
}
const GEN_THREADS: usize = 2;
/// Frames per `BPF_PROG_TEST_RUN` call (bounds how long stopping takes).
const FRAMES_PER_CALL: u32 = 1 << 14;

/// Measured rounds; each feeds both forwarders once, order swapped every round.
const ROUNDS: usize = 40;
/// Counting window of one forwarder in one round.
const WINDOW: Duration = Duration::from_millis(200);
/// Traffic before each window, not counted (the switch reaches every thread).
const SETTLE: Duration = Duration::from_millis(30);
/// The unmeasured warm-up round's window (fills Fulcrum's flow table).
const WARMUP: Duration = Duration::from_millis(500);

/// Frame length the generator writes (`bench-ebpf`'s `GEN_FRAME_LEN`).
const FRAME_LEN: usize = 64;
/// Generator templates (`bench-ebpf`'s `GEN_TEMPLATES`).
const TEMPLATES: u32 = 64;
/// Counter slots (`bench-ebpf`'s `COUNT_SLOTS`).
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

/// Which forwarder a segment feeds; the value is the generator threads' phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    Fulcrum = 0,
    Baseline = 1,
}

/// Both forwarders, in phase order.
const FORWARDERS: [Forwarder; 2] = [Forwarder::Fulcrum, Forwarder::Baseline];
/// The phase that stops the generator threads.
const STOP: usize = 2;

impl Forwarder {
    fn name(self) -> &'static str {
        match self {
            Forwarder::Fulcrum => "Fulcrum",
            Forwarder::Baseline => "MAC-swap XDP_TX",
        }
    }

    /// The generator's ingress interface, and the MACs of the frames sent into it.
    fn path(self) -> (&'static str, [u8; 6], [u8; 6]) {
        match self {
            Forwarder::Fulcrum => ("gen0", LB0_MAC, GEN0_MAC),
            Forwarder::Baseline => ("gen1", LB1_MAC, GEN1_MAC),
        }
    }

    /// Counter slots of the frames this forwarder delivers correctly.
    fn slots(self) -> Vec<usize> {
        match self {
            Forwarder::Fulcrum => (1..=usize::from(BACKENDS)).collect(),
            Forwarder::Baseline => vec![slot(GEN1_MAC)],
        }
    }
}

/// One round: both forwarders, one window each.
#[derive(Default)]
struct Round {
    fulcrum: Segment,
    baseline: Segment,
}

fn slot(mac: [u8; 6]) -> usize {
    usize::from(mac[5]) % COUNT_SLOTS as usize
}

/// What one forwarder did in one counting window.
#[derive(Default)]
struct Segment {
    /// Frames delivered to the right place per second.
    pps: f64,
    /// Frames the generator produced per second.
    offered: f64,
    /// Delivered frames per counter slot.
    slots: Vec<u64>,
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    let ns = NetNs::create(&format!("{}-lb", unique_prefix("e2e")))?;
    build_lab(&ns).context("building the e2e lab")?;
    ns.run_in(|| measure(&ns))?
}

/// Three veth pairs in `ns`, two RX/TX queues each so every CPU has its own ring.
fn build_lab(ns: &NetNs) -> anyhow::Result<()> {
    // No IPv6: the kernel's own router solicitations would only add noise.
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    for (a, a_mac, b, b_mac) in [
        ("gen0", GEN0_MAC, "lb0", LB0_MAC),
        ("gen1", GEN1_MAC, "lb1", LB1_MAC),
        (
            "gx0",
            [0x02, 0xe2, 0, 0, 2, 0],
            "gx1",
            [0x02, 0xe2, 0, 0, 2, 1],
        ),
    ] {
        let queues = QUEUES_().to_string();
        ns.ip(&[
            "link",
            "add",
            a,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
        ])?;
        for (dev, mac) in [(a, a_mac), (b, b_mac)] {
            ns.ip(&["link", "set", dev, "address", &fmt_mac(mac)])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
    }
    ns.ip(&["addr", "add", LB_ADDR, "dev", "lb0"])?;
    for n in 1..=BACKENDS {
        ns.ip(&[
            "neigh",
            "replace",
            &backend(n).to_string(),
            "lladdr",
            &fmt_mac(backend_mac(n)),
            "dev",
            "lb0",
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 90, 0, 10 + n)
}

fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, n]
}

fn fmt_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Everything after the lab exists; runs with the calling thread inside `ns`.
fn measure(ns: &NetNs) -> anyhow::Result<Vec<Figure>> {
    // The far end: one counter on both generator-side veths.
    let mut counter = Ebpf::load(OBJECT).context("loading the bench object (counter)")?;
    {
        let prog: &mut Xdp = counter
            .program_mut("bench_count")
            .context("no program bench_count")?
            .try_into()?;
        prog.load().context("verifying bench_count")?;
        for iface in ["gen0", "gen1"] {
            prog.attach(iface, XdpMode::Driver)
                .with_context(|| format!("attaching bench_count to {iface}"))?;
        }
    }
    let _baseline = object::attach("bench_macswap", "lb1")?;
    let mut generator = object::attach("bench_gen", "gx0")?;
    let mut ingress = [0u32; 2];
    for (fwd, slot) in FORWARDERS.iter().zip(&mut ingress) {
        let (iface, dst, src) = fwd.path();
        *slot = ifindex(iface)?;
        write_template(&mut generator, *slot, dst, src)?;
    }
    let mut lb = balancer().context("setting up Fulcrum on lb0")?;
    let stats_before = lb.stats().context("reading Fulcrum's counters")?;

    let program = object::program(&generator, "bench_gen")?;
    let counts = per_cpu_u64(&counter, "E2E_COUNTS")?;
    let sent = per_cpu_u32(&generator, "E2E_SENT")?;
    let phase = AtomicUsize::new(STOP);
    let rounds = thread::scope(|scope| {
        let workers: Vec<_> = (0..GEN_THREADS_())
            .map(|cpu| {
                let phase = &phase;
                scope.spawn(move || generate(ns, program, ingress, cpu, phase))
            })
            .collect();
        let rounds = schedule(&phase, &counts, &sent);
        phase.store(STOP, Ordering::Relaxed);
        // A generator's failure explains a failed schedule: report it first.
        for (cpu, w) in workers.into_iter().enumerate() {
            w.join()
                .map_err(|_| anyhow::anyhow!("generator thread {cpu} panicked"))?
                .with_context(|| format!("generator thread {cpu}"))?;
        }
        rounds
    })?;

    let moved = lb
        .stats()
        .context("reading Fulcrum's counters")?
        .since(&stats_before);
    if moved.get(Counter::Drop) != 0 || moved.get(Counter::Tx) == 0 {
        bail!(
            "Fulcrum did not forward all the generated traffic; counters that moved: {:?}",
            moved.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>()
        );
    }
    lb.refresh_neighbours()
        .context("refreshing Fulcrum's neighbours")?;
    drop(lb);
    Ok(figures(&rounds))
}

/// Drives the generator threads through the warm-up and the rounds; returns the rounds.
fn schedule(
    phase: &AtomicUsize,
    counts: &PerCpuArray<&MapData, u64>,
    sent: &PerCpuArray<&MapData, u32>,
) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let window = if round == 0 { WARMUP } else { WINDOW };
        let order = if round % 2 == 0 {
            FORWARDERS
        } else {
            [FORWARDERS[1], FORWARDERS[0]]
        };
        let mut r = Round::default();
        for fwd in order {
            phase.store(fwd as usize, Ordering::Relaxed);
            thread::sleep(SETTLE);
            let (c0, s0, t0) = (read_slots(counts)?, read_sum(sent)?, Instant::now());
            thread::sleep(window);
            let (c1, s1, t1) = (read_slots(counts)?, read_sum(sent)?, Instant::now());
            let secs = (t1 - t0).as_secs_f64();
            let slots: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
            let delivered: u64 = fwd.slots().iter().filter_map(|s| slots.get(*s)).sum();
            let seg = Segment {
                pps: delivered as f64 / secs,
                offered: s1.wrapping_sub(s0) as f64 / secs,
                slots,
            };
            if seg.pps == 0.0 {
                bail!("{} delivered nothing to the counter", fwd.name());
            }
            match fwd {
                Forwarder::Fulcrum => r.fulcrum = seg,
                Forwarder::Baseline => r.baseline = seg,
            }
        }
        if round > 0 {
            rounds.push(r);
        }
    }
    Ok(rounds)
}

/// Fulcrum on `lb0` with one service (VIP:80/tcp) on the three backends, all resolved.
fn balancer() -> anyhow::Result<Balancer> {
    let mut lb = Balancer::builder()
        .max_services(4)
        .max_flows(1 << 18)
        .build()
        .context("loading Fulcrum")?;
    lb.attach("lb0", AttachMode::Native)?;
    let id = ServiceId::new(VIP, PORT, Protocol::Tcp);
    lb.add_service(Service::new(id))?;
    let dests: Vec<_> = (1..=BACKENDS)
        .map(|n| Destination::new(backend(n)))
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

/// One generator thread, pinned to `cpu`: sends into the interface of the forwarder
/// `phase` names, until `phase` is `STOP`.
fn generate(
    ns: &NetNs,
    program: &Xdp,
    ingress: [u32; 2],
    cpu: usize,
    phase: &AtomicUsize,
) -> anyhow::Result<()> {
    let result = (|| {
        let _guard = ns.enter()?;
        object::pin_to_cpu(cpu)?;
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
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH_()),
                    ..TestRunOptions::default()
                })
                .context("BPF_PROG_TEST_RUN with live frames")?;
        }
    })();
    if result.is_err() {
        // Stop the others, and the schedule, which then reports nothing delivered.
        phase.store(STOP, Ordering::Relaxed);
    }
    result
}

/// Writes the generator's template for frames sent into `ifindex`: a 64-byte TCP ACK
/// from CLIENT:0 to VIP:80.
fn write_template(
    generator: &mut Ebpf,
    ifindex: u32,
    dst: [u8; 6],
    src: [u8; 6],
) -> anyhow::Result<()> {
    if ifindex >= TEMPLATES {
        bail!("ifindex {ifindex} is beyond the generator's {TEMPLATES} templates");
    }
    let bytes = FrameBuilder::tcp(SocketAddrV4::new(CLIENT, 0), SocketAddrV4::new(VIP, PORT))
        .macs(dst, src)
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
        flows: FLOWS_(),
        port_base: PORT_BASE,
    };
    let mut map: Array<&mut MapData, GenTemplate> = generator
        .map_mut("E2E_TEMPLATE")
        .context("no map E2E_TEMPLATE")?
        .try_into()?;
    map.set(ifindex, template, 0)
        .context("writing the template")?;
    Ok(())
}

fn per_cpu_u64<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<PerCpuArray<&'a MapData, u64>> {
    Ok(ebpf
        .map(name)
        .with_context(|| format!("no map {name}"))?
        .try_into()?)
}

fn per_cpu_u32<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<PerCpuArray<&'a MapData, u32>> {
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

/// Frames generated so far, summed over CPUs (each CPU's count wraps at 2^32).
fn read_sum(map: &PerCpuArray<&MapData, u32>) -> anyhow::Result<u64> {
    Ok(map
        .get(&0, 0)
        .context("reading E2E_SENT")?
        .iter()
        .map(|v| u64::from(*v))
        .sum())
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn figures(rounds: &[Round]) -> Vec<Figure> {
    let f: Vec<f64> = rounds.iter().map(|r| r.fulcrum.pps).collect();
    let b: Vec<f64> = rounds.iter().map(|r| r.baseline.pps).collect();
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r.fulcrum.pps / r.baseline.pps)
        .collect();
    let offered_f = median(rounds.iter().map(|r| r.fulcrum.offered).collect());
    let offered_b = median(rounds.iter().map(|r| r.baseline.offered).collect());
    let (f_med, b_med, r_med) = (median(f.clone()), median(b.clone()), median(ratios.clone()));
    let (f_min, f_max) = spread(&f);
    let (b_min, b_max) = spread(&b);
    let (r_min, r_max) = spread(&ratios);

    // How evenly Fulcrum spread the flows over the backends, over all rounds.
    let per_backend: Vec<u64> = (1..=usize::from(BACKENDS))
        .map(|s| rounds.iter().filter_map(|r| r.fulcrum.slots.get(s)).sum())
        .collect();
    let total: u64 = per_backend.iter().sum::<u64>().max(1);
    let shares = per_backend
        .iter()
        .map(|n| format!("{:.1}", 100.0 * *n as f64 / total as f64))
        .collect::<Vec<_>>()
        .join("/");

    let how = format!(
        "veth lab, 64 B TCP ACKs to VIP:80 from {} source ports ({} CPUs × {FLOWS_PER_CPU}), \
         established flows; live-frames generator XDP_TX into the forwarder's veth, forwarder \
         XDP_TX back, XDP counter at the far end; median of {ROUNDS} rounds × {} s, order \
         swapped each round",
        GEN_THREADS as u32 * FLOWS_PER_CPU,
        GEN_THREADS,
        WINDOW.as_secs()
    );
    vec![
        Figure::new(
            "e2e",
            "forwarding rate, Fulcrum L2 DSR (XDP_TX)",
            f_med,
            "pps",
        )
        .against("MAC-swap XDP_TX", b_med)
        .target(">= 80% of baseline", f_med >= 0.8 * b_med)
        .note(format!(
            "{how}; range {:.2}–{:.2} Mpps; backends {shares}%; generator offered {:.1} Mpps",
            f_min / 1e6,
            f_max / 1e6,
            offered_f / 1e6
        )),
        Figure::new(
            "e2e",
            "forwarding rate, baseline MAC-swap XDP_TX",
            b_med,
            "pps",
        )
        .note(format!(
            "same lab and run, its own veth pair; range {:.2}–{:.2} Mpps; generator offered \
                 {:.1} Mpps",
            b_min / 1e6,
            b_max / 1e6,
            offered_b / 1e6
        )),
        Figure::new(
            "e2e",
            "forwarding rate, Fulcrum / baseline",
            100.0 * r_med,
            "%",
        )
        .target(">= 80%", r_med >= 0.8)
        .note(format!(
            "median of per-round ratios (each round measures both); range {:.0}–{:.0}%",
            100.0 * r_min,
            100.0 * r_max
        )),
    ]
}
