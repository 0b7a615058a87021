//! The layer-3 DSR lab: backends on another subnet, behind a router, reached through
//! IP-in-IP or GUE tunnels that `fulcrum decap` strips on each backend.
//!
//! ```text
//!   client   10.78.0.1   fd78::1   ─┐
//!   balancer 10.78.0.2   fd78::2   ─┼─ front bridge
//!   router   10.78.0.254 fd78::fe  ─┘
//!   router   10.78.1.254 fd78:1::fe ─┐
//!   backend-N 10.78.1.1N fd78:1::1N ─┴─ back bridge   VIPs on each backend's lo
//! ```
//! The client routes the VIPs to the balancer; the balancer routes the backends' subnet
//! and the VIPs (where health probes to them leave) through the router (its FIB gives the
//! next hop); backends answer the client directly
//! from the VIP through the router, which routes the VIPs to the balancer, so its ICMP
//! errors about the backends' replies reach the balancer.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use fulcrum::PassProgram;

use crate::{
    daemon::Daemon,
    host::{Host, backend_servers, plug, switch},
    netns::{NetNs, unique_prefix},
    traffic::{Server, http_server},
};

/// The client.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// See [`CLIENT`].
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 1);
/// The balancer host.
pub const BALANCER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
/// See [`BALANCER`].
pub const BALANCER6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 2);
/// The router on the front bridge.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 254);
/// See [`ROUTER`].
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0xfe);
/// The IPv4 VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 78, 99, 1);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0x99, 0, 0, 0, 0, 0, 1);
/// The balancer's interface inside its namespace.
pub const LB_IFACE: &str = "eth0";

/// Backend `n`'s IPv4 address (1-based).
pub const fn backend_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 1, 10 + n)
}

/// Backend `n`'s IPv6 address (1-based).
pub const fn backend_addr6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd78, 1, 0, 0, 0, 0, 0, 0x10 + n as u16)
}

/// The whole lab; dropping it stops the decapsulators and removes every namespace.
pub struct L3Lab {
    /// The host that runs the balancer.
    pub balancer: Host,
    /// The host that sends requests.
    pub client: Host,
    /// The router between the two bridges.
    pub router: Host,
    /// Backends, `backends[i]` has addresses `backend_addr(i + 1)`, `backend_addr6(i + 1)`.
    pub backends: Vec<Host>,
    decaps: Vec<Daemon>,
    _pass: PassProgram,
    _switches: [NetNs; 2],
}

impl L3Lab {
    /// Builds the lab with `backends` backends, each holding both VIPs on `lo`.
    pub fn new(tag: &str, backends: u8) -> anyhow::Result<Self> {
        let prefix = unique_prefix(tag);
        let front = switch(&prefix)?;
        let back = switch(&format!("{prefix}b"))?;

        let client = plug(&front, &prefix, "cl", CLIENT)?;
        add6(&client.ns, CLIENT6)?;
        client.ns.ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &BALANCER.to_string(),
        ])?;
        client.ns.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &BALANCER6.to_string(),
        ])?;

        let balancer = plug(&front, &prefix, "lb", BALANCER)?;
        add6(&balancer.ns, BALANCER6)?;
        balancer
            .ns
            .ip(&["route", "add", "10.78.1.0/24", "via", &ROUTER.to_string()])?;
        balancer.ns.ip(&[
            "-6",
            "route",
            "add",
            "fd78:1::/64",
            "via",
            &ROUTER6.to_string(),
        ])?;
        // Health probes to a VIP leave by the kernel's route to it (a default route on most
        // balancers; here only the VIPs, so other addresses stay unroutable).
        for (vip, router) in [
            (format!("{VIP}/32"), ROUTER.to_string()),
            (format!("{VIP6}/128"), ROUTER6.to_string()),
        ] {
            balancer.ns.ip(&["route", "add", &vip, "via", &router])?;
        }
        let pass = front
            .run_in(|| PassProgram::attach("p-lb"))?
            .context("attaching XDP_PASS to the balancer's bridge port")?;

        let router = plug(&front, &prefix, "rt", ROUTER)?;
        add6(&router.ns, ROUTER6)?;
        back.veth("p-rt", &router.ns, "eth1")?;
        back.ip(&["link", "set", "p-rt", "master", "br0", "up"])?;
        let r = &router.ns;
        r.ip(&["addr", "add", "10.78.1.254/24", "dev", "eth1"])?;
        r.ip(&["-6", "addr", "add", "fd78:1::fe/64", "dev", "eth1", "nodad"])?;
        r.ip(&["link", "set", "eth1", "up"])?;
        r.exec("ethtool", &["-K", "eth1", "tx", "off"])?;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        r.ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &BALANCER.to_string(),
        ])?;
        r.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &BALANCER6.to_string(),
        ])?;

        let mut lab = Self {
            balancer,
            client,
            router,
            backends: Vec::new(),
            decaps: Vec::new(),
            _pass: pass,
            _switches: [front, back],
        };
        for n in 1..=backends {
            let host = plug(
                &lab._switches[1],
                &prefix,
                &format!("b{n}"),
                backend_addr(n),
            )?;
            add6(&host.ns, backend_addr6(n))?;
            host.ns
                .ip(&["route", "add", "default", "via", "10.78.1.254"])?;
            host.ns
                .ip(&["-6", "route", "add", "default", "via", "fd78:1::fe"])?;
            host.hold_vip(VIP)?;
            host.hold_vip6(VIP6)?;
            lab.backends.push(host);
        }
        // Fresh veths on a bridge take a moment to carry traffic: wait until the balancer
        // reaches every backend in both families.
        for n in 1..=backends {
            for addr in [backend_addr(n).to_string(), backend_addr6(n).to_string()] {
                wait_for(|| Ok(lab.balancer.ns.exec("ping", &["-c1", "-W1", &addr]).is_ok()))
                    .with_context(|| format!("the balancer cannot reach backend {addr}"))?;
            }
        }
        Ok(lab)
    }

    /// Starts `fulcrum decap eth0` (with `args`) on every backend, and waits until each
    /// has its program attached.
    pub fn start_decap(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let bin = fulcrum_binary()?;
        for b in &self.backends {
            let mut cmd = b.ns.command(bin.to_str().context("binary path")?);
            cmd.args(["decap", "eth0"]).args(args);
            self.decaps.push(Daemon::spawn(cmd)?);
        }
        for b in &self.backends {
            wait_for(|| Ok(b.ns.ip(&["-d", "link", "show", "eth0"])?.contains("xdp")))
                .with_context(|| format!("fulcrum decap did not attach in {}", b.ns.name()))?;
        }
        Ok(())
    }

    /// An HTTP server on port 80 of every backend (both families), named `backend-N`.
    pub fn http_servers(&self) -> anyhow::Result<Vec<Server>> {
        backend_servers(
            &self.backends,
            SocketAddr::from(([0u16; 8], 80)),
            http_server,
        )
    }

    /// The router sends at most `mtu` bytes per packet to the client: backends' larger
    /// replies get "fragmentation needed" / "packet too big" from it, addressed to the VIP.
    pub fn narrow_client_path(&self, mtu: u32) -> anyhow::Result<()> {
        let mtu = mtu.to_string();
        let r = &self.router.ns;
        r.ip(&[
            "route",
            "replace",
            &format!("{CLIENT}/32"),
            "dev",
            "eth0",
            "mtu",
            &mtu,
        ])?;
        r.ip(&[
            "-6",
            "route",
            "replace",
            &format!("{CLIENT6}/128"),
            "dev",
            "eth0",
            "mtu",
            &mtu,
        ])?;
        Ok(())
    }
}

fn add6(ns: &NetNs, addr: Ipv6Addr) -> anyhow::Result<()> {
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .map(|_| ())
}

fn wait_for(mut ok: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for _ in 0..250 {
        if ok()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("not within 5 s")
}

/// `fulcrum` from this build's target directory (tests run from `target/release/deps`),
/// or `$FULCRUM_BIN`.
pub fn fulcrum_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FULCRUM_BIN") {
        return Ok(path.into());
    }
    let me = std::env::current_exe().context("finding this binary")?;
    for dir in me.ancestors().skip(1).take(2) {
        let path = dir.join("fulcrum");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "no fulcrum binary next to {}: run `cargo build --release` first",
        me.display()
    )
}

/// A server on `addr` in `ns` answering every HTTP request with `size` bytes: enough
/// full-sized segments that a path with a smaller MTU shows.
pub fn download_server(ns: &NetNs, addr: SocketAddr, size: usize) -> anyhow::Result<Download> {
    let listener = ns
        .run_in(|| TcpListener::bind(addr))?
        .with_context(|| format!("binding {addr} in {}", ns.name()))?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    std::thread::spawn(move || serve_download(stream, size));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(Download {
        stop,
        thread: Some(thread),
    })
}

fn serve_download(stream: TcpStream, size: usize) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    let body = vec![b'x'; size];
    let _ = writer.write_all(head.as_bytes());
    let _ = writer.write_all(&body);
}

/// A running [`download_server`], stopped on drop.
pub struct Download {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Downloads from `addr` in `ns`; the bytes of the body received, or an error when the
/// transfer stalls for `stall` (a path MTU black hole looks like that).
pub fn download(ns: &NetNs, addr: SocketAddr, stall: Duration) -> anyhow::Result<usize> {
    let mut stream = ns
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(stall))?;
    stream.write_all(b"GET /big HTTP/1.1\r\nHost: lab\r\n\r\n")?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => bail!("the download stalled after {} bytes: {e}", all.len()),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let (head, _) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    Ok(all.len() - head.len() - 4)
}

/// The address a lab client connects to for `vip` (either family) and `port`.
pub fn service_addr(vip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(vip, port)
}
