//! Suite `control`: the control plane's costs, each against a same-run baseline.
//!
//! - Maglev table computation (M = 65537, N = 10, 100, 1000) against filling the trivial
//!   round-robin table of the same size.
//! - How long a destination removal takes to reach the data plane: in a lab namespace, SYN
//!   frames that went to the removed backend are run through the attached program with
//!   `BPF_PROG_TEST_RUN` until none goes there any more.
//! - Applying 1,000 services × 10 backends to a fresh balancer, against the Maglev builds
//!   alone; plus the balancer's load time and the kernel memory of its maps.
//! - Maglev's disruption when one of 100 backends leaves, against the leaving backend's
//!   own share (the unavoidable part).

#[path = "control_lab.rs"]
mod lab;

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use fulcrum::{
    AttachMode, Balancer, Destination, Protocol, Service, ServiceId,
    maglev::{self, Member},
    netlink::Netlink,
};
use fulcrum_lab::{
    frame::FrameBuilder,
    testrun::{action, run_frame},
};

use crate::{object, report::Figure};

use lab::{Lab, Spread};

const SUITE: &str = "control";
/// Table size the targets are stated for.
const M: u32 = maglev::DEFAULT_SIZE;

/// Runs the suite: Maglev build times, disruption, removal latency, bulk apply.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(1)
        .or_else(|_| object::pin_to_cpu(0))
        .context("pinning the control suite to one CPU")?;
    let mut figures = maglev_build_times().context("Maglev build times")?;
    figures.extend(disruption().context("Maglev disruption")?);
    figures.extend(removal_latency().context("removal latency to the data plane")?);
    figures.extend(bulk_apply().context("applying 1,000 services × 10 backends")?);
    Ok(figures)
}

/// `n` members with ids `1..=n`, equal weights, addresses from `first` upwards.
fn members(n: u32, first: Ipv4Addr) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: i + 1,
            address: IpAddr::V4(Ipv4Addr::from(u32::from(first) + i)),
            weight: 1,
        })
        .collect()
}

/// `n` members with equal weights at scattered addresses (a fixed pseudo-random sequence).
fn scattered_members(n: u32) -> Vec<Member> {
    let mut seen = std::collections::BTreeSet::new();
    let mut x: u32 = 0x2545_f491;
    let mut out = Vec::new();
    while out.len() < n as usize {
        // xorshift32: deterministic, so every run measures the same sets.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if seen.insert(x) {
            out.push(Member {
                id: out.len() as u32 + 1,
                address: IpAddr::V4(Ipv4Addr::from(x)),
                weight: 1,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 1. Maglev table computation.

const MAGLEV_ROUNDS: usize = 21;
const MAGLEV_SIZES: [u32; 3] = [10, 100, 1000];

fn maglev_build_times() -> anyhow::Result<Vec<Figure>> {
    let sets: Vec<Vec<Member>> = MAGLEV_SIZES
        .iter()
        .map(|&n| members(n, Ipv4Addr::new(10, 1, 0, 1)))
        .collect();
    let ids: Vec<u32> = (1..=1000).collect();
    // Case 0 is the baseline (round-robin fill), cases 1.. the Maglev sizes.
    let cases = sets.len() + 1;
    let mut samples = vec![Vec::with_capacity(MAGLEV_ROUNDS); cases];
    for round in 0..=MAGLEV_ROUNDS {
        // Rotate the order each round; round 0 warms up and is discarded.
        for k in 0..cases {
            let case = (k + round) % cases;
            let start = Instant::now();
            if case == 0 {
                let table = round_robin(black_box(&ids), M);
                black_box(&table);
            } else {
                let table = maglev::build(black_box(&sets[case - 1]), M)
                    .context("building a Maglev table")?;
                black_box(&table);
            }
            let took = start.elapsed();
            if round > 0 {
                samples[case].push(micros(took));
            }
        }
    }
    let baseline = Spread::of(&samples[0])?;
    let mut figures = Vec::new();
    for (i, &n) in MAGLEV_SIZES.iter().enumerate() {
        let s = Spread::of(&samples[i + 1])?;
        let mut f = Figure::new(SUITE, format!("Maglev build M=65537 N={n}"), s.median, "µs")
            .against("round-robin fill", baseline.median)
            .note(format!(
                "maglev::build, equal weights; {}; baseline: 65537-slot Vec<u32> filled \
                 round-robin over 1000 ids, {}",
                s.text("µs"),
                baseline.text("µs")
            ));
        if n == 1000 {
            f = f.target("< 50 ms", s.median < 50_000.0);
        }
        figures.push(f);
    }
    Ok(figures)
}

/// The trivial table: slot `i` goes to `ids[i % len]`.
fn round_robin(ids: &[u32], size: u32) -> Vec<u32> {
    ids.iter().copied().cycle().take(size as usize).collect()
}

// ---------------------------------------------------------------------------------------
// 4. Disruption when one of 100 backends leaves.

const DISRUPTION_N: u32 = 100;

struct Leave {
    /// Slots the leaving backend owned.
    own: usize,
    /// Other slots whose owner changed.
    extra: usize,
}

fn disruption() -> anyhow::Result<Vec<Figure>> {
    let sets = [
        (
            "consecutive",
            members(DISRUPTION_N, Ipv4Addr::new(10, 1, 0, 1)),
        ),
        ("scattered", scattered_members(DISRUPTION_N)),
    ];
    let mut leaves = Vec::new();
    for (label, set) in &sets {
        let before = maglev::build(set, M).context("building the 100-backend table")?;
        for gone in 0..set.len() {
            let mut rest = set.clone();
            let removed = rest.remove(gone);
            let after = maglev::build(&rest, M).context("building the 99-backend table")?;
            ensure!(
                after.iter().all(|&s| s != removed.id),
                "{label} set: backend {} still owns slots after leaving",
                removed.address
            );
            let own = before.iter().filter(|&&s| s == removed.id).count();
            let changed = maglev::changed_slots(&before, &after);
            leaves.push(Leave {
                own,
                extra: changed - own,
            });
        }
    }
    let pct = |slots: usize| 100.0 * slots as f64 / f64::from(M);
    let extra: Vec<f64> = leaves.iter().map(|l| pct(l.extra)).collect();
    let own: Vec<f64> = leaves.iter().map(|l| pct(l.own)).collect();
    let extra_s = Spread::of(&extra)?;
    let own_s = Spread::of(&own)?;
    let extra_mean = mean(&extra);
    let own_mean = mean(&own);
    let count = leaves.len();
    let how = format!(
        "each of 100 backends leaves in turn, 2 address sets (consecutive 10.1.0.1.., \
         scattered), M=65537; {count} removals"
    );
    Ok(vec![
        Figure::new(
            SUITE,
            "Maglev disruption 1 of 100 leaves, worst",
            extra_s.max,
            "%",
        )
        .against("leaver's own share", own_mean)
        .target("< 1.5% of M beyond own", extra_s.max < 1.5)
        .note(format!(
            "slots changing owner beyond the leaver's own, % of M (ideal 0); {how}"
        )),
        Figure::new(
            SUITE,
            "Maglev disruption 1 of 100 leaves, mean",
            extra_mean,
            "%",
        )
        .against("leaver's own share", own_mean)
        .note(format!(
            "beyond the leaver's own slots, % of M; median {:.3}, range {:.3}–{:.3}; {how}",
            extra_s.median, extra_s.min, extra_s.max
        )),
        Figure::new(SUITE, "Maglev leaver's own share (N=100)", own_mean, "%")
            .against("ideal 1/N", 100.0 / f64::from(DISRUPTION_N))
            .note(format!(
                "slots the leaving backend owned, % of M; range {:.3}–{:.3}; {how}",
                own_s.min, own_s.max
            )),
    ])
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

// ---------------------------------------------------------------------------------------
// 2. A backend removal, from the API call to the data plane.

const REMOVAL_BACKENDS: u8 = 10;
const REMOVAL_FLOWS: u16 = 2000;
const REMOVAL_REPS: usize = 11;
/// A removal not visible after this long is a failure, not a figure.
const REMOVAL_GIVE_UP: Duration = Duration::from_secs(5);

fn removal_latency() -> anyhow::Result<Vec<Figure>> {
    let lab = Lab::new("ctl", REMOVAL_BACKENDS)?;
    let _inside = lab.enter()?;
    let mut lb = Balancer::builder()
        .max_services(4)
        .max_flows(1 << 16)
        .build()
        .context("loading the balancer")?;
    lb.attach(lab::VETH, AttachMode::Native)
        .context("attaching the balancer")?;
    let ingress = lab::ifindex(lab::VETH)?;
    let vip = Ipv4Addr::new(10, 77, 99, 1);
    let web = ServiceId::new(vip, 80, Protocol::Tcp);
    let service = Service::new(web);
    lb.add_service(service).context("adding the service")?;
    let dests: Vec<Destination> = (0..REMOVAL_BACKENDS)
        .map(|i| Destination::new(lab::backend(i)))
        .collect();
    lb.set_destinations(&web, &dests)
        .context("setting the destinations")?;

    let client = Ipv4Addr::new(10, 77, 50, 7);
    let syns: Vec<Vec<u8>> = (0..REMOVAL_FLOWS)
        .map(|i| {
            FrameBuilder::tcp(
                SocketAddrV4::new(client, 20_000 + i),
                SocketAddrV4::new(vip, 80),
            )
            .syn()
            .build()
        })
        .collect();
    // Where each SYN goes with all backends present.
    let owner = |lb: &Balancer, frame: &[u8]| -> anyhow::Result<u8> {
        let ran = run_frame(lb.program()?, frame, ingress)?;
        ensure!(
            ran.action == action::TX,
            "a SYN to the VIP got action {} (want XDP_TX)",
            ran.action
        );
        let mac: [u8; 6] = ran
            .frame
            .get(0..6)
            .and_then(|m| m.try_into().ok())
            .context("output frame shorter than an Ethernet header")?;
        lab::backend_of_mac(mac, REMOVAL_BACKENDS)
            .with_context(|| format!("destination MAC {mac:02x?} is no backend's"))
    };
    let mut owners = Vec::with_capacity(syns.len());
    for syn in &syns {
        owners.push(owner(&lb, syn)?);
    }

    let mut reach = Vec::new();
    let mut call = Vec::new();
    let mut sweep = Vec::new();
    let mut add_reach = Vec::new();
    let mut noop = Vec::new();
    let mut probes = Vec::new();
    let mut most_polls = 0;
    for rep in 0..REMOVAL_REPS {
        let victim = (rep % usize::from(REMOVAL_BACKENDS)) as u8;
        let address = lab::backend(victim);
        let theirs: Vec<&[u8]> = syns
            .iter()
            .zip(&owners)
            .filter(|(_, o)| **o == victim)
            .map(|(s, _)| s.as_slice())
            .collect();
        ensure!(
            !theirs.is_empty(),
            "none of {REMOVAL_FLOWS} flows went to backend {address}"
        );
        probes.push(theirs.len() as f64);

        // Baselines: the probe sweep with nothing changing, and a one-map-write API call.
        let start = Instant::now();
        for frame in &theirs {
            ensure!(
                owner(&lb, frame)? == victim,
                "flows moved before the removal"
            );
        }
        sweep.push(millis(start.elapsed()));
        let start = Instant::now();
        lb.update_service(service)
            .context("updating the service (unchanged)")?;
        noop.push(micros(start.elapsed()));

        let t0 = Instant::now();
        lb.remove_destination(&web, address)
            .with_context(|| format!("removing {address}"))?;
        call.push(micros(t0.elapsed()));
        let polls = wait_until(t0, || {
            for frame in &theirs {
                if owner(&lb, frame)? == victim {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .with_context(|| format!("waiting for {address} to leave the data plane"))?;
        reach.push(millis(t0.elapsed()));
        most_polls = most_polls.max(polls);

        // Back in: the same address gives the same table, so its flows return.
        let t0 = Instant::now();
        lb.add_destination(&web, Destination::new(address))
            .with_context(|| format!("re-adding {address}"))?;
        let polls = wait_until(t0, || {
            for frame in &theirs {
                if owner(&lb, frame)? != victim {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .with_context(|| format!("waiting for {address} to return to the data plane"))?;
        add_reach.push(millis(t0.elapsed()));
        most_polls = most_polls.max(polls);
    }

    let reach_s = Spread::of(&reach)?;
    let call_s = Spread::of(&call)?;
    let sweep_s = Spread::of(&sweep)?;
    let add_s = Spread::of(&add_reach)?;
    let noop_s = Spread::of(&noop)?;
    let probes_s = Spread::of(&probes)?;
    let setup = format!(
        "1 service, {REMOVAL_BACKENDS} backends (permanent neighbours on a veth), \
         {REMOVAL_REPS} removals rotating the backend, re-added between"
    );
    Ok(vec![
        Figure::new(
            SUITE,
            "backend removal reaches the data plane",
            reach_s.median,
            "ms",
        )
        .against("probe sweep alone", sweep_s.median)
        .target("< 100 ms", reach_s.median < 100.0)
        .note(format!(
            "from remove_destination() until none of the removed backend's SYNs \
                 ({:.0}–{:.0} of {REMOVAL_FLOWS}, BPF_PROG_TEST_RUN) goes to it; {}; \
                 at most {most_polls} sweep(s) needed; {setup}",
            probes_s.min,
            probes_s.max,
            reach_s.text("ms")
        )),
        Figure::new(SUITE, "remove_destination() call", call_s.median, "µs")
            .against("update_service() call", noop_s.median)
            .note(format!(
                "the API call alone (Maglev rebuild N=9, ring write, backend slot freed); \
                 {}; baseline (one map write) {}",
                call_s.text("µs"),
                noop_s.text("µs")
            )),
        Figure::new(
            SUITE,
            "backend addition reaches the data plane",
            add_s.median,
            "ms",
        )
        .against("probe sweep alone", sweep_s.median)
        .note(format!(
            "from add_destination() until all of the backend's former SYNs return to it \
                 (includes the neighbour lookup); {}; {setup}",
            add_s.text("ms")
        )),
    ])
}

/// Polls `done` until it holds and returns how many polls that took; fails after
/// [`REMOVAL_GIVE_UP`] from `t0`.
fn wait_until(
    t0: Instant,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<usize> {
    let mut polls = 1;
    while !done()? {
        if t0.elapsed() > REMOVAL_GIVE_UP {
            bail!("not visible after {REMOVAL_GIVE_UP:?}");
        }
        polls += 1;
    }
    Ok(polls)
}

// ---------------------------------------------------------------------------------------
// 3. 1,000 services × 10 backends, from scratch.

const BULK_SERVICES: u32 = 1000;
const BULK_PER_SERVICE: u8 = 10;
const BULK_ADDRESSES: u8 = 100;
const BULK_MAX_BACKENDS: u32 = 10_240;
const BULK_REPS: usize = 3;

/// The 10 distinct backends of service `i`, out of the 100 lab addresses.
fn bulk_backends(i: u32) -> impl Iterator<Item = u8> {
    let base = (i % u32::from(BULK_ADDRESSES)) as u8;
    (0..BULK_PER_SERVICE).map(move |j| (base + j * 10) % BULK_ADDRESSES)
}

fn bulk_vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i)
}

fn bulk_apply() -> anyhow::Result<Vec<Figure>> {
    let lab = Lab::new("ctb", BULK_ADDRESSES)?;
    let _inside = lab.enter()?;
    let ingress = lab::ifindex(lab::VETH)?;
    let plans: Vec<(ServiceId, Vec<Destination>)> = (0..BULK_SERVICES)
        .map(|i| {
            let id = ServiceId::new(bulk_vip(i), 80, Protocol::Tcp);
            let dests = bulk_backends(i)
                .map(|b| Destination::new(lab::backend(b)))
                .collect();
            (id, dests)
        })
        .collect();
    // The same tables, computed alone: what applying costs without the kernel.
    let member_sets: Vec<Vec<Member>> = (0..BULK_SERVICES)
        .map(|i| {
            bulk_backends(i)
                .zip(1..)
                .map(|(b, id)| Member {
                    id,
                    address: IpAddr::V4(lab::backend(b)),
                    weight: 1,
                })
                .collect()
        })
        .collect();

    let mut build = Vec::new();
    let mut apply = Vec::new();
    let mut compute = Vec::new();
    let mut memory = None;
    for _ in 0..BULK_REPS {
        let start = Instant::now();
        for set in &member_sets {
            black_box(maglev::build(black_box(set), M).context("building a Maglev table")?);
        }
        compute.push(millis(start.elapsed()));

        let before = lab::bpf_map_memory().context("reading map memory")?;
        let start = Instant::now();
        let mut lb = Balancer::builder()
            .max_services(BULK_SERVICES)
            .max_backends(BULK_MAX_BACKENDS)
            .build()
            .context("loading the balancer with 1000 services × 10,240 backends")?;
        build.push(millis(start.elapsed()));
        let after = lab::bpf_map_memory().context("reading map memory")?;
        memory.get_or_insert((after.total.saturating_sub(before.total), after.largest));
        lb.attach(lab::VETH, AttachMode::Native)
            .context("attaching the balancer")?;

        let start = Instant::now();
        for (id, dests) in &plans {
            lb.add_service(Service::new(*id))
                .with_context(|| format!("adding service {id}"))?;
            lb.set_destinations(id, dests)
                .with_context(|| format!("setting the destinations of {id}"))?;
        }
        apply.push(millis(start.elapsed()));

        // The first and last services serve.
        for i in [0, BULK_SERVICES - 1] {
            let syn = FrameBuilder::tcp(
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 50, 7), 30_000),
                SocketAddrV4::new(bulk_vip(i), 80),
            )
            .syn()
            .build();
            let ran = run_frame(lb.program()?, &syn, ingress)?;
            ensure!(
                ran.action == action::TX,
                "service {i} of {BULK_SERVICES}: action {} (want XDP_TX)",
                ran.action
            );
        }
    }

    // What the library asks the kernel per new destination (a route lookup and a lookup of
    // the one neighbour entry), done alone as often as applying does it.
    let mut netlink = Netlink::open().context("opening a netlink socket")?;
    let start = Instant::now();
    for (_, dests) in &plans {
        for d in dests {
            let std::net::IpAddr::V4(address) = d.address else {
                continue;
            };
            let route = netlink.route_get(address)?;
            black_box(
                netlink
                    .neighbour(route.oif, address)
                    .context("looking up the neighbour")?,
            );
        }
    }
    let lookups = millis(start.elapsed());

    let apply_s = Spread::of(&apply)?;
    let build_s = Spread::of(&build)?;
    let compute_s = Spread::of(&compute)?;
    let mut figures = vec![
        Figure::new(
            SUITE,
            "apply 1000 services × 10 backends",
            apply_s.median,
            "ms",
        )
        .against("Maglev builds alone", compute_s.median)
        .target("< 2 s", apply_s.median < 2000.0)
        .note(format!(
            "fresh balancer each rep: add_service + set_destinations (10 of {BULK_ADDRESSES} \
                 permanent neighbours) per service; {} ({:.0} µs/service); baseline: the \
                 same 1000 maglev::build calls, {}",
            apply_s.text("ms"),
            apply_s.median * 1000.0 / f64::from(BULK_SERVICES),
            compute_s.text("ms")
        )),
        Figure::new(SUITE, "netlink lookups of applying, alone", lookups, "ms")
            .against("apply", apply_s.median)
            .note(format!(
                "attribution: {} × (route_get + one neighbour lookup), what \
                 set_destinations does per new destination; one run",
                BULK_SERVICES * u32::from(BULK_PER_SERVICE)
            )),
        Figure::new(
            SUITE,
            "load+verify balancer, 1000 services",
            build_s.median,
            "ms",
        )
        .note(format!(
            "Balancer::builder().max_services(1000).max_backends({BULK_MAX_BACKENDS}) \
                 .build(), default 2^20 flows; {}",
            build_s.text("ms")
        )),
    ];
    if let Some((total, largest)) = memory {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let tables = f64::from(BULK_SERVICES) * f64::from(M) * 4.0;
        figures.push(
            Figure::new(SUITE, "map memory, 1000 services", mib(total), "MiB")
                .against("raw Maglev tables", tables / f64::from(1u32 << 20))
                .note(format!(
                    "sum of memlock of the balancer's bpf-map fds (/proc/self/fdinfo); \
                     largest map {:.1} MiB; baseline 1000 × 65537 × 4 bytes",
                    mib(largest)
                )),
        );
    }
    Ok(figures)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
