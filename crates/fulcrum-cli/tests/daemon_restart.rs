//! The restart path of `fulcrum run`: SIGUSR2 exits with 75 leaving the data plane
//! forwarding; the next daemon adopts it with its backends counted healthy and drained
//! ones still drained; after SIGKILL the same; SIGTERM removes everything.

mod common;

use std::{net::SocketAddr, path::Path, time::Duration};

use common::{
    PinDir, TOKEN, api, config_file, spread, start_pinned, temp_dir, try_api, wait_until,
    web_service,
};
use fulcrum_lab::{
    dsr::{DsrLab, VIP, backend_addr},
    traffic::HttpConnection,
};

/// The first answer of a freshly started daemon's API.
fn first_answer(lab: &DsrLab) -> String {
    let mut body = None;
    wait_until("the API", Duration::from_secs(20), || {
        body = try_api(&lab.balancer.ns, "GET", "/api/v1/services", None).map(|(_, b)| b);
        body.is_some()
    });
    body.unwrap_or_default()
}

#[test]
fn handover_and_crash_keep_forwarding_and_the_next_daemon_adopts() {
    let lab = DsrLab::new("h", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("restart");
    let path = dir.join("fulcrum.yaml");
    let instance = format!("restart-{}", std::process::id());
    let pins = fulcrum::pin::instance_dir(&instance);
    let _cleanup = PinDir(pins.clone());
    // rise 10 at 200 ms: a fresh daemon needs 2 s to trust a backend.
    let service = web_service(
        &VIP.to_string(),
        "",
        &[backend_addr(1).to_string(), backend_addr(2).to_string()],
    )
    .replace("rise: 2", "rise: 10");
    write_config(
        &path,
        &format!("instance: {instance}\n{}", config_file(&dir, &service)),
    );
    let mut daemon = start_pinned(&lab, &path);
    wait_until("two healthy backends", Duration::from_secs(20), || {
        try_api(&lab.balancer.ns, "GET", "/api/v1/services", None)
            .is_some_and(|(_, b)| b.matches("\"health\":\"up\"").count() == 2)
    });
    let drain = format!("/api/v1/services/web/backends/{}/drain", backend_addr(2));
    assert_eq!(api(&lab.balancer.ns, "POST", &drain, Some(TOKEN)).0, 200);
    let mut open =
        HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect");
    let on = open.get().expect("request").server;
    assert_eq!(
        on, "backend-1",
        "the drained backend takes no new connection"
    );

    assert_eq!(
        daemon.stop_with(libc::SIGUSR2).expect("exits"),
        Some(75),
        "a handover exits with 75"
    );
    assert!(
        lab.balancer_has_xdp().expect("ip link"),
        "XDP stays attached"
    );
    assert!(pins.exists(), "the state stays pinned");
    assert_eq!(open.get().expect("forwarding without a daemon").server, on);
    assert!(spread(&lab, 10).iter().all(|s| *s == "backend-1"));

    for (round, signal) in [(1, libc::SIGKILL), (2, libc::SIGTERM)] {
        daemon = start_pinned(&lab, &path);
        let first = first_answer(&lab);
        assert_eq!(
            first.matches("\"health\":\"up\"").count(),
            2,
            "adopted backends count healthy before their checks rise (round {round}): {first}"
        );
        assert!(
            first.contains(&format!(
                "\"address\":\"{}\",\"weight\":1,\"drained\":true",
                backend_addr(2)
            )),
            "the drain carried over: {first}"
        );
        assert_eq!(
            open.get()
                .expect("the connection survives the restart")
                .server,
            on
        );
        assert!(spread(&lab, 10).iter().all(|s| *s == "backend-1"));
        if signal == libc::SIGKILL {
            daemon.stop_with(libc::SIGKILL).expect("killed");
            assert!(
                lab.balancer_has_xdp().expect("ip link"),
                "XDP stays after a crash"
            );
            assert_eq!(open.get().expect("forwarding after a crash").server, on);
        }
    }
    assert_eq!(daemon.stop_with(libc::SIGTERM).expect("exits"), Some(0));
    assert!(!lab.balancer_has_xdp().expect("ip link"), "stop means stop");
    assert!(!pins.exists(), "SIGTERM removes the pinned state");
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("config");
}
