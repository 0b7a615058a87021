//! Real BGP routers for the labs: BIRD 2 and GoBGP, each started in a namespace the test
//! owns, with its own config, control socket and files, and killed on drop.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

use crate::netns::{NetNs, unique_prefix};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A directory of its own for one router's files, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fulcrum-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A BIRD daemon (`bird -f`) in a namespace; `birdc` talks to it over its own socket.
pub struct Bird {
    child: Child,
    socket: PathBuf,
    ns_name: String,
    _files: Files,
}

impl Bird {
    /// Starts BIRD in `ns` with `config` (a whole bird.conf, to which a `log` line to
    /// [`Bird::log`]'s file is prepended).
    pub fn start(ns: &NetNs, config: &str) -> anyhow::Result<Self> {
        let files = Files::new("bird")?;
        let conf = files.0.join("bird.conf");
        let log = files.0.join("bird.log");
        std::fs::write(&conf, format!("log \"{}\" all;\n{config}", log.display()))?;
        let socket = files.0.join("bird.ctl");
        let child = ns
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(files.0.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting bird")?;
        let mut bird = Self {
            child,
            socket,
            ns_name: ns.name().to_owned(),
            _files: files,
        };
        for _ in 0..100 {
            if bird.birdc(&["show", "status"]).is_ok() {
                return Ok(bird);
            }
            if let Some(status) = bird.child.try_wait()? {
                bail!("bird exited at start: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        kill(&mut bird.child);
        bail!("bird did not answer on its control socket")
    }

    /// Runs `birdc` with `args`; its output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_name, "birdc", "-s"])
            .arg(&self.socket)
            .args(args);
        crate::netns::run(&mut cmd)
    }

    /// Everything BIRD logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._files.0.join("bird.log")).unwrap_or_default()
    }

    /// `show route all for PREFIX`-style view of one prefix: BIRD's lines for it, empty
    /// when BIRD has no route for it.
    pub fn route(&self, prefix: &str) -> String {
        match self.birdc(&["show", "route", "all", prefix]) {
            Ok(text) if text.contains(prefix) => text,
            _ => String::new(),
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A GoBGP daemon in a namespace; `gobgp -p PORT` talks to its API on the namespace's
/// loopback.
pub struct Gobgp {
    child: Child,
    port: u16,
    ns_name: String,
    _files: Files,
}

impl Gobgp {
    /// Starts `gobgpd` in `ns` with `config` (TOML) and its API on `127.0.0.1:port`.
    pub fn start(ns: &NetNs, config: &str, port: u16) -> anyhow::Result<Self> {
        let files = Files::new("gobgp")?;
        let conf = files.0.join("gobgpd.toml");
        std::fs::write(&conf, config)?;
        let child = ns
            .command("gobgpd")
            .arg("-f")
            .arg(&conf)
            .arg("--api-hosts")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting gobgpd")?;
        let mut gobgp = Self {
            child,
            port,
            ns_name: ns.name().to_owned(),
            _files: files,
        };
        for _ in 0..100 {
            if gobgp.gobgp(&["global"]).is_ok() {
                return Ok(gobgp);
            }
            if let Some(status) = gobgp.child.try_wait()? {
                bail!("gobgpd exited at start: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        kill(&mut gobgp.child);
        bail!("gobgpd did not answer on its API")
    }

    /// Runs `gobgp -p PORT ARGS`; its output.
    pub fn gobgp(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_name, "gobgp", "-p"])
            .arg(self.port.to_string())
            .args(args);
        crate::netns::run(&mut cmd)
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Two namespaces on one dual-stack link, for BGP sessions over IPv4 and IPv6: a router
/// (BIRD or GoBGP) in [`PeerLink::router`] and the speaker in [`PeerLink::speaker`].
/// Addresses are fixed (each lab has its own namespaces); IPv6 ones skip duplicate
/// address detection so they are usable at once.
pub struct PeerLink {
    /// The router's namespace, `eth0` in it.
    pub router: NetNs,
    /// The speaker's namespace, `eth0` in it.
    pub speaker: NetNs,
}

impl PeerLink {
    /// The router's IPv4 address.
    pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
    /// The speaker's IPv4 address.
    pub const SPEAKER4: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
    /// The router's IPv6 address.
    pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x79, 0, 0, 0, 0, 0, 1);
    /// The speaker's IPv6 address.
    pub const SPEAKER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x79, 0, 0, 0, 0, 0, 2);

    /// Creates both namespaces and the link; dropped, they go.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let prefix = unique_prefix(tag);
        let router = NetNs::create(&format!("{prefix}-r"))?;
        let speaker = NetNs::create(&format!("{prefix}-s"))?;
        router.veth("eth0", &speaker, "eth0")?;
        for (ns, v4, v6) in [
            (&router, Self::ROUTER4, Self::ROUTER6),
            (&speaker, Self::SPEAKER4, Self::SPEAKER6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(Self { router, speaker })
    }

    /// The router's address of the family of `ipv6`.
    pub fn router(ipv6: bool) -> IpAddr {
        if ipv6 {
            Self::ROUTER6.into()
        } else {
            Self::ROUTER4.into()
        }
    }
}
