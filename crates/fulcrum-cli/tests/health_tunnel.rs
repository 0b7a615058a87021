//! Health checks of tunnelled backends prove that the backend serves the VIP: `fulcrum run`
//! in the layer-3 lab (backends behind a router, running `fulcrum decap`) probes each
//! backend at its service's VIP, through the same encapsulation as the traffic. A backend
//! that answers on its own address but does not hold the VIP is marked down, and comes up
//! once it holds it again; traffic then reaches both.

mod common;

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use common::{backend_list, config_file, start_in, temp_dir, try_api, wait_until};
use fulcrum_lab::{
    l3::{L3Lab, VIP, VIP6, backend_addr, backend_addr6, service_addr},
    traffic::http_get,
};
use serde_json::Value;

/// A service on port 80 of `vip`, forwarded as `forwarding`, with an HTTP check.
fn service(name: &str, vip: IpAddr, forwarding: &str, backends: [IpAddr; 2]) -> String {
    let list = backend_list(&backends);
    format!(
        "  - name: {name}\n    vip: {vip}\n    port: 80\n    forwarding: {forwarding}\n    \
         health:\n      - type: http\n        path: /\n        interval: 300ms\n        \
         timeout: 250ms\n        rise: 2\n        fall: 2\n    backends:\n{list}"
    )
}

/// The status of `service`'s backend `address`, once the API answers.
fn backend(lab: &L3Lab, service: &str, address: IpAddr) -> Option<Value> {
    let (_, body) = try_api(&lab.balancer.ns, "GET", "/api/v1/services", None)?;
    let status: Value = serde_json::from_str(&body).ok()?;
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address.to_string())
        .cloned()
}

fn health(lab: &L3Lab, service: &str, address: IpAddr) -> String {
    backend(lab, service, address)
        .and_then(|b| b["health"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Which backends answered `n` fresh connections to `vip`; every one must succeed.
fn spread(lab: &L3Lab, vip: IpAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            http_get(&lab.client.ns, service_addr(vip, 80))
                .unwrap_or_else(|e| panic!("request {i} to {vip} failed: {e:#}"))
                .server
        })
        .collect()
}

#[test]
fn a_tunnelled_backend_without_the_vip_is_down_until_it_holds_it() {
    let mut lab = L3Lab::new("ht", 2).expect("lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    // Backend 2 still serves HTTP on its own addresses, but holds neither VIP.
    let b2 = &lab.backends[1].ns;
    b2.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"])
        .expect("drop the IPv4 VIP");
    b2.ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "lo"])
        .expect("drop the IPv6 VIP");

    let (v4, v6): (IpAddr, IpAddr) = (VIP.into(), VIP6.into());
    let four = [backend_addr(1).into(), backend_addr(2).into()];
    let six = [backend_addr6(1).into(), backend_addr6(2).into()];
    let dir = temp_dir("health-tunnel");
    let config = dir.join("fulcrum.yaml");
    let services = service("web", v4, "ipip", four) + &service("web6", v6, "gue", six);
    std::fs::write(&config, config_file(&dir, &services)).expect("config");
    let _daemon = start_in(&lab.balancer.ns, &config);

    for (name, backends) in [("web", four), ("web6", six)] {
        // On its own address backend 2 would pass as soon as backend 1 does.
        wait_until(
            &format!("{name}: backend 1 up, backend 2 failing its check"),
            Duration::from_secs(30),
            || {
                let failing = backend(&lab, name, backends[1]).is_some_and(|b| {
                    b["health"] != "up"
                        && b["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("timeout"))
                });
                health(&lab, name, backends[0]) == "up" && failing
            },
        );
    }
    assert_eq!(
        spread(&lab, v4, 20),
        BTreeSet::from(["backend-1".to_string()]),
        "only the backend holding the VIP takes flows"
    );

    b2.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .expect("restore the IPv4 VIP");
    lab.backends[1]
        .hold_vip6(VIP6)
        .expect("restore the IPv6 VIP");
    for (name, backends) in [("web", four), ("web6", six)] {
        wait_until(
            &format!("{name}: backend 2 up once it holds the VIP"),
            Duration::from_secs(30),
            || health(&lab, name, backends[1]) == "up",
        );
    }
    let both = BTreeSet::from(["backend-1".to_string(), "backend-2".to_string()]);
    assert_eq!(spread(&lab, v4, 30), both, "IPv4 VIP over IP-in-IP");
    assert_eq!(spread(&lab, v6, 30), both, "IPv6 VIP over GUE");
}
