//! The soak test's moving parts: the daemon and its restarts, the load generators, the
//! port-reusing prober, and the client's TCP counters.

use std::{
    fs::OpenOptions,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{fd::FromRawFd as _, unix::fs::OpenOptionsExt as _},
    path::PathBuf,
    process::{Child, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use fulcrum_lab::{daemon::Daemon as LabDaemon, dsr::DsrLab, netns::NetNs};

use crate::common::{FULCRUM, TOKEN, try_api, wait_until};

/// `fulcrum run`'s exit status after a handover: the data plane stays pinned.
const EXIT_HANDOVER: i32 = 75;

/// The test's files and its daemon instance, removed on drop.
pub struct SoakDir {
    pub path: PathBuf,
    pub token: PathBuf,
    pub instance: String,
}

impl SoakDir {
    pub fn new() -> Self {
        let instance = format!("soak-{}", std::process::id());
        let path = std::env::temp_dir().join(format!("fulcrum-{instance}"));
        std::fs::create_dir_all(&path).expect("temp dir");
        let token = path.join("token");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&token)
            .expect("token file");
        writeln!(file, "{TOKEN}").expect("token");
        Self {
            path,
            token,
            instance,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("fulcrum.yaml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("config");
    }

    pub fn pin_dir(&self) -> PathBuf {
        fulcrum::pin::instance_dir(&self.instance)
    }
}

impl Drop for SoakDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_dir_all(self.pin_dir());
    }
}

/// How the daemon is restarted.
#[derive(Clone, Copy, Debug)]
pub enum Restart {
    /// SIGUSR2: exits leaving the data plane pinned, then starts again.
    Handover,
    /// SIGKILL: a crash.
    Kill,
}

/// One restart: when, how, and how long until the new daemon answered its API.
pub struct Restarted {
    pub kind: Restart,
    pub at: Instant,
    pub back_after: Duration,
}

/// `fulcrum run` in the balancer's namespace with the host's mounts, stopped (SIGTERM)
/// on drop. Every run appends to one log.
pub struct Daemon {
    process: LabDaemon,
    log: PathBuf,
}

impl Daemon {
    pub fn start(lab: &DsrLab, dir: &SoakDir) -> Self {
        let log = dir.path.join("daemon.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut command = lab.balancer.ns.command_with_host_mounts(FULCRUM);
        command
            .args(["run", "--config"])
            .arg(dir.config_path())
            .env("FULCRUM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out);
        let process = LabDaemon::spawn(command).expect("start fulcrum run");
        Self { process, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Restarts the daemon and waits until the new one answers its API.
    pub fn restart(&mut self, lab: &DsrLab, dir: &SoakDir, kind: Restart) -> Restarted {
        let at = Instant::now();
        match kind {
            Restart::Handover => {
                let code = self
                    .process
                    .stop_with(libc::SIGUSR2)
                    .expect("the daemon exits");
                assert_eq!(
                    code,
                    Some(EXIT_HANDOVER),
                    "a handover exits with {EXIT_HANDOVER}; log:\n{}",
                    self.log()
                );
            }
            Restart::Kill => {
                self.process
                    .stop_with(libc::SIGKILL)
                    .expect("the daemon dies");
            }
        }
        *self = Self::start(lab, dir);
        wait_until(
            "the restarted daemon's API",
            Duration::from_secs(20),
            || try_api(&lab.balancer.ns, "GET", "/api/v1/services", None).is_some(),
        );
        Restarted {
            kind,
            at,
            back_after: at.elapsed(),
        }
    }
}

/// `fulcrum decap eth0` on every backend, for the tunnelled service, each attached
/// before this returns, its output in `dir`; stopped on drop.
pub fn start_decap(lab: &DsrLab, dir: &SoakDir) -> Vec<LabDaemon> {
    let decaps: Vec<_> = lab
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let log = std::fs::File::create(decap_log(dir, i)).expect("decap log");
            let mut command = b.ns.command(FULCRUM);
            command.args(["decap", "eth0"]).stdout(log);
            LabDaemon::spawn(command).expect("start fulcrum decap")
        })
        .collect();
    for b in &lab.backends {
        wait_until("fulcrum decap attached", Duration::from_secs(10), || {
            b.ns.ip(&["-d", "link", "show", "eth0"])
                .is_ok_and(|l| l.contains("xdp"))
        });
    }
    decaps
}

fn decap_log(dir: &SoakDir, backend: usize) -> PathBuf {
    dir.path.join(format!("decap-{}.log", backend + 1))
}

/// What backend `backend`'s (0-based) stopped decapsulator last counted as decapsulated.
pub fn decapsulated(dir: &SoakDir, backend: usize) -> u64 {
    let text = std::fs::read_to_string(decap_log(dir, backend)).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("decapsulated ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The API's answer to a read; panics if it does not answer.
pub fn api_get(lab: &DsrLab, path: &str) -> String {
    try_api(&lab.balancer.ns, "GET", path, None)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// A mutating call that must succeed.
pub fn api_post(lab: &DsrLab, path: &str) {
    let (status, body) =
        try_api(&lab.balancer.ns, "POST", path, Some(TOKEN)).expect("the API answers");
    assert_eq!(status, 200, "POST {path}: {body}");
}

/// What the load generators counted.
pub struct LoadResult {
    pub wrk_requests: u64,
    pub wrk_errors: u64,
    pub wrk_non_2xx: u64,
    pub ab_complete: u64,
    pub ab_failed: u64,
}

/// wrk (keep-alive) and ab (a connection per request) in the client's namespace.
pub struct Load {
    wrk: Child,
    ab: Child,
}

impl Load {
    /// Load on the service at `vip` (port 80).
    pub fn start(lab: &DsrLab, vip: SocketAddr, duration: Duration) -> Self {
        let url = format!("http://{vip}/");
        let secs = duration.as_secs().to_string();
        let wrk = lab
            .client
            .ns
            .command("wrk")
            .args(["-t1", "-c8", "--timeout", "5s", "-d"])
            .arg(format!("{secs}s"))
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (make setup installs it)");
        let ab = lab
            .client
            .ns
            .command("ab")
            .args([
                "-q", "-r", "-c", "2", "-s", "5", "-t", &secs, "-n", "10000000",
            ])
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ab (make setup installs apache2-utils)");
        Self { wrk, ab }
    }

    pub fn finish(self) -> LoadResult {
        let wrk = self.wrk.wait_with_output().expect("wrk");
        let ab = self.ab.wait_with_output().expect("ab");
        let wrk_text = String::from_utf8_lossy(&wrk.stdout).into_owned();
        let ab_text = String::from_utf8_lossy(&ab.stdout).into_owned();
        println!("--- wrk\n{wrk_text}--- ab\n{ab_text}---");
        let wrk_requests = number_before(&wrk_text, " requests in").expect("wrk's request count");
        let wrk_errors = wrk_text
            .lines()
            .find(|l| l.trim_start().starts_with("Socket errors:"))
            .map(|l| {
                l.split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        LoadResult {
            wrk_requests,
            wrk_errors,
            wrk_non_2xx: number_after(&wrk_text, "Non-2xx or 3xx responses:").unwrap_or(0),
            ab_complete: number_after(&ab_text, "Complete requests:").unwrap_or_else(|| {
                panic!(
                    "ab's output: {ab_text}\n{}",
                    String::from_utf8_lossy(&ab.stderr)
                )
            }),
            ab_failed: number_after(&ab_text, "Failed requests:").unwrap_or(0)
                + number_after(&ab_text, "Non-2xx responses:").unwrap_or(0),
        }
    }
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn number_before(text: &str, label: &str) -> Option<u64> {
    let head = &text[..text.find(label)?];
    head.split_whitespace().last()?.parse().ok()
}

/// Answers of the prober: when each came, and what failed.
pub struct Probes {
    pub answered: u64,
    pub times: Vec<Instant>,
    pub failures: Vec<String>,
}

impl Probes {
    /// The longest time between two answers within `[from, to]`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.times
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1].duration_since(*w[0]))
            .max()
            .unwrap_or_default()
    }
}

/// One request after another on a fresh connection from a pool of 32 client ports below
/// the ephemeral range (so wrk and ab never hold one), so
/// 5-tuples are reused across backend changes and restarts.
pub struct Prober(JoinHandle<Probes>);

impl Prober {
    /// Probes `vip` from ports `first_port` to `first_port + 31`.
    pub fn start(lab: &DsrLab, vip: SocketAddr, first_port: u16, duration: Duration) -> Self {
        let ns_name = lab.client.ns.name().to_string();
        Self(std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{ns_name}")).expect("netns");
            // SAFETY: a valid netns fd; this thread stays in the client's namespace.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) },
                0
            );
            let end = Instant::now() + duration;
            let mut probes = Probes {
                answered: 0,
                times: Vec::new(),
                failures: Vec::new(),
            };
            let mut port = 0u16;
            while Instant::now() < end {
                port = (port + 1) % 32;
                match probe(vip, first_port + port) {
                    Ok(()) => {
                        probes.answered += 1;
                        probes.times.push(Instant::now());
                    }
                    Err(e) => probes
                        .failures
                        .push(format!("{vip} from port {}: {e}", first_port + port)),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            probes
        }))
    }

    pub fn finish(self) -> Probes {
        self.0.join().expect("prober thread")
    }
}

fn probe(vip: SocketAddr, local_port: u16) -> Result<(), String> {
    let mut stream = connect_from(vip, local_port).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("answer {answer:?}"));
    }
    Ok(())
}

/// A TCP connection to `vip` from a chosen local port (SO_REUSEADDR, as clients that
/// pin source ports do), of the VIP's family.
fn connect_from(vip: SocketAddr, local_port: u16) -> std::io::Result<TcpStream> {
    let family = if vip.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it to
    // TcpStream; the addresses are whole sockaddr_in / sockaddr_in6 of their length.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
        let unspecified = if vip.is_ipv6() {
            SocketAddr::from(([0u16; 8], local_port))
        } else {
            SocketAddr::from(([0u8; 4], local_port))
        };
        let (local, len) = sockaddr(unspecified);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (remote, len) = sockaddr(vip);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// `addr` as the kernel takes it, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// The client namespace's TCP counters that tell resets (one TCP MIB for both families).
pub struct TcpCounters {
    /// Established connections that ended in a reset, sent or received.
    pub estab_resets: u64,
    /// Resets the client sent itself, closing with unread data (wrk does at its end).
    pub own_aborts: u64,
    pub attempt_fails: u64,
}

impl TcpCounters {
    /// Established connections reset by the other side (or by a misroute) since `before`.
    pub fn resets_received_since(&self, before: &Self) -> u64 {
        (self.estab_resets - before.estab_resets)
            .saturating_sub(self.own_aborts - before.own_aborts)
    }
}

pub fn tcp_counters(ns: &NetNs) -> TcpCounters {
    let field = |file: &str, section: &str, name: &str| -> u64 {
        let text = ns.exec("cat", &[file]).expect("proc counters");
        let mut lines = text.lines().filter(|l| l.starts_with(section));
        let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    TcpCounters {
        estab_resets: field("/proc/net/snmp", "Tcp:", "EstabResets"),
        own_aborts: field("/proc/net/netstat", "TcpExt:", "TCPAbortOnData")
            + field("/proc/net/netstat", "TcpExt:", "TCPAbortOnClose"),
        attempt_fails: field("/proc/net/snmp", "Tcp:", "AttemptFails"),
    }
}
