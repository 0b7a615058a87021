//! Balancer daemons of an ECMP lab: their YAML (BGP to the lab's router, flow sharing
//! between them), `fulcrum run` started in each balancer's namespace with the host's
//! mounts, and reads of their API.

use std::{
    fs::OpenOptions,
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    daemon::Daemon,
    ecmp::{BALANCER_ASN, EcmpLab, ROUTER, ROUTER_ASN, VIP, backend_addr, balancer_addr},
    netns::NetNs,
    traffic::http_call,
};

/// Every daemon's API, inside its own namespace.
pub const API: &str = "127.0.0.1:9180";
/// The lab token for mutating calls.
pub const TOKEN: &str = "fleet-lab-token-0123";
/// The UDP port flow records go to.
pub const FLOW_PORT: u16 = 7946;

/// What the balancers run.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// How many balancers (peers of each other).
    pub balancers: u8,
    /// The backends of the `web` service (TCP 80, HTTP check), by number.
    pub backends: Vec<u8>,
    /// Also a `dns` service (UDP 53, no checks) on the same backends.
    pub udp: bool,
    /// BGP to the router, with these timers; `None`: no `bgp:` section.
    pub bgp: Option<BgpTimers>,
    /// Flow sharing between the balancers; `None`: no `flow_sharing:` section.
    pub flow_sharing: Option<SharingTimers>,
}

/// BGP timers, in the config's duration syntax (`3s`).
#[derive(Clone, Debug)]
pub struct BgpTimers {
    /// `peers[].hold_time`.
    pub hold_time: String,
    /// `graceful_restart` (`off` or a duration).
    pub graceful_restart: String,
    /// `shutdown_delay`.
    pub shutdown_delay: String,
}

/// Flow sharing timers.
#[derive(Clone, Debug)]
pub struct SharingTimers {
    /// `refresh_interval`.
    pub refresh_interval: String,
    /// `sync_timeout`.
    pub sync_timeout: String,
}

impl FleetConfig {
    /// Balancer `n`'s whole YAML; its files (token, key) live in `dir`. Even-numbered
    /// balancers list the backends in reverse order: which backend a flow gets must not
    /// depend on the order of the list.
    pub fn render(&self, n: u8, instance: &str, dir: &Path) -> String {
        let me = balancer_addr(n);
        let mut text = format!(
            "instance: {instance}\ninterfaces: [eth0]\napi:\n  listen: {API}\n  token_file: {}\n",
            dir.join("token").display()
        );
        if let Some(b) = &self.bgp {
            text.push_str(&format!(
                "bgp:\n  asn: {BALANCER_ASN}\n  router_id: {me}\n  graceful_restart: {}\n  shutdown_delay: {}\n  peers:\n    - address: {ROUTER}\n      asn: {ROUTER_ASN}\n      hold_time: {}\n",
                b.graceful_restart, b.shutdown_delay, b.hold_time
            ));
        }
        if let Some(s) = &self.flow_sharing {
            let peers: Vec<String> = (1..=self.balancers)
                .filter(|&p| p != n)
                .map(|p| format!("{}:{FLOW_PORT}", balancer_addr(p)))
                .collect();
            text.push_str(&format!(
                "flow_sharing:\n  listen: {me}:{FLOW_PORT}\n  peers: [{}]\n  key_file: {}\n  refresh_interval: {}\n  batch_delay: 50ms\n  sync_timeout: {}\n",
                peers.join(", "),
                dir.join("flow-key").display(),
                s.refresh_interval,
                s.sync_timeout
            ));
        }
        let mut backends = self.backends.clone();
        if n.is_multiple_of(2) {
            backends.reverse();
        }
        let list: String = backends
            .iter()
            .map(|&b| format!("      - address: {}\n", backend_addr(b)))
            .collect();
        text.push_str(&format!(
            "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    health:\n      - type: http\n        path: /\n        expect_status: 200\n        interval: 200ms\n        timeout: 150ms\n        rise: 2\n        fall: 2\n    backends:\n{list}"
        ));
        if self.udp {
            text.push_str(&format!(
                "  - name: dns\n    vip: {VIP}\n    port: 53\n    protocol: udp\n    backends:\n{list}"
            ));
        }
        text
    }
}

/// The balancer daemons of a lab, by number; each SIGTERMed on drop, and its pinned
/// state and files removed.
pub struct Fleet {
    daemons: Vec<Option<Daemon>>,
    instances: Vec<String>,
    dir: PathBuf,
    exe: PathBuf,
    /// What the daemons run (change it, then [`Fleet::write`] and reload).
    pub config: FleetConfig,
}

impl Fleet {
    /// Writes every balancer's files into a directory of the lab's; starts nothing.
    /// `exe` is the `fulcrum` binary.
    pub fn new(lab: &EcmpLab, exe: &Path, config: FleetConfig) -> anyhow::Result<Self> {
        let dir = lab.dir().join("fleet");
        std::fs::create_dir_all(&dir)?;
        private_file(&dir.join("token"), &format!("{TOKEN}\n"))?;
        private_file(
            &dir.join("flow-key"),
            "fleet-lab-shared-flow-key-0123456789\n",
        )?;
        let tag = lab
            .balancer(1)
            .ns
            .name()
            .trim_end_matches("-lb1")
            .to_string();
        let fleet = Self {
            daemons: (0..config.balancers).map(|_| None).collect(),
            instances: (1..=config.balancers)
                .map(|n| format!("{tag}-lb{n}"))
                .collect(),
            dir,
            exe: exe.to_path_buf(),
            config,
        };
        fleet.write()?;
        Ok(fleet)
    }

    /// Writes every balancer's YAML from [`Fleet::config`].
    pub fn write(&self) -> anyhow::Result<()> {
        for n in 1..=self.config.balancers {
            let text = self.config.render(n, self.instance(n), &self.dir);
            std::fs::write(self.config_path(n), text)?;
        }
        Ok(())
    }

    /// Balancer `n`'s `instance` (its pins live in `/sys/fs/bpf/fulcrum/INSTANCE`).
    pub fn instance(&self, n: u8) -> &str {
        &self.instances[usize::from(n) - 1]
    }

    /// Balancer `n`'s YAML file.
    pub fn config_path(&self, n: u8) -> PathBuf {
        self.dir.join(format!("lb{n}.yaml"))
    }

    /// Balancer `n`'s log (the daemon's stderr, appended across restarts).
    pub fn log_path(&self, n: u8) -> PathBuf {
        self.dir.join(format!("lb{n}.log"))
    }

    /// Starts `fulcrum run` for balancer `n` (`nsenter --net`: pins on the host's bpffs).
    pub fn start(&mut self, lab: &EcmpLab, n: u8) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(n))?;
        let mut command = lab
            .balancer(n)
            .ns
            .command_with_host_mounts(self.exe.to_str().context("fulcrum path")?);
        command
            .args(["run", "--config"])
            .arg(self.config_path(n))
            .stdout(Stdio::null())
            .stderr(log);
        self.daemons[usize::from(n) - 1] = Some(Daemon::spawn(command)?);
        Ok(())
    }

    /// Sends `signal` to balancer `n` without waiting (SIGHUP: reload).
    pub fn signal(&self, n: u8, signal: i32) {
        if let Some(d) = &self.daemons[usize::from(n) - 1] {
            d.signal(signal);
        }
    }

    /// Sends `signal` to balancer `n` (0: none, it was signalled before) and waits for its
    /// exit; its exit code.
    pub fn stop(&mut self, n: u8, signal: i32) -> anyhow::Result<Option<i32>> {
        let Some(mut d) = self.daemons[usize::from(n) - 1].take() else {
            bail!("balancer {n} is not running");
        };
        d.stop_with(signal)
    }

    /// Removes balancer `n`'s pinned state, as a machine that died loses it: its XDP
    /// program goes with the last pin.
    pub fn forget_pins(&self, n: u8) -> anyhow::Result<()> {
        let dir = fulcrum::pin::instance_dir(self.instance(n));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Balancer `n`'s log so far, for failure messages.
    pub fn log(&self, n: u8) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            drop(d.take());
        }
        for i in &self.instances {
            let _ = std::fs::remove_dir_all(fulcrum::pin::instance_dir(i));
        }
    }
}

/// A file only its owner may read (the daemon refuses token and key files others can).
fn private_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// `GET PATH` (or `POST` with the token) on the daemon's API in `ns`; `None` while it
/// does not answer.
pub fn api(ns: &NetNs, method: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = API.parse().ok()?;
    let stream = ns
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
        .ok()?
        .ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let token = (method != "GET").then_some(TOKEN);
    http_call(stream, method, path, token).ok()
}

/// The value of the sample `name` (with its labels, exactly as exposed) in the daemon's
/// `/metrics`; `None` when the API does not answer or has no such sample.
pub fn metric(ns: &NetNs, sample: &str) -> Option<f64> {
    let (_, text) = api(ns, "GET", "/metrics")?;
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls `ok` every 50 ms until it holds; an error naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}
