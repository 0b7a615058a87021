//! `fulcrum run` with layer-3 DSR services brought in by reload, as users do it, in the L3
//! lab (backends behind a router, running `fulcrum decap`): the daemon starts with no
//! service, SIGHUP applies an `ipip` service (4in4) and a `gue` service (6in6) and real HTTP
//! through both VIPs reaches every backend with the client's own address; a reload that
//! adds tunnelled backends the kernel has no route to is refused with a 422 naming each of
//! them, and nothing that runs changes: the API's view, open connections and new ones;
//! without them the same change applies.

mod common;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use common::{
    TOKEN, api, backend_list, config_file, services, start_in, temp_dir, try_api, wait_until,
};
use fulcrum_lab::{
    l3::{CLIENT, CLIENT6, L3Lab, VIP, VIP6, backend_addr, backend_addr6},
    traffic::{HttpConnection, http_get},
};

/// Routed nowhere from the balancer (its namespace has no default route).
const NOWHERE4: &str = "10.79.0.5";
const NOWHERE6: &str = "fd79::5";

/// A service on port 80 of `vip`, forwarded as `forwarding`, with an HTTP check (to the
/// VIP, through the tunnel) and these backends.
fn service(name: &str, vip: IpAddr, forwarding: &str, backends: &[String]) -> String {
    let list = backend_list(backends);
    format!(
        "  - name: {name}\n    vip: {vip}\n    port: 80\n    forwarding: {forwarding}\n    \
         health:\n      - type: http\n        path: /\n        interval: 200ms\n        \
         timeout: 150ms\n        rise: 1\n    backends:\n{list}"
    )
}

/// The two tunnelled services: `web` (IP-in-IP to the backends' IPv4 addresses) with
/// `four`, and `web6` (GUE to their IPv6 addresses, the default port 6080) with `six`.
fn tunnelled(dir: &Path, four: &[String], six: &[String]) -> String {
    let services =
        service("web", VIP.into(), "ipip", four) + &service("web6", VIP6.into(), "gue", six);
    config_file(dir, &services)
}

fn fours(n: &[u8]) -> Vec<String> {
    n.iter().map(|i| backend_addr(*i).to_string()).collect()
}

fn sixes(n: &[u8]) -> Vec<String> {
    n.iter().map(|i| backend_addr6(*i).to_string()).collect()
}

/// Which backends answered 20 new connections from the client to `vip`; each must
/// succeed and be seen by the backend as coming from the client's own address.
fn served(lab: &L3Lab, vip: IpAddr) -> BTreeSet<String> {
    let client: IpAddr = match vip {
        IpAddr::V4(_) => CLIENT.into(),
        IpAddr::V6(_) => CLIENT6.into(),
    };
    (0..20)
        .map(|i| {
            let answer = http_get(&lab.client.ns, SocketAddr::new(vip, 80))
                .unwrap_or_else(|e| panic!("request {i} to {vip} failed: {e:#}"));
            // The servers listen on [::]: IPv4 peers show as mapped addresses.
            let peer = answer.peer.parse::<IpAddr>().map(|a| a.to_canonical());
            assert_eq!(peer.ok(), Some(client), "DSR keeps the client's address");
            answer.server
        })
        .collect()
}

fn both_backends() -> BTreeSet<String> {
    BTreeSet::from(["backend-1".to_string(), "backend-2".to_string()])
}

fn healthy(lab: &L3Lab) -> usize {
    try_api(&lab.balancer.ns, "GET", "/api/v1/services", None)
        .map_or(0, |(_, body)| body.matches("\"health\":\"up\"").count())
}

#[test]
fn tunnelled_services_come_by_reload_and_an_unroutable_backend_is_refused() {
    let mut lab = L3Lab::new("dtun", 2).expect("build the lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("tunnel");
    let path = dir.join("fulcrum.yaml");
    std::fs::write(&path, config_file(&dir, "  []\n")).expect("config");
    let daemon = start_in(&lab.balancer.ns, &path);
    wait_until("the API", Duration::from_secs(20), || {
        try_api(&lab.balancer.ns, "GET", "/api/v1/services", None).is_some()
    });
    assert!(
        http_get(&lab.client.ns, SocketAddr::new(VIP.into(), 80)).is_err(),
        "no service yet: the VIP is not served"
    );

    // SIGHUP, as `systemctl reload fulcrum` sends it.
    std::fs::write(&path, tunnelled(&dir, &fours(&[1, 2]), &sixes(&[1, 2]))).expect("config");
    daemon.signal(libc::SIGHUP);
    wait_until(
        "the reloaded services with 4 healthy backends",
        Duration::from_secs(30),
        || healthy(&lab) == 4,
    );
    let view = services(&lab.balancer.ns);
    for mode in ["ipip", "gue"] {
        assert!(
            view.contains(&format!("\"forwarding\":\"{mode}\"")),
            "{mode} in {view}"
        );
    }
    assert_eq!(served(&lab, VIP.into()), both_backends(), "IP-in-IP");
    assert_eq!(served(&lab, VIP6.into()), both_backends(), "GUE over IPv6");
    let mut open4 = HttpConnection::open(&lab.client.ns, SocketAddr::new(VIP.into(), 80))
        .expect("connect to the IPv4 VIP");
    let mut open6 = HttpConnection::open(&lab.client.ns, SocketAddr::new(VIP6.into(), 80))
        .expect("connect to the IPv6 VIP");
    let (first4, first6) = (
        open4.get().expect("IPv4 request").server,
        open6.get().expect("IPv6 request").server,
    );

    // One file with an unroutable backend in each service, and backend 2 leaving `web`:
    // all or nothing, so backend 2 stays too.
    let broken = tunnelled(
        &dir,
        &[backend_addr(1).to_string(), NOWHERE4.into()],
        &[sixes(&[1, 2]), vec![NOWHERE6.into()]].concat(),
    );
    std::fs::write(&path, broken).expect("config");
    let (code, body) = api(&lab.balancer.ns, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 422, "{body}");
    for (field, backend) in [
        ("services[0].backends[1]", NOWHERE4),
        ("services[1].backends[2]", NOWHERE6),
    ] {
        let want = format!("{field}.address: backend {backend}: cannot tunnel to it: no route");
        assert!(body.contains(&want), "want {want:?} in {body}");
    }
    assert!(
        body.contains(&format!("{}:", path.display())),
        "the error names the file: {body}"
    );

    let view = services(&lab.balancer.ns);
    assert!(view.contains("\"reload_error\":\""), "{view}");
    for gone in [NOWHERE4, NOWHERE6] {
        assert!(
            !view.contains(&format!("\"address\":\"{gone}\"")),
            "{gone} is not a backend: {view}"
        );
    }
    assert!(
        view.contains(&format!("\"address\":\"{}\"", backend_addr(2))),
        "the API still shows the old backends: {view}"
    );
    assert_eq!(healthy(&lab), 4, "{view}");
    assert_eq!(
        open4.get().expect("the open IPv4 connection").server,
        first4
    );
    assert_eq!(
        open6.get().expect("the open IPv6 connection").server,
        first6
    );
    assert_eq!(served(&lab, VIP.into()), both_backends(), "IP-in-IP stays");
    assert_eq!(served(&lab, VIP6.into()), both_backends(), "GUE stays");

    // Without the unroutable backends the same change applies.
    std::fs::write(&path, tunnelled(&dir, &fours(&[1]), &sixes(&[1, 2]))).expect("config");
    let (code, body) = api(&lab.balancer.ns, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let view = services(&lab.balancer.ns);
    assert!(!view.contains("\"reload_error\":\""), "{view}");
    assert_eq!(
        served(&lab, VIP.into()),
        BTreeSet::from(["backend-1".to_string()]),
        "the applied file removed backend 2 from web"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}
