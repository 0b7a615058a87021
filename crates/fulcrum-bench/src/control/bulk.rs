//! 1,000 services × 10 backends, applied to a fresh balancer from scratch.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use fulcrum::{
    AttachMode, Balancer, Destination, Protocol, Service, ServiceId,
    maglev::{self, Member},
    netlink::Netlink,
};
use fulcrum_lab::{
    frame::FrameBuilder,
    testrun::{action, run_frame},
};

use super::{
    M, SUITE,
    lab::{self, Lab, Spread},
    millis,
};
use crate::report::Figure;

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

pub(super) fn bulk_apply() -> anyhow::Result<Vec<Figure>> {
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
            let route = netlink.route_get(d.address)?;
            black_box(
                netlink
                    .neighbour(route.ifindex, d.address)
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
