//! `fulcrum run` serving an IPv6 service beside an IPv4 one in the dual-stack DSR lab:
//! real HTTP over IPv6 reaches both backends with the client's own address, health checks
//! probe the backends over IPv6, `fulcrum status` and `/metrics` name the IPv6 VIP and
//! backends (promtool accepts it), and `fulcrum drain` by the service's bracketed id takes
//! an IPv6 backend out of new flows; a restarted daemon adopts the pinned IPv6 service
//! and its open connection keeps working.

mod common;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use common::{
    FULCRUM, PinDir, TOKEN, VIP6, api, assert_promtool_accepts, config_file, six, start_daemon,
    start_pinned, temp_dir, try_api, wait_for_up, wait_until, with_ipv6,
};
use fulcrum_lab::{
    dsr::{DsrLab, VIP, backend_addr},
    host::backend_servers,
    traffic::{HttpConnection, http_get, http_server},
};

fn service(name: &str, vip: &str, backends: &[String]) -> String {
    let list: String = backends
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect();
    format!(
        "  - name: {name}\n    vip: {vip}\n    port: 80\n    health:\n      - type: http\n        \
         path: /\n        interval: 200ms\n        timeout: 150ms\n        rise: 1\n    \
         backends:\n{list}"
    )
}

/// Which backends answered `n` new IPv6 connections; each must succeed and be seen by the
/// backend as coming from the client's own address.
fn spread6(lab: &DsrLab, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let answer = http_get(&lab.client.ns, SocketAddr::from((VIP6, 80)))
                .unwrap_or_else(|e| panic!("IPv6 request {i} failed: {e:#}"));
            assert_eq!(
                answer.peer,
                six(1).to_string(),
                "DSR keeps the client's address"
            );
            answer.server
        })
        .collect()
}

#[test]
fn an_ipv6_service_is_served_checked_shown_and_drained() {
    let lab = DsrLab::new("d6", 2).expect("lab");
    with_ipv6(&lab);
    // One listener per backend on [::]:80 takes both families.
    let _servers = backend_servers(&lab.backends, "[::]:80".parse().unwrap(), http_server)
        .expect("HTTP servers");
    let dir = temp_dir("ipv6");
    let config = dir.join("fulcrum.yaml");
    let six_backends = [six(11).to_string(), six(12).to_string()];
    let four_backends = [backend_addr(1).to_string(), backend_addr(2).to_string()];
    let services = service("web6", &VIP6.to_string(), &six_backends)
        + &service("web", &VIP.to_string(), &four_backends);
    std::fs::write(&config, config_file(&dir, &services)).expect("config");
    let _daemon = start_daemon(&lab, &config);
    wait_for_up(&lab, 4, Duration::from_secs(30));

    let answered = spread6(&lab, 30);
    assert_eq!(
        answered,
        BTreeSet::from(["backend-1".to_string(), "backend-2".to_string()]),
        "both IPv6 backends take traffic"
    );
    let four = http_get(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("IPv4 beside");
    assert!(four.server.starts_with("backend-"), "{four:?}");

    let (_, services) = api(&lab.balancer.ns, "GET", "/api/v1/services", None);
    assert!(
        services.contains(&format!("\"vip\":\"{VIP6}\""))
            && services.contains("\"forwarding\":\"l2-dsr\""),
        "{services}"
    );
    let status = lab
        .balancer
        .ns
        .command(FULCRUM)
        .args(["status", "--api", "http://127.0.0.1:9180"])
        .output()
        .expect("fulcrum status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(
        table.contains(&format!("web6  [{VIP6}]:80/tcp  l2-dsr")),
        "{table}"
    );
    for backend in &six_backends {
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with(backend.as_str()) && l.contains("  up  ")),
            "{backend} up in:\n{table}"
        );
    }

    let (_, metrics) = api(&lab.balancer.ns, "GET", "/metrics", None);
    assert!(
        metrics.contains(&format!(
            "fulcrum_service_info{{service=\"web6\",vip=\"{VIP6}\",port=\"80\",protocol=\"tcp\",\
             forwarding=\"l2-dsr\",icmp_echo=\"true\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "fulcrum_backend_up{{service=\"web6\",backend=\"{}\"}} 1",
            six(12)
        )),
        "{metrics}"
    );
    assert_promtool_accepts(&metrics);

    // Drained by the service's id and the backend's bracketed address: new IPv6 flows all
    // go to backend-1.
    let id = format!("[{VIP6}]:80/tcp");
    let drained = lab
        .balancer
        .ns
        .command(FULCRUM)
        .args(["drain", &id, &format!("[{}]", six(12)), "--token", TOKEN])
        .output()
        .expect("fulcrum drain");
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert_eq!(
        spread6(&lab, 20),
        BTreeSet::from(["backend-1".to_string()]),
        "the drained IPv6 backend takes no new flows"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_ipv6_vip_on_this_host_is_refused_at_start() {
    let lab = DsrLab::new("d6l", 1).expect("lab");
    with_ipv6(&lab);
    let dir = temp_dir("ipv6-local");
    let config = dir.join("fulcrum.yaml");
    // six(2) is the balancer's own address.
    let services = service("own", &six(2).to_string(), &[six(11).to_string()]);
    std::fs::write(&config, config_file(&dir, &services)).expect("config");
    let out = lab
        .balancer
        .ns
        .command(FULCRUM)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("fulcrum run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "services[0].vip: {} is an address of this host",
            six(2)
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_handover_keeps_an_ipv6_connection_and_the_next_daemon_adopts_it() {
    let lab = DsrLab::new("d6h", 2).expect("lab");
    with_ipv6(&lab);
    let _servers = backend_servers(&lab.backends, "[::]:80".parse().unwrap(), http_server)
        .expect("HTTP servers");
    let dir = temp_dir("ipv6-restart");
    let config = dir.join("fulcrum.yaml");
    let instance = format!("restart6-{}", std::process::id());
    let pins = fulcrum::pin::instance_dir(&instance);
    let _cleanup = PinDir(pins.clone());
    // rise 10 at 200 ms: a fresh daemon needs 2 s to trust a backend.
    let services = service(
        "web6",
        &VIP6.to_string(),
        &[six(11).to_string(), six(12).to_string()],
    )
    .replace("rise: 1", "rise: 10");
    let text = format!("instance: {instance}\n{}", config_file(&dir, &services));
    std::fs::write(&config, text).expect("config");
    let mut daemon = start_pinned(&lab, &config);
    wait_for_up(&lab, 2, Duration::from_secs(30));
    let drain = format!("/api/v1/services/web6/backends/{}/drain", six(12));
    assert_eq!(api(&lab.balancer.ns, "POST", &drain, Some(TOKEN)).0, 200);
    let mut open =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP6, 80))).expect("connect");
    assert_eq!(open.get().expect("request").server, "backend-1");

    assert_eq!(daemon.stop_with(libc::SIGUSR2).expect("exits"), Some(75));
    assert_eq!(
        open.get().expect("forwarding without a daemon").server,
        "backend-1"
    );
    daemon = start_pinned(&lab, &config);
    let mut first = String::new();
    wait_until("the API", Duration::from_secs(20), || {
        first = try_api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .map(|(_, b)| b)
            .unwrap_or_default();
        !first.is_empty()
    });
    assert_eq!(
        first.matches("\"health\":\"up\"").count(),
        2,
        "adopted IPv6 backends count healthy before their checks rise: {first}"
    );
    assert!(
        first.contains(&format!(
            "\"address\":\"{}\",\"weight\":1,\"drained\":true",
            six(12)
        )),
        "the drain carried over: {first}"
    );
    assert_eq!(
        open.get()
            .expect("the connection survives the restart")
            .server,
        "backend-1"
    );
    assert_eq!(daemon.stop_with(libc::SIGTERM).expect("exits"), Some(0));
    assert!(!pins.exists(), "SIGTERM removes the pinned state");
    let _ = std::fs::remove_dir_all(dir);
}
