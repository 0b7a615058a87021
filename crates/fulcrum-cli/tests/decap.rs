//! `fulcrum decap` as a user runs it on a backend: tunnelled datagrams sent by a peer
//! namespace (IP-in-IP from a raw socket, GUE from a UDP socket) reach a real UDP server
//! bound to a VIP on the backend's loopback, the counters say so, SIGTERM detaches; and
//! its error lines.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use fulcrum_lab::{
    frame::FrameBuilder,
    frame_tunnel::{IPPROTO_IPIP, IPPROTO_IPV6, ip_of, ipv6_udp_packet},
    netns::{NetNs, unique_prefix},
    traffic::{Server, udp_server},
};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");
const VIP4: &str = "10.77.9.1";
const VIP6: &str = "fd77:9::1";
/// An address of the backend on its loopback, given with `--address`.
const EXTRA4: &str = "10.77.8.8";
const PORT: u16 = 5353;

struct Lab {
    backend: NetNs,
    peer: NetNs,
    _servers: [Server; 2],
}

/// The backend (`v1`: 10.77.0.2/24, fd77::2/64; VIPs and EXTRA4 on `lo`, UDP servers on
/// the VIPs) and the peer sending tunnelled traffic (`v0`: 10.77.0.1, fd77::1).
fn lab() -> Lab {
    let prefix = unique_prefix("dc");
    let backend = NetNs::create(&format!("{prefix}-be")).expect("create netns");
    let peer = NetNs::create(&format!("{prefix}-pe")).expect("create netns");
    peer.veth("v0", &backend, "v1").expect("veth");
    for (ns, args) in [
        (&backend, &["addr", "add", "10.77.0.2/24", "dev", "v1"][..]),
        (
            &backend,
            &["addr", "add", "fd77::2/64", "dev", "v1", "nodad"],
        ),
        (&backend, &["link", "set", "v1", "up"]),
        (&backend, &["link", "set", "lo", "up"]),
        (
            &backend,
            &["addr", "add", &format!("{VIP4}/32"), "dev", "lo"],
        ),
        (
            &backend,
            &["addr", "add", &format!("{EXTRA4}/32"), "dev", "lo"],
        ),
        (
            &backend,
            &["addr", "add", &format!("{VIP6}/128"), "dev", "lo"],
        ),
        (&peer, &["addr", "add", "10.77.0.1/24", "dev", "v0"]),
        (&peer, &["addr", "add", "fd77::1/64", "dev", "v0", "nodad"]),
        (&peer, &["link", "set", "v0", "up"]),
        (
            &peer,
            &["route", "add", &format!("{EXTRA4}/32"), "via", "10.77.0.2"],
        ),
    ] {
        ns.ip(args).expect("lab setup");
    }
    let servers = [
        udp_server(&backend, "backend-v4", sock(VIP4, PORT)).expect("UDP server"),
        udp_server(&backend, "backend-v6", sock(VIP6, PORT)).expect("UDP server"),
    ];
    Lab {
        backend,
        peer,
        _servers: servers,
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), port)
}

/// A client socket in the peer; the tunnelled datagram's inner source is its address.
fn client(lab: &Lab, local: &str) -> UdpSocket {
    let s = lab
        .peer
        .run_in(|| UdpSocket::bind(sock(local, 0)))
        .expect("enter peer")
        .expect("bind client");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

/// The inner datagram "who?" from `client` to the VIP of its family.
fn inner(client: &UdpSocket) -> Vec<u8> {
    match client.local_addr().expect("local address") {
        SocketAddr::V4(c) => {
            let vip: SocketAddrV4 = format!("{VIP4}:{PORT}").parse().expect("vip");
            ip_of(&FrameBuilder::udp(c, vip).payload(b"who?").build()).to_vec()
        }
        SocketAddr::V6(c) => {
            let vip: SocketAddrV6 = format!("[{VIP6}]:{PORT}").parse().expect("vip");
            ipv6_udp_packet(c, vip, b"who?")
        }
    }
}

/// Sends `payload` from the peer through a raw socket of protocol `proto` (the kernel
/// adds the outer header) to `dst`.
fn send_raw(lab: &Lab, proto: u8, dst: IpAddr, payload: &[u8]) {
    lab.peer
        .run_in(|| {
            let (family, addr, len) = sockaddr(dst);
            // SAFETY: a plain socket; the address is a valid sockaddr of `len` bytes.
            unsafe {
                let fd = libc::socket(family, libc::SOCK_RAW, i32::from(proto));
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                let sent = libc::sendto(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&raw const addr).cast(),
                    len,
                );
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                assert_eq!(sent, payload.len() as isize, "raw send: {err}");
            }
        })
        .expect("enter peer");
}

fn sockaddr(ip: IpAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; the family's struct fits in it.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        match ip {
            IpAddr::V4(a) => {
                let sin = (&raw mut ss).cast::<libc::sockaddr_in>();
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                (libc::AF_INET, ss, size_of::<libc::sockaddr_in>() as u32)
            }
            IpAddr::V6(a) => {
                let sin6 = (&raw mut ss).cast::<libc::sockaddr_in6>();
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_addr.s6_addr = a.octets();
                (libc::AF_INET6, ss, size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }
}

/// The answer the VIP's server sends straight back to the client (DSR), if any.
fn answer(client: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 256];
    let (n, from) = client.recv_from(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    Some(format!("{text} from {}", from.ip()))
}

fn start(lab: &Lab, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = lab
        .backend
        .command(FULCRUM)
        .arg("decap")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fulcrum decap");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    (child, stdout, first)
}

fn xdp_on_v1(lab: &Lab) -> bool {
    lab.backend
        .ip(&["-d", "link", "show", "v1"])
        .expect("ip link")
        .contains("xdp")
}

#[test]
fn tunnelled_datagrams_reach_the_vip_and_sigterm_detaches() {
    let lab = lab();
    let c4 = client(&lab, "10.77.0.1");
    let c6 = client(&lab, "fd77::1");
    let be4: IpAddr = "10.77.0.2".parse().expect("v4");
    let be6: IpAddr = "fd77::2".parse().expect("v6");

    // The backend's kernel has no tunnel module: without the decapsulator nothing arrives.
    c4.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    send_raw(&lab, IPPROTO_IPIP, be4, &inner(&c4));
    assert_eq!(answer(&c4), None, "answered without the decapsulator");
    c4.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");

    let (mut child, mut stdout, first) = start(&lab, &["v1", "--address", EXTRA4]);
    assert!(
        first.starts_with("decapsulating IP-in-IP and GUE (UDP 6080) to ")
            && first.contains("10.77.0.2")
            && first.contains("fd77::2")
            && first.contains(EXTRA4)
            && first.contains("on v1 (native mode)"),
        "first line: {first}"
    );
    assert!(xdp_on_v1(&lab), "no XDP on v1 while running");

    let v4 = format!("backend-v4 saw 10.77.0.1 from {VIP4}");
    let v6 = format!("backend-v6 saw fd77::1 from {VIP6}");
    send_raw(&lab, IPPROTO_IPIP, be4, &inner(&c4));
    assert_eq!(answer(&c4).as_deref(), Some(v4.as_str()), "IPIP 4in4");
    send_raw(&lab, IPPROTO_IPV6, be6, &inner(&c6));
    assert_eq!(answer(&c6).as_deref(), Some(v6.as_str()), "IPIP 6in6");
    send_raw(&lab, IPPROTO_IPIP, be6, &inner(&c4));
    assert_eq!(answer(&c4).as_deref(), Some(v4.as_str()), "IPIP 4in6");
    send_raw(&lab, IPPROTO_IPIP, EXTRA4.parse().expect("v4"), &inner(&c4));
    assert_eq!(
        answer(&c4).as_deref(),
        Some(v4.as_str()),
        "IPIP to the --address"
    );
    for (c, outer, want) in [(&c4, be4, &v4), (&c6, be6, &v6)] {
        let sender = client(
            &lab,
            if outer.is_ipv4() {
                "10.77.0.1"
            } else {
                "fd77::1"
            },
        );
        sender
            .send_to(&inner(c), SocketAddr::new(outer, 6080))
            .expect("send GUE");
        assert_eq!(answer(c).as_deref(), Some(want.as_str()), "GUE to {outer}");
    }

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the rest");
    let last_counters = rest
        .lines()
        .rfind(|l| l.starts_with("decapsulated "))
        .unwrap_or_else(|| panic!("no counters line on exit: {rest}"));
    assert!(
        last_counters.starts_with("decapsulated 6 |")
            && last_counters.contains("decap_ipip 4")
            && last_counters.contains("decap_gue 2")
            && last_counters.contains("dropped 0"),
        "counters on exit: {last_counters}"
    );
    assert!(rest.contains("detached from v1"), "output: {rest}");
    assert!(!xdp_on_v1(&lab), "XDP left on v1 after SIGTERM");
}

fn decap_in(ns: &NetNs, args: &[&str]) -> Output {
    ns.command(FULCRUM)
        .arg("decap")
        .args(args)
        .output()
        .expect("run fulcrum")
}

/// Exit status is failure and stderr is exactly one line containing `want`.
fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("fulcrum: "), "not prefixed: {stderr}");
    assert!(lines[0].contains(want), "expected {want:?} in: {stderr}");
}

#[test]
fn clear_errors_for_what_a_user_gets_wrong() {
    let lab = lab();
    let out = decap_in(&lab.backend, &["nosuch0"]);
    assert_one_line_error(&out, "no interface named 'nosuch0'");
    let out = decap_in(&lab.backend, &["v1", "--address", "10.77.0.300"]);
    assert_one_line_error(&out, "address '10.77.0.300' is not an IPv4 or IPv6 address");
    let out = decap_in(&lab.backend, &["v1", "--gue-port", "0"]);
    assert_one_line_error(&out, "GUE port 0 is not a port");
    lab.backend
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    let out = decap_in(&lab.backend, &["br0"]);
    assert_one_line_error(&out, "try generic mode");

    // A second decapsulator on the same interface is told who holds it.
    let (mut child, _stdout, first) = start(&lab, &["v1"]);
    assert!(first.starts_with("decapsulating"), "first line: {first}");
    let out = decap_in(&lab.backend, &["v1"]);
    assert_one_line_error(&out, "'v1' already has an XDP program attached");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert!(child.wait().expect("wait").success(), "exit after SIGINT");
    assert!(!xdp_on_v1(&lab), "XDP left on v1 after SIGINT");
}

#[test]
fn refuses_to_run_without_its_capabilities() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", FULCRUM])
        .args(["decap", "lo"])
        .output()
        .expect("run setpriv");
    assert_one_line_error(
        &out,
        "missing capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fulcrum decap"),
        "names the command"
    );
}

#[test]
fn generic_mode_decapsulates_too() {
    let lab = lab();
    let c4 = client(&lab, "10.77.0.1");
    let (mut child, _stdout, first) = start(&lab, &["v1", "--xdp-mode", "generic"]);
    assert!(first.contains("(generic mode)"), "first line: {first}");
    let xdp = lab
        .backend
        .ip(&["-d", "link", "show", "v1"])
        .expect("ip link");
    assert!(
        xdp.contains("xdpgeneric"),
        "not attached in generic mode: {xdp}"
    );
    let be4: IpAddr = "10.77.0.2".parse().expect("v4");
    send_raw(&lab, IPPROTO_IPIP, be4, &inner(&c4));
    let want = format!("backend-v4 saw 10.77.0.1 from {VIP4}");
    assert_eq!(answer(&c4).as_deref(), Some(want.as_str()), "IPIP 4in4");
    let sender = client(&lab, "10.77.0.1");
    sender
        .send_to(&inner(&c4), SocketAddr::new(be4, 6080))
        .expect("send GUE");
    assert_eq!(answer(&c4).as_deref(), Some(want.as_str()), "GUE");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success(), "exit after SIGTERM");
    assert!(!xdp_on_v1(&lab), "XDP left on v1 after SIGTERM");
}
