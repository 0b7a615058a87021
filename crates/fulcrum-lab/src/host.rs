//! Lab hosts on a bridge: the switch namespace, hosts plugged into it, and what makes a
//! host a DSR backend. Shared by the DSR and ECMP labs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use fulcrum::{AttachMode, Balancer};

use crate::{netns::NetNs, traffic::Server};

/// The interface every lab host has on the bridge.
pub const IFACE: &str = "eth0";

/// A lab host: its namespace and address.
pub struct Host {
    /// The host's namespace; its interface is `eth0`.
    pub ns: NetNs,
    /// The host's address on the lab subnet.
    pub addr: Ipv4Addr,
}

impl Host {
    /// Makes the host a DSR backend of `vip`: the VIP on `lo`, and no ARP answers for it
    /// (only the balancer may answer for the VIP on the segment).
    pub fn hold_vip(&self, vip: Ipv4Addr) -> anyhow::Result<()> {
        self.ns
            .ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
        self.ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        self.ns.sysctl("net.ipv4.conf.all.arp_announce", "2")
    }

    /// Makes the host a DSR backend of the IPv6 `vip`: the VIP on `lo`, without duplicate
    /// address detection (every backend holds the same address, and it must be usable at
    /// once).
    pub fn hold_vip6(&self, vip: Ipv6Addr) -> anyhow::Result<()> {
        let vip = format!("{vip}/128");
        self.ns
            .ip(&["-6", "addr", "add", &vip, "dev", "lo", "nodad"])
            .map(drop)
    }

    /// A balancer loaded in this host's namespace (room for 4 services and 65536 flows)
    /// and attached natively to [`IFACE`]: what lab tests that drive the library use.
    /// Panics if it cannot start, as a test should.
    pub fn start_balancer(&self) -> Balancer {
        self.ns
            .run_in(|| -> Result<Balancer, fulcrum::BalancerError> {
                let mut lb = Balancer::builder()
                    .max_services(4)
                    .max_flows(1 << 16)
                    .build()?;
                lb.attach(IFACE, AttachMode::Native)?;
                Ok(lb)
            })
            .expect("enter the balancer's namespace")
            .expect("start the balancer")
    }
}

/// The switch: namespace `PREFIX-sw` holding the bridge `br0`.
pub fn switch(prefix: &str) -> anyhow::Result<NetNs> {
    let switch = NetNs::create(&format!("{prefix}-sw"))?;
    switch.ip(&["link", "add", "br0", "type", "bridge"])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    Ok(switch)
}

/// One host: a namespace whose `eth0` is plugged into the bridge as `p-TAG`, computing its
/// own checksums (XDP frames lose the offload state).
pub fn plug(switch: &NetNs, prefix: &str, tag: &str, addr: Ipv4Addr) -> anyhow::Result<Host> {
    let ns = NetNs::create(&format!("{prefix}-{tag}"))?;
    let port = format!("p-{tag}");
    switch.veth(&port, &ns, IFACE)?;
    switch.ip(&["link", "set", &port, "master", "br0", "up"])?;
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", IFACE])?;
    ns.ip(&["link", "set", IFACE, "up"])?;
    ns.exec("ethtool", &["-K", IFACE, "tx", "off"])?;
    Ok(Host { ns, addr })
}

/// One server on `addr` in every backend, named `backend-N` after its host (1-based).
pub fn backend_servers(
    backends: &[Host],
    addr: SocketAddr,
    start: fn(&NetNs, &str, SocketAddr) -> anyhow::Result<Server>,
) -> anyhow::Result<Vec<Server>> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| start(&b.ns, &format!("backend-{}", i + 1), addr))
        .collect()
}
