//! What the daemon lab tests share: the daemon as a child process in the balancer's
//! namespace, calls to its API, and bounded waiting.
#![allow(dead_code)] // Each test file uses its own part.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

// The dual-stack DSR lab's addresses, shared with the lab crate's tests.
#[allow(unused_imports)] // Each test file uses its own part.
pub use fulcrum_lab::dsr::{VIP6, add_ipv6, route6_via, six, with_ipv6};
use fulcrum_lab::{
    daemon::Daemon,
    dsr::{DsrLab, VIP},
    netns::NetNs,
    traffic::{http_call, http_get},
};
use serde_json::Value;

pub const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");
pub const TOKEN: &str = "lab-token-0123";
pub const API: &str = "127.0.0.1:9180";

/// The daemon in the balancer's namespace, stopped (SIGTERM) on drop.
/// Starts `fulcrum run --config PATH` in the lab's balancer namespace (`ip netns exec`:
/// pins go to a bpffs private to it, so parallel tests never share state).
pub fn start_daemon(lab: &DsrLab, config: &Path) -> Daemon {
    run_daemon(lab.balancer.ns.command(FULCRUM), config)
}

/// Like [`start_daemon`] with the host's mounts (`nsenter --net`), so that its pins
/// outlive it (the restart path).
pub fn start_pinned(lab: &DsrLab, config: &Path) -> Daemon {
    run_daemon(lab.balancer.ns.command_with_host_mounts(FULCRUM), config)
}

/// `fulcrum run --config PATH` in any lab namespace (a second balancer's).
pub fn start_in(ns: &NetNs, config: &Path) -> Daemon {
    run_daemon(ns.command(FULCRUM), config)
}

fn run_daemon(mut command: std::process::Command, config: &Path) -> Daemon {
    command
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null());
    Daemon::spawn(command).expect("start fulcrum run")
}

/// Removes a pinned directory at the end, whatever happened.
pub struct PinDir(pub PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP request to the daemon's API from inside the balancer's namespace.
pub fn api(ns: &NetNs, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    try_api(ns, method, path, token).expect("API call")
}

/// Like [`api`], `None` while the API does not answer.
pub fn try_api(ns: &NetNs, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let addr: SocketAddr = API.parse().expect("api address");
    let stream = ns
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .expect("enter netns")
        .ok()?;
    http_call(stream, method, path, token).ok()
}

/// `GET /api/v1/flow-sharing`, while the API answers it.
pub fn flows(ns: &NetNs) -> Option<Value> {
    let (status, body) = try_api(ns, "GET", "/api/v1/flow-sharing", None)?;
    (status == 200).then(|| serde_json::from_str(&body).expect("JSON"))
}

/// The number at `path` in `v`, 0 where there is none.
pub fn count(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_default()
}

/// Waits until the daemon in `ns` has synced its flows (announce gate open) and has `up`
/// healthy backends.
pub fn wait_flow_ready(ns: &NetNs, up: usize) {
    wait_until(
        "the daemon synced, with its backends up",
        Duration::from_secs(30),
        || {
            flows(ns).is_some_and(|f| f["announce_gate_open"] == true)
                && try_api(ns, "GET", "/api/v1/services", None)
                    .is_some_and(|(_, b)| b.matches("\"health\":\"up\"").count() == up)
        },
    );
}

/// The services JSON, once the API answers.
pub fn services(ns: &NetNs) -> String {
    api(ns, "GET", "/api/v1/services", None).1
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Waits until the API answers with `n` backends whose health is up.
pub fn wait_for_up(lab: &DsrLab, n: usize, limit: Duration) {
    wait_until(&format!("the API and {n} healthy backends"), limit, || {
        try_api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .is_some_and(|(_, body)| body.matches("\"health\":\"up\"").count() == n)
    });
}

/// Which backends answered `n` fresh connections; every one must succeed.
pub fn spread(lab: &DsrLab, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            http_get(&lab.client.ns, SocketAddr::from((VIP, 80)))
                .unwrap_or_else(|e| panic!("request {i} failed: {e:#}"))
                .server
        })
        .collect()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fulcrum-daemon-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A whole configuration file: the API with the lab token in `dir`, then `services`.
pub fn config_file(dir: &Path, services: &str) -> String {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    // The daemon refuses a token file that group or others may read.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!(
        "interfaces: [eth0]\napi:\n  listen: {API}\n  token_file: {}\nservices:\n{services}",
        dir.join("token").display()
    )
}

/// One service on port 80 of `vip` with an HTTP check, `extra` lines (indented four
/// spaces) and these backend addresses.
pub fn web_service(vip: &str, extra: &str, backends: &[String]) -> String {
    let list = backend_list(backends);
    format!(
        "  - name: web\n    vip: {vip}\n    port: 80\n    protocol: tcp\n{extra}    health:\n      - type: http\n        path: /\n        expect_status: 200\n        interval: 200ms\n        timeout: 150ms\n        rise: 2\n        fall: 2\n    backends:\n{list}"
    )
}

/// A service's `backends:` entries, one per address.
pub fn backend_list(backends: &[impl std::fmt::Display]) -> String {
    backends
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect()
}

/// `promtool check metrics` accepts `metrics` without remarks.
pub fn assert_promtool_accepts(metrics: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by make setup)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
