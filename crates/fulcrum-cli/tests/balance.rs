//! `fulcrum balance` as a user runs it: its error lines, and that it leaves nothing behind.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use fulcrum_lab::netns::{NetNs, unique_prefix};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");

/// The balancer's namespace (`v0`, 10.66.0.1/24, and a bridge `br0`) and a peer holding
/// the backend address 10.66.0.2 on `v1`.
fn lab() -> (NetNs, NetNs) {
    let prefix = unique_prefix("c");
    let ns = NetNs::create(&format!("{prefix}-lb")).expect("create netns");
    let peer = NetNs::create(&format!("{prefix}-be")).expect("create netns");
    for args in [
        &[
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            peer.name(),
        ][..],
        &["addr", "add", "10.66.0.1/24", "dev", "v0"],
        &["link", "set", "v0", "up"],
        &["link", "add", "br0", "type", "bridge"],
        &["link", "set", "br0", "up"],
    ] {
        ns.ip(args).expect("lab setup");
    }
    peer.ip(&["addr", "add", "10.66.0.2/24", "dev", "v1"])
        .expect("peer address");
    peer.ip(&["link", "set", "v1", "up"]).expect("peer up");
    (ns, peer)
}

fn fulcrum_in(ns: &NetNs, args: &[&str]) -> Output {
    ns.command(FULCRUM)
        .args(args)
        .output()
        .expect("run fulcrum")
}

/// Exit status is failure and stderr is exactly one line containing `want`.
fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got {:?}; stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        lines[0].starts_with("fulcrum: "),
        "error line not prefixed: {stderr}"
    );
    assert!(lines[0].contains(want), "expected {want:?} in: {stderr}");
}

#[test]
fn refuses_to_run_without_its_capabilities() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", FULCRUM])
        .args(["balance", "lo", "10.0.0.1:80", "10.0.0.2"])
        .output()
        .expect("run setpriv");
    assert_one_line_error(
        &out,
        "missing capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON",
    );
}

#[test]
fn names_an_unknown_interface() {
    let (ns, _peer) = lab();
    let out = fulcrum_in(&ns, &["balance", "nosuch0", "10.66.9.1:80", "10.66.0.2"]);
    assert_one_line_error(&out, "no interface named 'nosuch0'");
}

#[test]
fn quotes_a_malformed_address() {
    let (ns, _peer) = lab();
    let out = fulcrum_in(&ns, &["balance", "v0", "10.66.9.300:80", "10.66.0.2"]);
    assert_one_line_error(&out, "'10.66.9.300' is not an IP address");
    let out = fulcrum_in(&ns, &["balance", "v0", "10.66.9.1:80", "10.66.0.x"]);
    assert_one_line_error(&out, "backend '10.66.0.x' is not an IP address");
    let out = fulcrum_in(&ns, &["balance", "v0", "10.66.9.1:80/icmp", "10.66.0.2"]);
    assert_one_line_error(&out, "protocol 'icmp' is neither tcp nor udp");
}

#[test]
fn says_which_mode_to_try_when_attach_is_refused() {
    let (ns, _peer) = lab();
    // A bridge has no native XDP support.
    let out = fulcrum_in(&ns, &["balance", "br0", "10.66.9.1:80", "10.66.0.2"]);
    assert_one_line_error(&out, "try generic mode");
}

#[test]
fn rejects_a_backend_behind_a_gateway() {
    let (ns, _peer) = lab();
    ns.ip(&["route", "add", "10.67.0.0/24", "via", "10.66.0.2"])
        .expect("route");
    let out = fulcrum_in(&ns, &["balance", "v0", "10.66.9.1:80", "10.67.0.5"]);
    assert_one_line_error(&out, "directly connected");
}

#[test]
fn detaches_on_sigterm_and_sigint() {
    let (ns, _peer) = lab();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = ns
            .command(FULCRUM)
            .args([
                "balance",
                "v0",
                "10.66.9.1:80",
                "10.66.0.2",
                "--interval",
                "1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fulcrum");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read the first line");
        assert!(
            first.starts_with("balancing 10.66.9.1:80/tcp on v0"),
            "first line: {first}"
        );
        let attached = ns.ip(&["-d", "link", "show", "v0"]).expect("ip link");
        assert!(
            attached.contains("xdp"),
            "no XDP on v0 while running: {attached}"
        );
        let mut stats = String::new();
        stdout.read_line(&mut stats).expect("read a stats line");
        assert!(
            stats.contains("10.66.0.2"),
            "stats line names the backend: {stats}"
        );

        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait().expect("wait");
        assert!(status.success(), "exit after signal {signal}: {status}");
        std::thread::sleep(Duration::from_millis(100));
        let after = ns.ip(&["-d", "link", "show", "v0"]).expect("ip link");
        assert!(
            !after.contains("xdp"),
            "XDP left on v0 after signal {signal}: {after}"
        );
        let neigh = ns.ip(&["neigh", "show", "10.66.0.2"]).expect("ip neigh");
        assert!(
            !neigh.contains("MANAGED") && !neigh.contains("managed"),
            "managed neighbour left: {neigh}"
        );
    }
}
