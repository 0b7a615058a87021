//! The lab: its veth paths, what forwards on each, and the balancers on the Fulcrum paths.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fulcrum::{AttachMode, Balancer, Destination, Forwarding, Protocol, Service, ServiceId};
use fulcrum_lab::netns::NetNs;

use super::{BACKENDS, COUNT_SLOTS, FEW_FLOWS_PER_CPU, FLOWS_PER_CPU, PORT, QUEUES, VIP};

/// What sits on a path's `lbN`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Forwarder {
    Fulcrum,
    Baseline,
}

/// One veth path of the lab.
pub(super) struct Path {
    /// For messages.
    pub(super) name: &'static str,
    pub(super) forwarder: Forwarder,
    /// The generator's side (counter attached) and the forwarder's side.
    pub(super) gen_iface: &'static str,
    pub(super) lb_iface: &'static str,
    pub(super) gen_mac: [u8; 6],
    pub(super) lb_mac: [u8; 6],
    /// The second octet of a Fulcrum path's subnet, 10.X.0.0/24 (backends .11 to .13).
    subnet: u8,
    /// A Fulcrum path's backends' MACs end in `first_slot..first_slot + BACKENDS`: their
    /// counter slots.
    first_slot: u8,
    /// Source ports per generating CPU.
    pub(super) flows: u32,
}

/// The paths, in phase order (a phase is an index into this).
pub(super) const PATHS: [Path; 3] = [
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
pub(super) const FULCRUM: usize = 0;
pub(super) const BASELINE: usize = 1;
pub(super) const FEW_FLOWS: usize = 2;
/// The phase that stops the generator threads.
pub(super) const STOP: usize = PATHS.len();

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
    pub(super) fn slots(&self) -> Vec<usize> {
        match self.forwarder {
            Forwarder::Fulcrum => (0..BACKENDS)
                .map(|i| usize::from(self.first_slot + i))
                .collect(),
            Forwarder::Baseline => vec![usize::from(self.gen_mac[5]) % COUNT_SLOTS as usize],
        }
    }
}

/// The veth pairs in `ns`, `QUEUES` RX/TX queues each so every CPU has its own ring, and
/// each Fulcrum path's backends as permanent neighbours on its `lbN`.
pub(super) fn build_lab(ns: &NetNs) -> anyhow::Result<()> {
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

/// Fulcrum on the path's `lbN`, one service (VIP:80/tcp) on its three backends, all
/// resolved.
pub(super) fn balancer(path: &Path, forwarding: Forwarding) -> anyhow::Result<Balancer> {
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

pub(super) fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index)
}
