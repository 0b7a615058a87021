//! `fulcrum run` in the DSR lab, with real HTTP backends: health checks take a dead
//! backend out and bring it back, reload adds a backend without moving an open
//! connection, broken configurations change nothing, the API wants its token, and
//! `/metrics` passes promtool.

mod common;

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    API, FULCRUM, TOKEN, api, config_file, spread, start_daemon, temp_dir, wait_until, web_service,
};
use fulcrum_lab::{
    dsr::{DsrLab, VIP, backend_addr},
    traffic::{HttpConnection, http_server},
};

fn config(dir: &Path, backends: &[u8], vip_text: &str) -> String {
    let addresses: Vec<String> = backends
        .iter()
        .map(|n| backend_addr(*n).to_string())
        .collect();
    config_file(dir, &web_service(vip_text, "", &addresses))
}

#[test]
fn health_checks_reload_api_and_metrics_in_the_lab() {
    let mut lab = DsrLab::new("d", 3).expect("lab");
    let mut servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("lab");
    let config_path = dir.join("fulcrum.yaml");
    std::fs::write(&config_path, config(&dir, &[1, 2, 3], &VIP.to_string())).expect("config");

    let daemon = start_daemon(&lab, &config_path);
    wait_until(
        "the API and three healthy backends",
        Duration::from_secs(15),
        || {
            let Ok(addr) = API.parse::<SocketAddr>() else {
                return false;
            };
            let up = lab
                .balancer
                .ns
                .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
                .unwrap_or(false);
            up && api(&lab.balancer.ns, "GET", "/api/v1/services", None)
                .1
                .matches("\"health\":\"up\"")
                .count()
                == 3
        },
    );
    let answered = spread(&lab, 30);
    assert!(
        (1..=3).all(|n| answered.contains(&format!("backend-{n}"))),
        "all three take traffic: {answered:?}"
    );

    // Kill backend-2's server: after `fall` failed checks it takes no new connections.
    drop(servers.remove(1));
    wait_until(
        "backend-2 to be marked down",
        Duration::from_secs(5),
        || {
            api(&lab.balancer.ns, "GET", "/api/v1/services", None)
                .1
                .contains("\"health\":\"down\"")
        },
    );
    let answered = spread(&lab, 30);
    assert!(
        !answered.contains(&"backend-2".to_string()),
        "no request reaches the dead backend: {answered:?}"
    );

    // Restart it: after `rise` passed checks it gets traffic again.
    servers.insert(
        1,
        http_server(
            &lab.backends[1].ns,
            "backend-2",
            SocketAddr::from(([0, 0, 0, 0], 80)),
        )
        .expect("restart"),
    );
    wait_until("backend-2 to be back", Duration::from_secs(5), || {
        api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .1
            .matches("\"health\":\"up\"")
            .count()
            == 3
    });
    assert!(
        spread(&lab, 40).contains(&"backend-2".to_string()),
        "the recovered backend takes traffic again"
    );

    // API: mutating calls need the token and change nothing without it.
    assert_eq!(api(&lab.balancer.ns, "POST", "/api/v1/reload", None).0, 401);
    assert_eq!(
        api(
            &lab.balancer.ns,
            "POST",
            "/api/v1/services/web/backends/10.77.0.11/drain",
            Some("nope")
        )
        .0,
        401
    );

    // /metrics passes promtool.
    let (code, metrics) = api(&lab.balancer.ns, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("fulcrum_backend_up{service=\"web\",backend=\"10.77.0.12\"} 1"),
        "{metrics}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
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

    // Reload adding backend-4: an open connection stays on its backend and keeps working,
    // new connections reach the new backend.
    let mut open =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect");
    let first = open.get().expect("first request").server;
    let b4 = lab.add_backend(4).expect("backend 4");
    servers.push(
        http_server(&b4.ns, "backend-4", SocketAddr::from(([0, 0, 0, 0], 80))).expect("server 4"),
    );
    std::fs::write(&config_path, config(&dir, &[1, 2, 3, 4], &VIP.to_string())).expect("config");
    daemon.signal(libc::SIGHUP);
    wait_until("backend-4 to be healthy", Duration::from_secs(5), || {
        api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .1
            .matches("\"health\":\"up\"")
            .count()
            == 4
    });
    for _ in 0..5 {
        assert_eq!(
            open.get().expect("the open connection still works").server,
            first,
            "it stayed on its backend"
        );
    }
    assert!(
        spread(&lab, 40).contains(&"backend-4".to_string()),
        "new connections reach the added backend"
    );

    // Drain through the API: the open connection stays, new ones go elsewhere; undrain.
    let mut kept =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect");
    let on = kept.get().expect("request").server;
    let address = backend_addr(
        on.trim_start_matches("backend-")
            .parse()
            .expect("backend number"),
    );
    let path = |verb: &str| format!("/api/v1/services/web/backends/{address}/{verb}");
    assert_eq!(
        api(&lab.balancer.ns, "POST", &path("drain"), Some(TOKEN)).0,
        200
    );
    assert_eq!(
        kept.get()
            .expect("the drained backend's connection works")
            .server,
        on
    );
    assert!(
        !spread(&lab, 40).contains(&on),
        "no new connection reaches drained {on}"
    );
    assert!(
        api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .1
            .contains("\"drained\":true")
    );
    assert_eq!(
        api(&lab.balancer.ns, "POST", &path("undrain"), Some(TOKEN)).0,
        200
    );
    assert!(
        spread(&lab, 60).contains(&on),
        "undrained {on} takes new connections again"
    );

    // A broken configuration at reload: reported, and nothing changes.
    std::fs::write(&config_path, config(&dir, &[1, 2, 3, 4], "10.77.99.300")).expect("config");
    let (code, body) = api(&lab.balancer.ns, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("services[0].vip") && body.contains("fulcrum.yaml:"),
        "the error names file, line and field: {body}"
    );
    let (_, status) = api(&lab.balancer.ns, "GET", "/api/v1/services", None);
    assert!(
        status.contains("\"reload_error\":\"") && status.contains("services[0].vip"),
        "{status}"
    );
    let answered = spread(&lab, 40);
    assert!(
        (1..=4).all(|n| answered.contains(&format!("backend-{n}"))),
        "the running configuration stays: {answered:?}"
    );

    drop(daemon);
    assert!(
        !lab.balancer_has_xdp().expect("ip link"),
        "no XDP program left after shutdown"
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_configuration_at_start_is_one_clear_line() {
    let dir = temp_dir("bad");
    let path = dir.join("fulcrum.yaml");
    std::fs::write(&path, config(&dir, &[1], "10.77.99.300")).expect("config");
    let out = Command::new(FULCRUM)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = format!(
        "fulcrum: {}:7:10: services[0].vip: '10.77.99.300' is not an IP address; write an IPv4 address like 10.66.0.11 or an IPv6 address like 2001:db8::11",
        path.display()
    );
    assert!(
        stderr.trim().starts_with(&line),
        "want {line:?}, got {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
