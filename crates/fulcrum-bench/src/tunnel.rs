//! Suite tunnel: what each forwarding mode costs an established flow, against XDP_PASS
//! and the MAC-swap XDP_TX floor of the same rounds, and the end-to-end rate of IP-in-IP
//! against the same run's reflector (the e2e suite's lab with an IP-in-IP service).
//!
//! Every mode is a service of one balancer on the bench namespace's `fx0`, on the same
//! on-link backends (IPv4 and IPv6, permanent neighbours): only the forwarding differs.
//! Encapsulating programs change the frame, so every call runs once (`repeat = 1`,
//! BENCHMARKING.md) on a fresh copy.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use fulcrum::{Balancer, Destination, Forwarding, Protocol, Service, ServiceId, Tunnel};
use fulcrum_lab::{frame::FrameBuilder, testrun::run_frame};

use crate::{
    dataplane::{DataPlane, backend, mean_ns, median_spread},
    e2e, object,
    report::Figure,
};

const ROUNDS: usize = 12;
const CALLS: usize = 20_000;
const PORT: u16 = 80;

/// IPv6 backend `n` on `fx0`.
fn backend6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd88, 0, 0, 0, 0, 0, 0, 0x10 + n)
}

/// One mode: its name, VIP, forwarding and backends.
struct Mode {
    name: &'static str,
    vip: IpAddr,
    forwarding: Forwarding,
    v6_backends: bool,
    /// Most net ns per call, in MAC-swap calls of the same rounds.
    target: Option<f64>,
}

fn modes() -> Vec<Mode> {
    let ipip = Forwarding::Ipip(Tunnel::default());
    let v4 = |d: u8| IpAddr::from([10, 88, 98, d]);
    let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0xfd88, 0x98, 0, 0, 0, 0, 0, d));
    vec![
        Mode {
            name: "IPv4 L2 DSR",
            vip: v4(1),
            forwarding: Forwarding::L2Dsr,
            v6_backends: false,
            target: None,
        },
        Mode {
            name: "IPv6 L2 DSR",
            vip: v6(1),
            forwarding: Forwarding::L2Dsr,
            v6_backends: true,
            target: None,
        },
        Mode {
            name: "IP-in-IP 4in4",
            vip: v4(2),
            forwarding: ipip,
            v6_backends: false,
            target: Some(1.5),
        },
        Mode {
            name: "IP-in-IP 6in6",
            vip: v6(2),
            forwarding: ipip,
            v6_backends: true,
            target: Some(1.5),
        },
        Mode {
            name: "IP-in-IP 4in6",
            vip: v4(3),
            forwarding: ipip,
            v6_backends: true,
            target: Some(1.5),
        },
        Mode {
            name: "GUE 4in4",
            vip: v4(4),
            forwarding: Forwarding::Gue {
                tunnel: Tunnel::default(),
                port: 6080,
            },
            v6_backends: false,
            target: Some(1.5),
        },
    ]
}

/// An established flow's packet (ACK) from the bench client to `vip`.
fn frame(vip: IpAddr, syn: bool) -> Vec<u8> {
    let client: IpAddr = match vip {
        IpAddr::V4(_) => IpAddr::from([10, 50, 0, 1]),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 1)),
    };
    let b = FrameBuilder::tcp(SocketAddr::new(client, 40_000), SocketAddr::new(vip, PORT));
    if syn { b.syn().build() } else { b.build() }
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    let mut figures = per_packet()?;
    figures.extend(end_to_end()?);
    Ok(figures)
}

fn per_packet() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(0)?;
    let mut dp = DataPlane::new(Balancer::builder().max_services(8).max_flows(1 << 16), 0, 3)?;
    add_ipv6_backends()?;
    let modes = modes();
    for m in &modes {
        let id = ServiceId::new(m.vip, PORT, Protocol::Tcp);
        let mut service = Service::new(id);
        service.forwarding = m.forwarding;
        dp.lb.add_service(service)?;
        let dests: Vec<_> = (1..=3)
            .map(|n| {
                if m.v6_backends {
                    Destination::new(backend6(n))
                } else {
                    Destination::new(backend(n))
                }
            })
            .collect();
        dp.lb.set_destinations(&id, &dests)?;
    }
    dp.lb.refresh_neighbours()?;
    let frames: Vec<Vec<u8>> = modes.iter().map(|m| frame(m.vip, false)).collect();
    // Each flow exists before measuring, pinned by its SYN and first ACK.
    for m in &modes {
        for f in [frame(m.vip, true), frame(m.vip, false)] {
            let ran = run_frame(dp.balancer()?, &f, dp.fx0)?;
            anyhow::ensure!(
                ran.action == fulcrum_lab::testrun::action::TX,
                "{}: the set-up packet was not forwarded (action {}); counters {:?}",
                m.name,
                ran.action,
                dp.lb
                    .stats()?
                    .iter()
                    .filter(|(_, v)| *v != 0)
                    .collect::<Vec<_>>()
            );
        }
    }

    // Index 0: XDP_PASS, 1: MAC-swap, 2..: the modes.
    let cases = 2 + modes.len();
    let mut means = vec![Vec::new(); cases];
    let est = frame(modes[0].vip, false);
    for round in 0..=ROUNDS {
        for k in 0..cases {
            let i = (k + round) % cases;
            let mean = match i {
                0 => mean_ns(dp.pass()?, std::slice::from_ref(&est), dp.fp0, CALLS)?,
                1 => mean_ns(dp.macswap()?, std::slice::from_ref(&est), dp.fm0, CALLS)?,
                _ => mean_ns(
                    dp.balancer()?,
                    std::slice::from_ref(&frames[i - 2]),
                    dp.fx0,
                    CALLS,
                )?,
            };
            if round > 0 {
                means[i].push(mean);
            }
        }
    }
    let stats: Vec<(f64, f64)> = means.iter_mut().map(|m| median_spread(m)).collect();
    let (pass, _) = stats[0];
    let (macswap, _) = stats[1];
    let how = format!("median of {ROUNDS} rounds x {CALLS} calls, repeat=1, CPU 0, order rotated");
    let mut figures = vec![
        Figure::new("tunnel", "XDP_PASS", pass, "ns").note(how.clone()),
        Figure::new("tunnel", "MAC-swap XDP_TX", macswap, "ns")
            .against("XDP_PASS", pass)
            .note(how.clone()),
    ];
    for (m, (median, spread)) in modes.iter().zip(&stats[2..]) {
        let net = median - pass;
        let mut f = Figure::new("tunnel", format!("{} established net", m.name), net, "ns")
            .against("MAC-swap XDP_TX call", macswap)
            .note(format!(
                "{how}; call {median:.1} ns (spread {spread:.1}), net = call − XDP_PASS; \
                 MAC-swap call {macswap:.1} ns"
            ));
        if let Some(ratio) = m.target {
            f = f.target(
                format!("net <= {ratio}x MAC-swap call"),
                net <= ratio * macswap,
            );
        }
        figures.push(f);
    }
    Ok(figures)
}

/// IPv6 on `fx0` and the IPv6 backends as permanent neighbours (the thread is inside
/// the data plane's namespace, so `ip` runs there too).
fn add_ipv6_backends() -> anyhow::Result<()> {
    let ip = |args: &[&str]| fulcrum_lab::netns::run(std::process::Command::new("ip").args(args));
    ip(&["-6", "addr", "add", "fd88::1/64", "dev", "fx0", "nodad"])?;
    for n in 1..=3u16 {
        let mac = format!("02:be:00:00:06:{n:02x}");
        ip(&[
            "-6",
            "neigh",
            "replace",
            &backend6(n).to_string(),
            "lladdr",
            &mac,
            "dev",
            "fx0",
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// The e2e suite's lab with an IP-in-IP service: its figures, renamed.
fn end_to_end() -> anyhow::Result<Vec<Figure>> {
    let figures = e2e::run_with(Forwarding::Ipip(Tunnel::default()))?;
    Ok(figures
        .into_iter()
        .map(|mut f| {
            f.suite = "tunnel";
            f.name = f.name.replace("Fulcrum", "Fulcrum IP-in-IP");
            // The e2e target is L2 DSR's; IP-in-IP writes 20 more bytes per frame.
            f.target = None;
            f
        })
        .collect())
}
