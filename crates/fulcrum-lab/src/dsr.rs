//! The L2 DSR lab: a client, a balancer and backends on one bridge, each host in its own
//! network namespace.
//!
//! ```text
//!   client 10.77.0.1 ─┐
//!   balancer 10.77.0.2 ┼── bridge (switch namespace)
//!   backend-N 10.77.0.1N ┘      VIP 10.77.99.1 on each backend's lo
//! ```
//! The client routes the VIP's subnet to the balancer; backends answer the client directly.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use fulcrum::PassProgram;

pub use crate::host::Host;
use crate::{
    host::{backend_servers, plug, switch},
    netns::{NetNs, unique_prefix},
    traffic::{Server, http_server, udp_server},
};

/// Address of the client.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Address of the balancer host.
pub const BALANCER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The virtual IP the lab's services use.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 99, 1);
/// The balancer's interface inside its namespace.
pub const LB_IFACE: &str = "eth0";

/// Address of backend `n` (1-based).
pub const fn backend_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + n)
}

/// The whole lab. Dropping it removes every namespace (and so every program attached
/// inside them).
pub struct DsrLab {
    /// The host that runs the balancer.
    pub balancer: Host,
    /// The host that sends requests.
    pub client: Host,
    /// Backends, `backends[i]` has address `backend_addr(i + 1)`.
    pub backends: Vec<Host>,
    /// Kept so the balancer's bridge port accepts `XDP_TX`'d frames.
    _pass: PassProgram,
    /// Dropped last: the bridge.
    switch: NetNs,
    prefix: String,
}

impl DsrLab {
    /// Builds the lab with `backends` backends, each holding the VIP on `lo`, under a
    /// namespace prefix no other lab uses.
    pub fn new(tag: &str, backends: u8) -> anyhow::Result<Self> {
        Self::with_prefix(&unique_prefix(tag), backends)
    }

    /// Like [`DsrLab::new`] with a fixed prefix: leftovers of an interrupted run with the same
    /// prefix are replaced.
    pub fn with_prefix(prefix: &str, backends: u8) -> anyhow::Result<Self> {
        let prefix = prefix.to_string();
        let switch = switch(&prefix)?;

        let client = plug(&switch, &prefix, "cl", CLIENT)?;
        client.ns.ip(&[
            "route",
            "add",
            &format!("{}/24", Ipv4Addr::from(u32::from(VIP) & !0xff)),
            "via",
            &BALANCER.to_string(),
        ])?;
        let balancer = plug(&switch, &prefix, "lb", BALANCER)?;
        let pass = switch
            .run_in(|| PassProgram::attach("p-lb"))?
            .context("attaching XDP_PASS to the balancer's bridge port")?;

        let mut lab = Self {
            balancer,
            client,
            backends: Vec::new(),
            _pass: pass,
            switch,
            prefix,
        };
        for n in 1..=backends {
            lab.add_backend(n)?;
        }
        Ok(lab)
    }

    /// Adds backend `n` (address `backend_addr(n)`), ready for DSR.
    pub fn add_backend(&mut self, n: u8) -> anyhow::Result<&Host> {
        let host = plug(
            &self.switch,
            &self.prefix,
            &format!("b{n}"),
            backend_addr(n),
        )?;
        host.hold_vip(VIP)?;
        self.backends.push(host);
        self.backends.last().context("backend just added")
    }

    /// Another balancer host on the bridge at `addr` (a fleet of two), with the `XDP_PASS`
    /// program its bridge port needs: keep it while the balancer runs. The client still
    /// routes the VIPs to [`BALANCER`] until a test changes its route.
    pub fn add_balancer(&self, tag: &str, addr: Ipv4Addr) -> anyhow::Result<(Host, PassProgram)> {
        let host = plug(&self.switch, &self.prefix, tag, addr)?;
        let port = format!("p-{tag}");
        let pass = self
            .switch
            .run_in(|| PassProgram::attach(&port))?
            .with_context(|| format!("attaching XDP_PASS to {port}"))?;
        Ok((host, pass))
    }

    /// An HTTP server on port 80 of every backend, named `backend-N` after its host.
    pub fn http_servers(&self) -> anyhow::Result<Vec<Server>> {
        backend_servers(
            &self.backends,
            SocketAddr::from(([0, 0, 0, 0], 80)),
            http_server,
        )
    }

    /// A UDP server on the VIP's port `port` of every backend, named `backend-N`.
    pub fn udp_servers(&self, port: u16) -> anyhow::Result<Vec<Server>> {
        backend_servers(&self.backends, SocketAddr::from((VIP, port)), udp_server)
    }

    /// Whether any XDP program is attached to the balancer's interface.
    pub fn balancer_has_xdp(&self) -> anyhow::Result<bool> {
        let out = self.balancer.ns.ip(&["-d", "link", "show", LB_IFACE])?;
        Ok(out.contains("xdp"))
    }
}

/// The IPv6 VIP of [`with_ipv6`]'s lab.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0x99, 0, 0, 0, 1);

/// Host `n`'s IPv6 address on the DSR lab's segment: 1 the client, 2 the balancer, 3 a
/// second balancer, 10 + N backend N.
pub fn six(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, n)
}

/// Gives `host` the address [`six`]`(n)` at once (no duplicate address detection).
pub fn add_ipv6(host: &Host, n: u16) {
    host.ns
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", six(n)),
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("IPv6 address");
}

/// The DSR lab dual-stack: IPv6 addresses beside the IPv4 ones, [`VIP6`] on every backend's
/// `lo`, and the client's route to it through the balancer.
pub fn with_ipv6(lab: &DsrLab) {
    add_ipv6(&lab.client, 1);
    add_ipv6(&lab.balancer, 2);
    for (i, backend) in lab.backends.iter().enumerate() {
        add_ipv6(backend, 11 + i as u16);
        backend.hold_vip6(VIP6).expect("VIP on lo");
    }
    route6_via(&lab.client.ns, 2);
}

/// The client reaches [`VIP6`] through the host at [`six`]`(n)`.
pub fn route6_via(client: &NetNs, n: u16) {
    client
        .ip(&[
            "-6",
            "route",
            "replace",
            &format!("{VIP6}/128"),
            "via",
            &six(n).to_string(),
        ])
        .expect("route");
}
