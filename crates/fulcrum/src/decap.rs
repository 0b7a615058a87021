//! The decapsulator for backends: an XDP program that strips the IP-in-IP and GUE headers
//! the balancer adds in its layer-3 modes, so a backend needs no tunnel module.
//!
//! It accepts tunnel packets addressed to the interface's own addresses (read when it
//! attaches and again on [`Decapsulator::refresh_addresses`]) and to the extra addresses
//! it is given; the rules are in the program's module doc and the README.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{Xdp, xdp::XdpLinkId},
};
pub use fulcrum_common::decap::DecapCounter;
use fulcrum_common::decap::{DECAP_COUNTERS, DecapCounters, PRESENT, PROGRAM, maps};
use tracing::{info, warn};

use crate::{
    AttachMode, BalancerError, DEFAULT_GUE_PORT,
    balancer::{attach_error, ifindex, program_error, program_ref, typed, xdp_mut},
};

/// The compiled decapsulator, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum-decap"));

/// Configures a [`Decapsulator`]; see [`Decapsulator::builder`].
#[derive(Clone, Debug, Default)]
pub struct DecapsulatorBuilder {
    iface: Option<String>,
    mode: AttachMode,
    gue_ports: BTreeSet<u16>,
    addresses: BTreeSet<IpAddr>,
}

impl DecapsulatorBuilder {
    /// The interface to attach to; its addresses are accepted as tunnel endpoints. Without
    /// one the program is loaded but not attached (for `BPF_PROG_TEST_RUN`).
    pub fn interface(mut self, iface: impl Into<String>) -> Self {
        self.iface = Some(iface.into());
        self
    }

    /// Native (the default) or generic XDP.
    pub fn mode(mut self, mode: AttachMode) -> Self {
        self.mode = mode;
        self
    }

    /// A UDP port that carries GUE; may be given several times. None given means
    /// [`DEFAULT_GUE_PORT`], the balancer's default.
    pub fn gue_port(mut self, port: u16) -> Self {
        self.gue_ports.insert(port);
        self
    }

    /// An address tunnel packets may be sent to beside the interface's own (an address on
    /// another interface, or one added later).
    pub fn address(mut self, address: impl Into<IpAddr>) -> Self {
        self.addresses.insert(address.into());
        self
    }

    /// Loads and verifies the program, fills its maps and attaches it.
    pub fn build(self) -> Result<Decapsulator, BalancerError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| BalancerError::Load(Box::new(e)))?;
        xdp_mut(&mut ebpf, PROGRAM)?
            .load()
            .map_err(|e| program_error(format!("verifying program {PROGRAM}"), e))?;
        let gue_ports = if self.gue_ports.is_empty() {
            BTreeSet::from([DEFAULT_GUE_PORT])
        } else {
            self.gue_ports
        };
        let mut ports: HashMap<MapData, u16, u8> = typed(&mut ebpf, maps::GUE_PORTS)?;
        for port in &gue_ports {
            ports
                .insert(port.to_be(), PRESENT, 0)
                .map_err(BalancerError::map(maps::GUE_PORTS, "write"))?;
        }
        let mut decap = Decapsulator {
            addrs4: typed(&mut ebpf, maps::ADDRS4)?,
            addrs6: typed(&mut ebpf, maps::ADDRS6)?,
            stats: typed(&mut ebpf, maps::STATS)?,
            ebpf,
            attached: None,
            explicit: self.addresses,
            accepted: BTreeSet::new(),
            gue_ports,
        };
        decap.refresh(None)?;
        if let Some(iface) = self.iface {
            decap.attach(iface, self.mode)?;
        }
        Ok(decap)
    }
}

struct Attached {
    iface: String,
    ifindex: u32,
    link: XdpLinkId,
}

/// The decapsulator loaded (and attached, when given an interface). Dropping it detaches.
pub struct Decapsulator {
    ebpf: Ebpf,
    addrs4: HashMap<MapData, u32, u8>,
    addrs6: HashMap<MapData, [u32; 4], u8>,
    stats: PerCpuArray<MapData, DecapCounters>,
    attached: Option<Attached>,
    explicit: BTreeSet<IpAddr>,
    accepted: BTreeSet<IpAddr>,
    gue_ports: BTreeSet<u16>,
}

impl Decapsulator {
    /// Starts a configuration: interface, GUE ports, extra addresses.
    pub fn builder() -> DecapsulatorBuilder {
        DecapsulatorBuilder::default()
    }

    fn attach(&mut self, iface: String, mode: AttachMode) -> Result<(), BalancerError> {
        let index = ifindex(&iface)?;
        let addresses = interface_addresses(index)?;
        self.refresh(Some(&addresses))?;
        let link = xdp_mut(&mut self.ebpf, PROGRAM)?
            .attach_to_if_index(index, mode.xdp())
            .map_err(|e| attach_error(&iface, mode, e))?;
        info!(
            iface,
            ifindex = index,
            mode = mode.name(),
            addresses = self.accepted.len(),
            "decapsulator attached"
        );
        self.attached = Some(Attached {
            iface,
            ifindex: index,
            link,
        });
        Ok(())
    }

    /// The verified program, for running frames through it with `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp, BalancerError> {
        program_ref(&self.ebpf, PROGRAM)
    }

    /// The interface it is attached to, if any.
    pub fn interface(&self) -> Option<&str> {
        self.attached.as_ref().map(|a| a.iface.as_str())
    }

    /// The addresses tunnel packets are accepted for.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.accepted.iter().copied()
    }

    /// The UDP ports taken as GUE.
    pub fn gue_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.gue_ports.iter().copied()
    }

    /// Reads the interface's addresses again (one was added or removed) and updates the
    /// program's; true when they changed.
    pub fn refresh_addresses(&mut self) -> Result<bool, BalancerError> {
        let found = match &self.attached {
            Some(a) => Some(interface_addresses(a.ifindex)?),
            None => None,
        };
        self.refresh(found.as_deref())
    }

    /// Every counter summed over CPUs.
    pub fn counters(&self) -> Result<DecapStats, BalancerError> {
        let values = self
            .stats
            .get(&0, 0)
            .map_err(BalancerError::map(maps::STATS, "read"))?;
        let mut total = [0u64; DECAP_COUNTERS];
        for cpu in values.iter() {
            for (t, v) in total.iter_mut().zip(cpu.counts.iter()) {
                *t += v;
            }
        }
        Ok(DecapStats(total))
    }

    /// Makes the program's address maps hold the explicit addresses plus `found`.
    fn refresh(&mut self, found: Option<&[IpAddr]>) -> Result<bool, BalancerError> {
        let want: BTreeSet<IpAddr> = self
            .explicit
            .iter()
            .copied()
            .chain(found.unwrap_or_default().iter().copied())
            .collect();
        if want == self.accepted {
            return Ok(false);
        }
        for gone in self.accepted.difference(&want) {
            let result = match gone {
                IpAddr::V4(a) => self.addrs4.remove(&v4_key(*a)),
                IpAddr::V6(a) => self.addrs6.remove(&v6_key(*a)),
            };
            if let Err(e) = result {
                warn!(address = %gone, error = %e, "could not remove a decapsulated address");
            }
        }
        for new in want.difference(&self.accepted) {
            match new {
                IpAddr::V4(a) => self
                    .addrs4
                    .insert(v4_key(*a), PRESENT, 0)
                    .map_err(BalancerError::map(maps::ADDRS4, "write"))?,
                IpAddr::V6(a) => self
                    .addrs6
                    .insert(v6_key(*a), PRESENT, 0)
                    .map_err(BalancerError::map(maps::ADDRS6, "write"))?,
            }
        }
        info!(
            addresses = %want.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "decapsulating for"
        );
        self.accepted = want;
        Ok(true)
    }
}

impl Drop for Decapsulator {
    fn drop(&mut self) {
        let Some(a) = self.attached.take() else {
            return;
        };
        match xdp_mut(&mut self.ebpf, PROGRAM).map(|p| p.detach(a.link)) {
            Ok(Ok(())) => info!(iface = a.iface, "decapsulator detached"),
            Ok(Err(e)) => warn!(iface = a.iface, error = %e, "detaching the decapsulator failed"),
            Err(e) => warn!(iface = a.iface, error = %e, "detaching the decapsulator failed"),
        }
    }
}

/// The decapsulator's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecapStats([u64; DECAP_COUNTERS]);

impl DecapStats {
    /// One counter's value.
    pub fn get(&self, counter: DecapCounter) -> u64 {
        self.0.get(counter as usize).copied().unwrap_or(0)
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (DecapCounter, u64)> + '_ {
        DecapCounter::ALL.iter().map(|c| (*c, self.get(*c)))
    }

    /// What changed since `earlier`, counter by counter.
    pub fn since(&self, earlier: &DecapStats) -> DecapStats {
        let mut out = *self;
        for (o, e) in out.0.iter_mut().zip(earlier.0.iter()) {
            *o = o.saturating_sub(*e);
        }
        out
    }
}

fn v4_key(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn v6_key(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// The interface's IPv4 and IPv6 addresses, as getifaddrs(3) reads them from netlink.
fn interface_addresses(ifindex: u32) -> Result<Vec<IpAddr>, BalancerError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(BalancerError::Sys {
            call: "getifaddrs",
            source: std::io::Error::last_os_error(),
        });
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned; addresses are of the family
        // their sa_family says.
        unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || libc::if_nametoindex(ifa.ifa_name) != ifindex {
                continue;
            }
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    // SAFETY: the list getifaddrs returned, not used after this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
