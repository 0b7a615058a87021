//! Per-packet cost of the real program through BPF_PROG_TEST_RUN, against XDP_PASS and a
//! MAC-swap XDP_TX program measured in the same rounds.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use anyhow::ensure;

use fulcrum::{Balancer, Destination, Protocol, Service, ServiceId};
use fulcrum_lab::{
    frame::FrameBuilder,
    testrun::{action, run_frame},
};

use crate::{
    dataplane::{DataPlane, VIP, backend, mean_ns, median_spread},
    object,
    report::Figure,
};

const ROUNDS: usize = 12;
const CALLS: usize = 20_000;
/// The flow table's size; it is full before measuring, as on a busy balancer.
const FLOWS: u32 = 1 << 20;
/// The first client `fill_flow_table` uses; no case's clients reach it.
const FILL: u32 = 1 << 26;

fn client(n: u32) -> SocketAddrV4 {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 50, 0, 0)) + (n >> 14));
    SocketAddrV4::new(addr, 1024 + (n & 0x3fff) as u16)
}

/// The IPv6 web service's VIP.
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0x99, 0, 0, 0, 1);

/// IPv6 backend `n` on `fx0`.
fn backend6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0, 0, 0, 0, 0x10 + n)
}

/// Gives `fx0` (in the namespace the thread is in) an IPv6 address and three IPv6
/// backends as permanent neighbours, and the balancer an IPv6 web service on them.
fn add_ipv6_web(lb: &mut Balancer) -> anyhow::Result<()> {
    let ip = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("ip").args(args).output()?;
        ensure!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    ip(&["addr", "add", "2001:db8:88::1/64", "dev", "fx0", "nodad"])?;
    for n in 1..=3u16 {
        let mac = format!("02:be:00:00:06:{n:02x}");
        let addr = backend6(n).to_string();
        ip(&[
            "neigh",
            "replace",
            &addr,
            "lladdr",
            &mac,
            "dev",
            "fx0",
            "nud",
            "permanent",
        ])?;
    }
    let web6 = ServiceId::new(VIP6, 80, Protocol::Tcp);
    lb.add_service(Service::new(web6))?;
    let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend6(n))).collect();
    lb.set_destinations(&web6, &dests)?;
    Ok(())
}

/// One measured case: which program, on which interface, with which frames.
struct Case {
    name: &'static str,
    /// The target, as the most the case's net cost may be in MAC-swap calls of the same
    /// rounds: a ratio holds on a machine that runs everything twice as slowly this week.
    target: Option<f64>,
    /// The flood target, as the most the case's net cost may be in net costs of a new SYN
    /// every packet of the same rounds (the path a flood of spoofed SYNs takes).
    per_syn: Option<f64>,
    program: Which,
    frames: Frames,
}

#[derive(Clone, Copy)]
enum Which {
    Pass,
    MacSwap,
    Balancer,
}

enum Frames {
    /// The same frames every round.
    Fixed(Vec<Vec<u8>>),
    /// A frame never sent before on every call: a new flow per packet.
    Fresh { next: u32 },
    /// The first ACK of a flow whose SYN was just sent (untimed): where a new flow is
    /// pinned in the shared flow table.
    FirstAck { next: u32 },
    /// A packet of an unknown flow from a source never seen before on every call: a
    /// flood of spoofed ACKs, UDP, or both with SYNs.
    Flood { kind: Flood, next: u32 },
}

/// What a spoofed flood sends.
#[derive(Clone, Copy)]
enum Flood {
    Ack,
    Udp,
    /// SYN, ACK and UDP in turn.
    Mix,
}

/// Packet `n` of a `kind` flood: each from a new spoofed source.
fn flood_frame(kind: Flood, n: u32) -> Vec<u8> {
    let kind = match kind {
        Flood::Mix => n % 3,
        Flood::Ack => 1,
        Flood::Udp => 2,
    };
    let tcp = FrameBuilder::tcp(client(n), SocketAddrV4::new(VIP, 80));
    match kind {
        0 => tcp.syn().build(),
        1 => tcp.build(),
        _ => FrameBuilder::udp(client(n), SocketAddrV4::new(VIP, 53)).build(),
    }
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(0)?;
    // No insert budget: the first-ACK case measures the insert itself.
    let mut dp = DataPlane::new(
        Balancer::builder()
            .max_services(8)
            .max_flows(FLOWS)
            .flow_insert_budget(u32::MAX),
        1,
        3,
    )?;
    let dns = ServiceId::new(VIP, 53, Protocol::Udp);
    dp.lb.add_service(Service::new(dns))?;
    let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend(n))).collect();
    dp.lb.set_destinations(&dns, &dests)?;
    add_ipv6_web(&mut dp.lb)?;
    let client6 = SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 7),
        1024,
        0,
        0,
    );
    let vip6 = SocketAddrV6::new(VIP6, 80, 0, 0);
    let est6 = FrameBuilder::tcp(client6, vip6).build();
    let syn6 = FrameBuilder::tcp(client6, vip6).syn().build();
    let vip = SocketAddrV4::new(VIP, 80);
    let est = FrameBuilder::tcp(client(0), vip).build();
    let syn = FrameBuilder::tcp(client(0), vip).syn().build();
    let udp = FrameBuilder::udp(client(0), SocketAddrV4::new(VIP, 53)).build();
    let vlan = FrameBuilder::tcp(client(1), vip).vlan(42).build();
    let other = FrameBuilder::tcp(
        client(0),
        SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 1), 22),
    )
    .build();
    let filled = fill_flow_table(&dp)?;
    // The established and UDP flows exist before measuring, as in production.
    for f in [&syn, &udp, &vlan, &syn6] {
        run_frame(dp.balancer()?, f, dp.fx0)?;
    }
    ensure!(
        run_frame(dp.balancer()?, &est6, dp.fx0)?.action == action::TX,
        "the IPv6 established frame is forwarded, not measured as something else"
    );
    let mut cases = [
        Case {
            name: "XDP_PASS",
            target: None,
            per_syn: None,
            program: Which::Pass,
            frames: Frames::Fixed(vec![est.clone()]),
        },
        Case {
            name: "MAC-swap XDP_TX",
            target: None,
            per_syn: None,
            program: Which::MacSwap,
            frames: Frames::Fixed(vec![est.clone()]),
        },
        Case {
            name: "TCP established (flow hit)",
            target: Some(1.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![est]),
        },
        Case {
            name: "TCP SYN to a VIP",
            target: Some(3.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![syn]),
        },
        Case {
            name: "UDP to a VIP (flow hit)",
            target: Some(1.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![udp]),
        },
        Case {
            name: "new flow every packet (SYN)",
            target: Some(10.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fresh { next: 1 << 20 },
        },
        Case {
            name: "first ACK of each new flow",
            target: None,
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::FirstAck { next: 1 << 22 },
        },
        Case {
            name: "new ACK every packet (spoofed)",
            target: None,
            per_syn: Some(2.0),
            program: Which::Balancer,
            frames: Frames::Flood {
                kind: Flood::Ack,
                next: 1 << 23,
            },
        },
        Case {
            name: "new UDP flow every packet (spoofed)",
            target: None,
            per_syn: Some(2.0),
            program: Which::Balancer,
            frames: Frames::Flood {
                kind: Flood::Udp,
                next: 1 << 24,
            },
        },
        Case {
            name: "flood mix: 1/3 each SYN, ACK, UDP",
            target: None,
            per_syn: Some(2.0),
            program: Which::Balancer,
            frames: Frames::Flood {
                kind: Flood::Mix,
                next: 1 << 25,
            },
        },
        Case {
            name: "no VIP (pass)",
            target: Some(0.25),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![other]),
        },
        Case {
            name: "VLAN-tagged established",
            target: Some(1.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![vlan]),
        },
        Case {
            name: "IPv6 TCP established (flow hit)",
            target: Some(1.0),
            per_syn: None,
            program: Which::Balancer,
            frames: Frames::Fixed(vec![est6]),
        },
    ];

    let mut means = vec![Vec::new(); cases.len()];
    for round in 0..=ROUNDS {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let case = &mut cases[i];
            let (program, ingress) = match case.program {
                Which::Pass => (dp.pass()?, dp.fp0),
                Which::MacSwap => (dp.macswap()?, dp.fm0),
                Which::Balancer => (dp.balancer()?, dp.fx0),
            };
            let mean = match &mut case.frames {
                Frames::Fixed(frames) => mean_ns(program, frames, ingress, CALLS)?,
                Frames::Fresh { next } => {
                    let mut total = 0u128;
                    for _ in 0..CALLS {
                        let frame = FrameBuilder::tcp(client(*next), vip).syn().build();
                        *next += 1;
                        total += run_frame(program, &frame, ingress)?.duration.as_nanos();
                    }
                    total as f64 / CALLS as f64
                }
                Frames::FirstAck { next } => {
                    let mut total = 0u128;
                    for _ in 0..CALLS {
                        let syn = FrameBuilder::tcp(client(*next), vip).syn().build();
                        run_frame(program, &syn, ingress)?;
                        let ack = FrameBuilder::tcp(client(*next), vip).build();
                        *next += 1;
                        total += run_frame(program, &ack, ingress)?.duration.as_nanos();
                    }
                    total as f64 / CALLS as f64
                }
                Frames::Flood { kind, next } => {
                    let mut total = 0u128;
                    for _ in 0..CALLS {
                        let frame = flood_frame(*kind, *next);
                        *next += 1;
                        total += run_frame(program, &frame, ingress)?.duration.as_nanos();
                    }
                    total as f64 / CALLS as f64
                }
            };
            // Round 0 warms caches and the flow table; it is not reported.
            if round > 0 {
                means[i].push(mean);
            }
        }
    }

    let stats: Vec<(f64, f64)> = means.iter_mut().map(|m| median_spread(m)).collect();
    let (pass, _) = stats[0];
    let (macswap, _) = stats[1];
    let syn_net = cases
        .iter()
        .position(|c| matches!(c.frames, Frames::Fresh { .. }))
        .map(|i| stats[i].0 - pass)
        .unwrap_or(f64::NAN);
    let known_syn_net = cases
        .iter()
        .position(|c| c.name == "TCP SYN to a VIP")
        .map(|i| stats[i].0 - pass)
        .unwrap_or(f64::NAN);
    let established_net = cases
        .iter()
        .position(|c| c.name == "TCP established (flow hit)")
        .map(|i| stats[i].0 - pass)
        .unwrap_or(f64::NAN);
    let mut figures = vec![
        Figure::new(
            "packet",
            "flows pinned before measuring",
            filled as f64,
            "flows",
        )
        .note(format!(
            "{FLOWS} pinned (a SYN and its ACK each) into a {FLOWS}-flow table from one CPU, \
             whose share (per-CPU LRU lists) is then full: inserts evict"
        )),
    ];
    for (case, (median, spread)) in cases.iter().zip(&stats) {
        let net = median - pass;
        let how = format!(
            "median of {ROUNDS} rounds x {CALLS} calls, repeat=1, CPU 0; spread {spread:.1} ns; net {net:.1} ns"
        );
        let mut f = Figure::new("packet", case.name, *median, "ns").note(how);
        if !matches!(case.program, Which::Pass) {
            f = f.against("MAC-swap", macswap);
        }
        if let Some(ratio) = case.target {
            f = f.target(format!("net <= {ratio}x MAC-swap"), net <= ratio * macswap);
        }
        figures.push(f);
        if !matches!(case.program, Which::Pass) {
            figures.push(
                Figure::new("packet", format!("{} net", case.name), net, "ns")
                    .against("MAC-swap net", macswap - pass)
                    .note("case − XDP_PASS of the same rounds"),
            );
        }
        if let Some(ratio) = case.per_syn {
            figures.push(
                Figure::new("packet", format!("{} vs SYN", case.name), net, "ns")
                    .against("new-SYN net", syn_net)
                    .target(format!("net <= {ratio}x new SYN"), net <= ratio * syn_net)
                    .note(format!(
                        "both net of XDP_PASS, same rounds; {:.2}x a SYN of a known flow, \
                         {:.1}x an established packet, {:.1}x a MAC-swap call",
                        net / known_syn_net,
                        net / established_net,
                        net / macswap
                    )),
            );
        }
    }
    figures.extend(breakdown(&cases, &stats, pass));
    figures.extend(talkers_cost()?);
    if let Some(insns) = dp.balancer()?.info()?.verified_instruction_count() {
        figures.push(
            Figure::new(
                "packet",
                "instructions the verifier checked",
                f64::from(insns),
                "insns",
            )
            .note("whole program, every path; from the kernel's program info"),
        );
    }
    Ok(figures)
}

/// Pins `FLOWS` flows, a SYN and its ACK each, so that the table is full when measuring
/// starts; returns how many the table holds.
fn fill_flow_table(dp: &DataPlane) -> anyhow::Result<usize> {
    let vip = SocketAddrV4::new(VIP, 80);
    let program = dp.balancer()?;
    for n in FILL..FILL + FLOWS {
        run_frame(
            program,
            &FrameBuilder::tcp(client(n), vip).syn().build(),
            dp.fx0,
        )?;
        run_frame(program, &FrameBuilder::tcp(client(n), vip).build(), dp.fx0)?;
    }
    // The LRU lists are per CPU: one CPU's inserts fill its share of the table, and
    // past that evict among its own flows.
    let held = dp.lb.scan_flows()?.len();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        held >= FLOWS as usize / cpus / 2,
        "the flow table holds {held} flows after {FLOWS} were pinned on one of {cpus} CPUs"
    );
    Ok(held)
}

/// Where an established packet's and a new flow's cost goes, as differences between
/// cases of the same rounds: each stage is what one path does beyond a cheaper one.
fn breakdown(cases: &[Case], stats: &[(f64, f64)], pass: f64) -> Vec<Figure> {
    let net = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .map(|i| stats[i].0 - pass)
            .unwrap_or(f64::NAN)
    };
    let parse = net("no VIP (pass)");
    let hit = net("TCP established (flow hit)");
    let syn = net("TCP SYN to a VIP");
    let first_ack = net("first ACK of each new flow");
    [
        ("stage: parse, VIP filter, counters", parse, "= no-VIP net"),
        (
            "stage: flow cache hit, MAC rewrite, traffic counters",
            hit - parse,
            "= established − no-VIP",
        ),
        (
            "stage: service lookup, Maglev, cache write",
            syn - hit,
            "= SYN − established",
        ),
        (
            "stage: pinning a flow in the LRU table",
            first_ack - hit,
            "= first ACK − established",
        ),
    ]
    .into_iter()
    .map(|(name, v, how)| Figure::new("packet", name, v, "ns").note(how))
    .collect()
}

/// Top talkers' counting cost: balancers loaded with sampling off, 1 in 16 and every
/// packet take turns in the same rounds, each measuring an established packet and a SYN
/// from a new /24 every packet (the worst case: a map insert per sampled packet), net of
/// its own namespace's XDP_PASS.
fn talkers_cost() -> anyhow::Result<Vec<Figure>> {
    use fulcrum::TalkerSampling;
    const SAMPLES: [u32; 3] = [0, 16, 1];
    let vip = SocketAddrV4::new(VIP, 80);
    let est = FrameBuilder::tcp(client(0), vip).build();
    let mut planes = Vec::new();
    for sample in SAMPLES {
        let builder = Balancer::builder()
            .max_services(8)
            .max_flows(1 << 20)
            .top_talkers(TalkerSampling {
                sample,
                ..TalkerSampling::default()
            });
        let dp = DataPlane::new(builder, 1, 3)?;
        run_frame(
            dp.balancer()?,
            &FrameBuilder::tcp(client(0), vip).syn().build(),
            dp.fx0,
        )?;
        planes.push(dp);
    }
    let measured = talkers_rounds(&planes, &est);
    // Each plane's guard returns to the namespace the previous one was created from.
    while let Some(dp) = planes.pop() {
        drop(dp);
    }
    let [(off_hit, off_fresh), rest @ ..] = measured?;
    let how = format!(
        "median of {ROUNDS} rounds x {CALLS} calls, CPU 0; net of XDP_PASS; the three balancers in the same rounds"
    );
    let mut figures = Vec::new();
    for (sample, (hit, fresh)) in SAMPLES
        .into_iter()
        .zip([(off_hit, off_fresh)].into_iter().chain(rest))
    {
        let label = match sample {
            0 => "top talkers off".to_string(),
            n => format!("top talkers 1 in {n}"),
        };
        let mut a =
            Figure::new("packet", format!("{label}: established net"), hit, "ns").note(how.clone());
        let mut b = Figure::new(
            "packet",
            format!("{label}: SYN from a new /24 every packet, net"),
            fresh,
            "ns",
        )
        .note(how.clone());
        if sample != 0 {
            a = a.against("top talkers off", off_hit);
            b = b.against("top talkers off", off_fresh);
        }
        figures.extend([a, b]);
    }
    Ok(figures)
}

/// Per data plane, the median net cost of an established packet and of a SYN from a new
/// /24 every packet, the planes taking turns in every round.
fn talkers_rounds(planes: &[DataPlane], est: &[u8]) -> anyhow::Result<[(f64, f64); 3]> {
    let vip = SocketAddrV4::new(VIP, 80);
    let mut means = vec![[Vec::new(), Vec::new()]; planes.len()];
    let mut next = 0u32;
    for round in 0..=ROUNDS {
        for k in 0..planes.len() {
            let i = (k + round) % planes.len();
            let dp = &planes[i];
            let _inside = dp.enter()?;
            let pass = mean_ns(dp.pass()?, &[est.to_vec()], dp.fp0, CALLS)?;
            let hit = mean_ns(dp.balancer()?, &[est.to_vec()], dp.fx0, CALLS)?;
            let mut total = 0u128;
            for _ in 0..CALLS {
                // A new /24 every packet, each a new flow.
                let src = Ipv4Addr::from(0x0b00_0000 + ((next & 0xffff) << 8) + 7);
                next += 1;
                let frame = FrameBuilder::tcp(SocketAddrV4::new(src, 1024), vip)
                    .syn()
                    .build();
                total += run_frame(dp.balancer()?, &frame, dp.fx0)?
                    .duration
                    .as_nanos();
            }
            if round > 0 {
                means[i][0].push(hit - pass);
                means[i][1].push(total as f64 / CALLS as f64 - pass);
            }
        }
    }
    let mut out = [(f64::NAN, f64::NAN); 3];
    for (o, [hit, fresh]) in out.iter_mut().zip(&mut means) {
        *o = (median_spread(hit).0, median_spread(fresh).0);
    }
    Ok(out)
}
