//! The ECMP lab: a client behind a router that spreads flows over several balancers.
//!
//! ```text
//!   client 10.78.1.2 ── router 10.78.1.1 | 10.78.0.1 ─┐ (BIRD; L4 multipath hash)
//!                       balancer-N 10.78.0.1N ───────┼── bridge (switch namespace)
//!                       backend-N  10.78.0.2N ───────┘   VIP 10.78.99.1 on each backend's lo
//! ```
//! The router learns the VIP from the balancers (BGP, or a static multipath route while
//! no balancer speaks BGP) and hashes each flow's 5-tuple onto one of them; balancers
//! forward by layer-2 DSR; backends answer through the router (their default route).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use fulcrum::PassProgram;

use crate::{
    bird::{self, Bird, BirdConfig, Neighbor, Routes},
    host::{Host, backend_servers, plug, switch},
    netns::{NetNs, unique_prefix},
    traffic::{Server, http_server, udp_server},
};

/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
/// The router's address on the client subnet (the client's default gateway).
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 1);
/// The router's address on the server subnet (BGP peer of every balancer, backends'
/// default gateway).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The virtual IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 78, 99, 1);
/// The VIP's host route, as routers show it.
pub const VIP_PREFIX: &str = "10.78.99.1/32";
/// The router's ASN.
pub const ROUTER_ASN: u32 = 65000;
/// Every balancer's ASN (one AS, several speakers: equal paths for multipath).
pub const BALANCER_ASN: u32 = 65001;
/// Interface of every lab host.
pub use crate::host::IFACE;

/// Address of balancer `n` (1-based).
pub const fn balancer_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 10 + n)
}

/// Address of backend `n` (1-based).
pub const fn backend_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 20 + n)
}

/// The lab. Fields drop in order: BIRD, then hosts, then the bridge.
pub struct EcmpLab {
    /// BIRD in the router's namespace.
    pub bird: Bird,
    /// The router's namespace (`eth0` on the bridge, `eth1` to the client).
    pub router: NetNs,
    /// The client host.
    pub client: Host,
    /// Balancer hosts; `balancers[i]` is balancer `i + 1`.
    pub balancers: Vec<Host>,
    /// Backend hosts; `backends[i]` is backend `i + 1`.
    pub backends: Vec<Host>,
    /// XDP_PASS on each balancer's bridge port, so they accept `XDP_TX`'d frames.
    _pass: Vec<PassProgram>,
    switch: NetNs,
    prefix: String,
    dir: PathBuf,
}

impl EcmpLab {
    /// Builds the lab with `balancers` balancers and `backends` backends. With `bgp`, the
    /// router runs a passive BGP session to each balancer (hold time `hold_secs`); without,
    /// a static multipath route to the VIP via every balancer.
    pub fn new(tag: &str, balancers: u8, backends: u8, bgp: Option<u16>) -> anyhow::Result<Self> {
        let prefix = unique_prefix(tag);
        let dir = std::env::temp_dir().join(format!("fulcrum-lab-{prefix}"));
        let switch = switch(&prefix)?;

        let router = Self::router(&switch, &prefix)?;
        let client = Host {
            ns: NetNs::create(&format!("{prefix}-cl"))?,
            addr: CLIENT,
        };
        router.veth("eth1", &client.ns, IFACE)?;
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_CLIENT_SIDE}/24"),
            "dev",
            "eth1",
        ])?;
        router.ip(&["link", "set", "eth1", "up"])?;
        client
            .ns
            .ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", IFACE])?;
        client.ns.ip(&["link", "set", IFACE, "up"])?;
        // Packets the balancers forward with XDP lose checksum offload: whoever sends
        // them must have computed their checksums.
        client.ns.exec("ethtool", &["-K", IFACE, "tx", "off"])?;
        router.exec("ethtool", &["-K", "eth1", "tx", "off"])?;
        client.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_SIDE.to_string(),
        ])?;

        let mut lab_balancers = Vec::new();
        let mut pass = Vec::new();
        for n in 1..=balancers {
            let tag = format!("lb{n}");
            lab_balancers.push(plug(&switch, &prefix, &tag, balancer_addr(n))?);
            pass.push(
                switch
                    .run_in(|| PassProgram::attach(&format!("p-{tag}")))?
                    .with_context(|| format!("attaching XDP_PASS to p-{tag}"))?,
            );
        }
        let config = bird_config(balancers, bgp);
        let bird = Bird::start(&router, &config.render())?;
        let mut lab = Self {
            bird,
            router,
            client,
            balancers: lab_balancers,
            backends: Vec::new(),
            _pass: pass,
            switch,
            prefix,
            dir,
        };
        for n in 1..=backends {
            lab.add_backend(n)?;
        }
        Ok(lab)
    }

    /// The router: forwarding, the kernel's layer-4 multipath hash, no reverse-path filter
    /// (replies come back from backends, not from the balancer the request went to).
    fn router(switch: &NetNs, prefix: &str) -> anyhow::Result<NetNs> {
        let host = plug(switch, prefix, "rt", ROUTER)?;
        let ns = host.ns;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        for scope in ["all", "default", IFACE] {
            ns.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        Ok(ns)
    }

    /// Adds backend `n`: the VIP on `lo`, no ARP for it, default route via the router.
    pub fn add_backend(&mut self, n: u8) -> anyhow::Result<&Host> {
        let host = plug(
            &self.switch,
            &self.prefix,
            &format!("b{n}"),
            backend_addr(n),
        )?;
        host.hold_vip(VIP)?;
        host.ns
            .ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
        self.backends.push(host);
        self.backends.last().context("backend just added")
    }

    /// An HTTP server (keep-alive) on port 80 of every backend, named `backend-N`.
    pub fn http_servers(&self) -> anyhow::Result<Vec<Server>> {
        (1..=self.backends.len())
            .map(|n| self.http_server(n))
            .collect()
    }

    /// The HTTP server of backend `n` (1-based).
    pub fn http_server(&self, n: usize) -> anyhow::Result<Server> {
        let host = self.backends.get(n - 1).context("no such backend")?;
        http_server(
            &host.ns,
            &format!("backend-{n}"),
            SocketAddr::from(([0, 0, 0, 0], 80)),
        )
    }

    /// A UDP server on the VIP's port 53 of every backend, named `backend-N`.
    pub fn udp_servers(&self) -> anyhow::Result<Vec<Server>> {
        backend_servers(&self.backends, SocketAddr::from((VIP, 53)), udp_server)
    }

    /// Balancer `n`'s host (1-based).
    pub fn balancer(&self, n: u8) -> &Host {
        &self.balancers[usize::from(n) - 1]
    }

    /// Cuts balancer `n` off the network as a dead machine would be: its bridge port goes
    /// down, so nothing it sends (not even a FIN) reaches anyone.
    pub fn cut(&self, n: u8) -> anyhow::Result<()> {
        self.switch
            .ip(&["link", "set", &format!("p-lb{n}"), "down"])
            .map(|_| ())
    }

    /// Plugs balancer `n` back in.
    pub fn reconnect(&self, n: u8) -> anyhow::Result<()> {
        self.switch
            .ip(&["link", "set", &format!("p-lb{n}"), "up"])
            .map(|_| ())
    }

    /// Whether an XDP program is attached to balancer `n`'s interface.
    pub fn has_xdp(&self, n: u8) -> anyhow::Result<bool> {
        let out = self.balancer(n).ns.ip(&["-d", "link", "show", IFACE])?;
        Ok(out.contains("xdp"))
    }

    /// The next hops of BIRD's paths to the VIP (what `birdc show route` shows).
    pub fn router_paths(&self) -> anyhow::Result<Vec<Ipv4Addr>> {
        bird::next_hops(&self.bird, VIP_PREFIX)
    }

    /// Whether the router's BGP session to balancer `n` is up.
    pub fn session_up(&self, n: u8) -> bool {
        bird::established(&self.bird, &format!("lb{n}"))
    }

    /// The next hops of the router's kernel route to the VIP (what packets follow).
    pub fn kernel_next_hops(&self) -> anyhow::Result<Vec<Ipv4Addr>> {
        let out = self.router.ip(&["route", "show", VIP_PREFIX])?;
        Ok(bird::parse_next_hops(&out))
    }

    /// Sends the client's flows with source ports `ports` (an `ip rule` range such as
    /// `40000-40099`) via balancer `n` only, whatever the multipath route says.
    pub fn steer(&self, ports: &str, n: u8) -> anyhow::Result<()> {
        let _ = self.router.ip(&["rule", "del", "pref", "100"]).map(|_| ());
        self.router.ip(&[
            "route",
            "replace",
            VIP_PREFIX,
            "via",
            &balancer_addr(n).to_string(),
            "table",
            "100",
        ])?;
        self.router.ip(&[
            "rule",
            "add",
            "pref",
            "100",
            "from",
            &CLIENT.to_string(),
            "ipproto",
            "udp",
            "sport",
            ports,
            "lookup",
            "100",
        ])?;
        Ok(())
    }

    /// A directory for this lab's files (configs, logs), removed with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The router's BIRD config for `balancers` balancers.
fn bird_config(balancers: u8, bgp: Option<u16>) -> BirdConfig {
    let routes = match bgp {
        Some(hold_secs) => Routes::Bgp {
            asn: ROUTER_ASN,
            hold_secs,
            neighbors: (1..=balancers)
                .map(|n| Neighbor {
                    name: format!("lb{n}"),
                    address: balancer_addr(n),
                    asn: BALANCER_ASN,
                })
                .collect(),
        },
        None => Routes::Static {
            prefix: VIP_PREFIX.into(),
            via: (1..=balancers).map(balancer_addr).collect(),
        },
    };
    BirdConfig {
        router_id: ROUTER,
        local: ROUTER,
        routes,
    }
}
