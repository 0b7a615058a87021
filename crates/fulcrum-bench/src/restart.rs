//! The restart suite: how soon `fulcrum run` forwards after a fresh start, how soon a
//! new daemon has taken over a pinned data plane holding 1M flows (and what the clients
//! lost meanwhile), and whether API reads wait for a 1000-service reload.

use std::{
    fs::OpenOptions,
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use fulcrum_common::{FlowKey, FlowValue, maps};
use fulcrum_lab::{
    daemon::Daemon,
    dsr::{DsrLab, VIP, backend_addr},
    netns::NetNs,
    traffic::{http_call, udp_server},
};

use crate::report::Figure;

const TOKEN: &str = "bench-token-42";
const API: &str = "127.0.0.1:9180";
/// `fulcrum run`'s exit status after a handover.
const EXIT_HANDOVER: i32 = 75;
const FLOWS: u32 = 1_000_000;

pub fn run() -> anyhow::Result<Vec<Figure>> {
    let mut figures = startup().context("start and adoption times")?;
    figures.extend(reads_during_reload().context("API reads during a reload")?);
    Ok(figures)
}

/// A daemon's files: config, token, log; and its instance name.
struct Files {
    dir: PathBuf,
    instance: String,
}

impl Files {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let instance = format!("bench-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("fulcrum-{instance}"));
        std::fs::create_dir_all(&dir)?;
        let mut token = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("token"))?;
        writeln!(token, "{TOKEN}")?;
        Ok(Self { dir, instance })
    }

    fn config(&self, services: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("fulcrum.yaml");
        let text = format!(
            "instance: {}\ninterfaces: [eth0]\napi:\n  listen: {API}\n  token_file: {}\nservices:\n{services}",
            self.instance,
            self.dir.join("token").display()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(fulcrum::pin::instance_dir(&self.instance));
    }
}

/// `fulcrum run` in the balancer's namespace with the host's mounts; SIGTERM on drop.
fn start_daemon(ns: &NetNs, config: &PathBuf, log: PathBuf) -> anyhow::Result<Daemon> {
    let exe = std::env::current_exe()?
        .parent()
        .context("the bench binary's directory")?
        .join("fulcrum");
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = ns.command_with_host_mounts(exe.to_str().context("path")?);
    command
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log);
    Daemon::spawn(command).context("starting fulcrum run (make build builds it)")
}

/// SIGUSR2: the daemon exits leaving the data plane pinned.
fn hand_over(mut daemon: Daemon) -> anyhow::Result<()> {
    let code = daemon.stop_with(libc::SIGUSR2)?;
    ensure!(
        code == Some(EXIT_HANDOVER),
        "a handover exits with {EXIT_HANDOVER}, not {code:?}"
    );
    Ok(())
}

fn api(ns: &NetNs, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr: SocketAddr = API.parse()?;
    let stream = ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(500)))??;
    let token = (method == "POST").then_some(TOKEN);
    http_call(stream, method, path, token)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// Sends a datagram to the VIP every 2 ms and remembers when answers came.
struct UdpProbe {
    socket: UdpSocket,
    seq: u64,
}

impl UdpProbe {
    fn new(ns: &NetNs) -> anyhow::Result<Self> {
        let socket = ns.run_in(|| UdpSocket::bind("0.0.0.0:0"))??;
        socket.connect(SocketAddr::from((VIP, 53)))?;
        socket.set_read_timeout(Some(Duration::from_millis(2)))?;
        Ok(Self { socket, seq: 0 })
    }

    /// One question; true if it was answered within 2 ms.
    fn ask(&mut self) -> bool {
        self.seq += 1;
        let _ = self.socket.send(&self.seq.to_be_bytes());
        let mut buf = [0u8; 256];
        self.socket.recv(&mut buf).is_ok()
    }
}

fn startup() -> anyhow::Result<Vec<Figure>> {
    let lab = DsrLab::new("br", 1)?;
    let _server = udp_server(
        &lab.backends[0].ns,
        "backend-1",
        SocketAddr::from((VIP, 53)),
    )?;
    let files = Files::new("start")?;
    let config = files.config(&format!(
        "  - name: dns\n    vip: {VIP}\n    port: 53\n    protocol: udp\n    backends:\n      - address: {}\n",
        backend_addr(1)
    ))?;
    let log = files.dir.join("daemon.log");
    let mut probe = UdpProbe::new(&lab.client.ns)?;

    let t0 = Instant::now();
    let daemon = start_daemon(&lab.balancer.ns, &config, log.clone())?;
    wait_for(
        "the first forwarded datagram",
        Duration::from_secs(30),
        || probe.ask(),
    )?;
    let fresh_forward = t0.elapsed();
    wait_for("the API", Duration::from_secs(30), || {
        api(&lab.balancer.ns, "GET", "/api/v1/services").is_ok()
    })?;
    let fresh_ready = t0.elapsed();

    fill_flows(&files.instance)?;
    hand_over(daemon)?;
    let t1 = Instant::now();
    let next = start_daemon(&lab.balancer.ns, &config, log)?;
    let (mut asked, mut lost) = (0u32, 0u32);
    wait_for("the adopting daemon's API", Duration::from_secs(60), || {
        asked += 1;
        if !probe.ask() {
            lost += 1;
        }
        api(&lab.balancer.ns, "GET", "/api/v1/services").is_ok()
    })?;
    let adopt_ready = t1.elapsed();
    drop(next);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(vec![
        Figure::new(
            "restart",
            "fresh start: first VIP packet forwarded",
            ms(fresh_forward),
            "ms",
        )
        .note("fulcrum run spawned to the first UDP answer through the VIP, polled every 2 ms"),
        Figure::new(
            "restart",
            "fresh start: API answering",
            ms(fresh_ready),
            "ms",
        ),
        Figure::new(
            "restart",
            "adopting 1M pinned flows: API answering",
            ms(adopt_ready),
            "ms",
        )
        .against("fresh start", ms(fresh_ready))
        .target(
            "<= 2x fresh start",
            ms(adopt_ready) <= 2.0 * ms(fresh_ready),
        )
        .note("after SIGUSR2 handover; adoption walks backend slots, never the flows"),
        Figure::new(
            "restart",
            "datagrams unanswered during the handover",
            f64::from(lost),
            "count",
        )
        .target("0", lost == 0)
        .note(format!(
            "{asked} asked from handover to the new API answering"
        )),
    ])
}

/// Fills the instance's pinned flow table up to 1M entries.
fn fill_flows(instance: &str) -> anyhow::Result<()> {
    let path = fulcrum::pin::instance_dir(instance).join(maps::FLOWS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut flows: HashMap<MapData, FlowKey, FlowValue> = HashMap::try_from(Map::LruHashMap(data))?;
    for i in 0..FLOWS {
        let key = FlowKey {
            src: (0x0a60_0000 + i).to_be(),
            dst: u32::from_ne_bytes(VIP.octets()),
            sport: ((i % 50_000) as u16 + 10_000).to_be(),
            dport: 53u16.to_be(),
            proto: 17,
            _pad: 0,
            _pad2: 0,
        };
        flows.insert(key, FlowValue::default(), 0)?;
    }
    Ok(())
}

fn reads_during_reload() -> anyhow::Result<Vec<Figure>> {
    const SERVICES: usize = 1000;
    let lab = DsrLab::new("bapi", 3)?;
    let files = Files::new("reload")?;
    let services = |weight: u32| -> String {
        (0..SERVICES)
            .map(|i| {
                format!(
                    "  - name: s{i}\n    vip: 10.80.{}.{}\n    port: 80\n    backends:\n      - address: {}\n        weight: {weight}\n      - address: {}\n      - address: {}\n",
                    i / 250,
                    i % 250 + 1,
                    backend_addr(1),
                    backend_addr(2),
                    backend_addr(3)
                )
            })
            .collect()
    };
    let config = files.config(&services(1))?;
    let _daemon = start_daemon(&lab.balancer.ns, &config, files.dir.join("daemon.log"))?;
    let ns = &lab.balancer.ns;
    wait_for("1000 services in the API", Duration::from_secs(120), || {
        api(ns, "GET", "/api/v1/services")
            .map(|(_, b)| b.matches("\"vip\"").count() >= SERVICES)
            .unwrap_or(false)
    })?;
    let read = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let (status, _) = api(ns, "GET", "/api/v1/services")?;
        ensure!(status == 200, "read answered {status}");
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let idle: Vec<f64> = (0..30).map(|_| read()).collect::<Result<_, _>>()?;

    files.config(&services(2))?;
    let addr: SocketAddr = API.parse()?;
    let stream = ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(500)))??;
    let reload = std::thread::spawn(move || -> anyhow::Result<f64> {
        let t = Instant::now();
        let (status, body) = http_call(stream, "POST", "/api/v1/reload", Some(TOKEN))?;
        ensure!(status == 200, "reload answered {status}: {body}");
        Ok(t.elapsed().as_secs_f64() * 1e3)
    });
    let mut during = Vec::new();
    while !reload.is_finished() {
        during.push(read()?);
    }
    let reload_ms = reload
        .join()
        .map_err(|_| anyhow::anyhow!("reload thread"))??;
    // The last read may have started before the reload finished and ended after it.
    ensure!(!during.is_empty(), "no read completed during the reload");
    let (idle, busy) = (Spread::of(idle), Spread::of(during));
    Ok(vec![
        Figure::new("restart", "1000-service reload", reload_ms, "ms")
            .note("POST /api/v1/reload changing every service's weights"),
        Figure::new(
            "restart",
            "API read during that reload, longest",
            busy.max,
            "ms",
        )
        .against("the reload", reload_ms)
        .target("<= 0.25x the reload", busy.max <= 0.25 * reload_ms)
        .note(format!(
            "GET /api/v1/services ({SERVICES} services): {} during; idle {}",
            busy.text(),
            idle.text()
        )),
    ])
}

/// Median and largest of a set of latencies.
struct Spread {
    median: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Self {
            median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
            max: samples.last().copied().unwrap_or_default(),
            n: samples.len(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{} reads, median {:.1} ms, max {:.1} ms",
            self.n, self.median, self.max
        )
    }
}
