//! A backend removal, from the API call to the data plane.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use fulcrum::{AttachMode, Balancer, Destination, Protocol, Service, ServiceId};
use fulcrum_lab::{
    frame::FrameBuilder,
    testrun::{action, run_frame},
};

use super::{
    SUITE,
    lab::{self, Lab, Spread},
    micros, millis,
};
use crate::report::Figure;

const REMOVAL_BACKENDS: u8 = 10;
const REMOVAL_FLOWS: u16 = 2000;
const REMOVAL_REPS: usize = 11;
/// A removal not visible after this long is a failure, not a figure.
const REMOVAL_GIVE_UP: Duration = Duration::from_secs(5);

pub(super) fn removal_latency() -> anyhow::Result<Vec<Figure>> {
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
