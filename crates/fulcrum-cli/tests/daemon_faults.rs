//! `fulcrum run` on bad days, in the DSR lab with real HTTP backends: a backend the data
//! plane cannot reach, a reload that cannot be applied, a VIP on the host's own address, a
//! backend removed with a drain period, and API reads during a 1000-service reload.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    FULCRUM, TOKEN, api, config_file, services, spread, start_daemon, temp_dir, wait_for_up,
    wait_until, web_service,
};
use fulcrum_lab::{
    dsr::{BALANCER, DsrLab, VIP, backend_addr},
    traffic::HttpConnection,
};

fn addresses(backends: &[u8]) -> Vec<String> {
    backends
        .iter()
        .map(|n| backend_addr(*n).to_string())
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the configuration");
}

fn metrics(lab: &DsrLab) -> String {
    let (code, text) = api(&lab.balancer.ns, "GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    text
}

fn reload(lab: &DsrLab) -> (u16, String) {
    api(&lab.balancer.ns, "POST", "/api/v1/reload", Some(TOKEN))
}

#[test]
fn a_backend_the_data_plane_cannot_reach_is_reported_and_the_rest_of_its_service_works() {
    let lab = DsrLab::new("u", 3).expect("lab");
    let mut servers = lab.http_servers().expect("HTTP servers");
    // Backend-3 also answers on 10.79.0.5, which the balancer reaches only through
    // backend-3 as a gateway: its health check passes, L2 DSR cannot serve it.
    let far = "10.79.0.5";
    lab.backends[2]
        .ns
        .ip(&["addr", "add", &format!("{far}/32"), "dev", "lo"])
        .expect("far address");
    lab.balancer
        .ns
        .ip(&[
            "route",
            "add",
            &format!("{far}/32"),
            "via",
            &backend_addr(3).to_string(),
        ])
        .expect("route through a gateway");
    let dir = temp_dir("unresolved");
    let path = dir.join("fulcrum.yaml");
    let mut backends = addresses(&[1, 2]);
    backends.push(far.into());
    write(
        &path,
        &config_file(&dir, &web_service(&VIP.to_string(), "", &backends)),
    );
    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 3, Duration::from_secs(15));
    wait_until("the API to give the reason", Duration::from_secs(5), || {
        services(&lab.balancer.ns).contains(&format!(
            "\"data_plane_error\":\"backend {far} is reached through gateway {}",
            backend_addr(3)
        ))
    });
    let answered = spread(&lab, 30);
    assert!(
        answered.contains(&"backend-1".into()) && answered.contains(&"backend-2".into()),
        "the other backends serve: {answered:?}"
    );
    assert!(
        !answered.contains(&"backend-3".into()),
        "nothing is sent to the backend the data plane cannot reach: {answered:?}"
    );
    let text = metrics(&lab);
    assert!(
        text.contains(&format!(
            "fulcrum_backend_unresolved{{service=\"web\",backend=\"{far}\"}} 1"
        )) && text.contains("fulcrum_backend_unresolved{service=\"web\",backend=\"10.77.0.11\"} 0"),
        "{text}"
    );

    // Failover still works: a dead backend leaves the service.
    drop(servers.remove(0));
    wait_until(
        "backend-1 to be marked down",
        Duration::from_secs(5),
        || services(&lab.balancer.ns).contains("\"health\":\"down\""),
    );
    let answered = spread(&lab, 30);
    assert!(
        answered.iter().all(|s| s == "backend-2"),
        "only backend-2 takes new connections: {answered:?}"
    );
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_that_cannot_be_applied_changes_nothing_and_stays_reported() {
    let lab = DsrLab::new("t", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("transaction");
    let path = dir.join("fulcrum.yaml");
    let vip = VIP.to_string();
    write(
        &path,
        &config_file(&dir, &web_service(&vip, "", &addresses(&[1, 2]))),
    );
    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 2, Duration::from_secs(15));
    let mut open =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect");
    let first = open.get().expect("first request").server;

    // 10.78.0.9 has no route from the balancer.
    let mut broken = addresses(&[1, 2]);
    broken.push("10.78.0.9".into());
    write(&path, &config_file(&dir, &web_service(&vip, "", &broken)));
    let want = format!(
        "{}:21:18: services[0].backends[2].address: backend 10.78.0.9: no route to it",
        path.display()
    );
    let (code, body) = reload(&lab);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(&want), "want {want:?} in {body}");
    let status = services(&lab.balancer.ns);
    assert!(
        !status.contains("10.78.0.9\",\"weight") && status.contains("10.77.0.12"),
        "the API still shows the old backends: {status}"
    );
    assert!(status.contains("\"reload_error\":\""), "{status}");
    let text = metrics(&lab);
    assert!(
        !text.contains("10.78.0.9")
            && text.contains("fulcrum_backend_up{service=\"web\",backend=\"10.77.0.11\"} 1"),
        "/metrics still shows the old backends: {text}"
    );
    assert_eq!(open.get().expect("the open connection").server, first);
    let answered = spread(&lab, 30);
    assert!(
        answered.contains(&"backend-1".into()) && answered.contains(&"backend-2".into()),
        "the old backends keep serving: {answered:?}"
    );

    // Draining the backend that serves still works.
    let number: u8 = first
        .trim_start_matches("backend-")
        .parse()
        .expect("backend number");
    let drain = format!(
        "/api/v1/services/web/backends/{}/drain",
        backend_addr(number)
    );
    let (code, body) = api(&lab.balancer.ns, "POST", &drain, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(
        !spread(&lab, 30).contains(&first),
        "no new connection reaches drained {first}"
    );
    assert_eq!(
        open.get().expect("the drained backend's connection").server,
        first
    );

    // The same file again: the same error, still reported.
    let (code, body) = reload(&lab);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(&want), "want {want:?} again in {body}");
    let status = services(&lab.balancer.ns);
    assert!(status.contains("no route to it"), "{status}");
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `fulcrum run` in the balancer's namespace and waits (bounded) for it to exit.
fn run_to_exit(lab: &DsrLab, path: &Path) -> (bool, String) {
    let mut child = lab
        .balancer
        .ns
        .command(FULCRUM)
        .args(["run", "--config"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fulcrum run");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fulcrum run did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_vip_on_an_address_of_this_host_is_refused_unless_the_service_allows_it() {
    let lab = DsrLab::new("v", 1).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("local-vip");
    let path = dir.join("fulcrum.yaml");
    let backends = addresses(&[1]);
    let local = BALANCER.to_string();
    let on_host = config_file(&dir, &web_service(&local, "", &backends));
    let allowed = config_file(
        &dir,
        &web_service(&local, "    allow_local_vip: true\n", &backends),
    );

    write(&path, &on_host);
    let (ok, stderr) = run_to_exit(&lab, &path);
    assert!(!ok, "refused at start");
    let line = format!(
        "fulcrum: {}:7:10: services[0].vip: {local} is an address of this host",
        path.display()
    );
    assert!(
        stderr.trim().starts_with(&line),
        "want {line:?}, got {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    write(
        &path,
        &config_file(&dir, &web_service(&VIP.to_string(), "", &backends)),
    );
    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 1, Duration::from_secs(15));
    write(&path, &on_host);
    let (code, body) = reload(&lab);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("services[0].vip") && body.contains("is an address of this host"),
        "{body}"
    );
    write(&path, &allowed);
    let (code, body) = reload(&lab);
    assert_eq!(code, 200, "accepted with allow_local_vip: {body}");
    assert!(services(&lab.balancer.ns).contains(&format!("\"vip\":\"{local}\"")));
    drop(daemon);

    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 1, Duration::from_secs(15));
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_backend_removed_with_a_drain_period_keeps_its_connections_then_leaves() {
    let lab = DsrLab::new("p", 3).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("drain-period");
    let path = dir.join("fulcrum.yaml");
    let vip = VIP.to_string();
    let period = "    drain_period: 8s\n";
    write(
        &path,
        &config_file(&dir, &web_service(&vip, period, &addresses(&[1, 2, 3]))),
    );
    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 3, Duration::from_secs(15));
    let mut open =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect");
    let on = open.get().expect("first request").server;
    let number: u8 = on.trim_start_matches("backend-").parse().expect("number");
    let removed = backend_addr(number);
    let kept: Vec<u8> = (1..=3).filter(|n| *n != number).collect();

    write(
        &path,
        &config_file(&dir, &web_service(&vip, period, &addresses(&kept))),
    );
    let (code, body) = reload(&lab);
    assert_eq!(code, 200, "{body}");
    let status = services(&lab.balancer.ns);
    assert!(
        status.contains(&format!(
            "\"address\":\"{removed}\",\"weight\":1,\"drained\":true"
        )) && status.contains("\"leaving\":true"),
        "the removed backend shows as leaving: {status}"
    );
    for _ in 0..3 {
        assert_eq!(
            open.get()
                .expect("the keep-alive connection works during the period")
                .server,
            on
        );
    }
    assert!(
        !spread(&lab, 30).contains(&on),
        "no new connection reaches leaving {on}"
    );
    assert!(
        metrics(&lab).contains(&format!(
            "fulcrum_backend_leaving{{service=\"web\",backend=\"{removed}\"}} 1"
        )),
        "/metrics shows it leaving"
    );
    wait_until(
        "the backend to leave after its period",
        Duration::from_secs(20),
        || !services(&lab.balancer.ns).contains(&format!("\"address\":\"{removed}\"")),
    );
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

/// 1000 services on backends 1 and 2 (no health checks: always healthy), with backend 2's
/// weight `weight`.
fn thousand_services(dir: &Path, weight: u32) -> String {
    let services: String = (0..1000)
        .map(|i| {
            format!(
                "  - name: s{i}\n    vip: {VIP}\n    port: {}\n    backends:\n      - address: {}\n      - address: {}\n        weight: {weight}\n",
                1000 + i,
                backend_addr(1),
                backend_addr(2)
            )
        })
        .collect();
    config_file(dir, &services)
}

#[test]
fn api_reads_answer_while_a_1000_service_reload_is_applied() {
    let lab = DsrLab::new("r", 2).expect("lab");
    let dir = temp_dir("big-reload");
    let path = dir.join("fulcrum.yaml");
    write(&path, &thousand_services(&dir, 1));
    let daemon = start_daemon(&lab, &path);
    wait_for_up(&lab, 2000, Duration::from_secs(60));

    write(&path, &thousand_services(&dir, 2));
    let done = AtomicBool::new(false);
    let ns = &lab.balancer.ns;
    let started = Instant::now();
    let ((code, body), during, reads) = std::thread::scope(|scope| {
        let reloader = scope.spawn(|| {
            let answer = api(ns, "POST", "/api/v1/reload", Some(TOKEN));
            done.store(true, Ordering::SeqCst);
            answer
        });
        // A read that shows `reloading: true` was answered while the reload was applied.
        let (mut during, mut reads) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            let (code, body) = api(ns, "GET", "/api/v1/services", None);
            assert_eq!(code, 200);
            reads += 1;
            if body.contains("\"reloading\":true") {
                during += 1;
            }
        }
        (reloader.join().expect("reload thread"), during, reads)
    });
    println!(
        "1000-service reload: {:?}; {during} of {reads} API reads answered while it was applied",
        started.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        during >= 3,
        "only {during} of {reads} reads were answered while the reload ran"
    );
    assert!(services(&lab.balancer.ns).contains("\"weight\":2"));
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}
