//! Flow sharing of IPv6 flows between two daemons, over IPv6. The DSR lab's hosts get IPv6
//! addresses beside their IPv4 ones, the backends hold an IPv6 VIP, and the balancers
//! share flows over IPv6 unicast. As in `flow_sharing.rs`, A serves new connections on
//! backend-1 only and B would send them to backend-2, so connections that stay on
//! backend-1 when the client's route moves to B prove that B learned them from A: one from
//! B's start-up dump, one shared while both ran.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    VIP6, add_ipv6, config_file, count, flows, route6_via, six, start_in, temp_dir,
    wait_flow_ready, wait_until, with_ipv6,
};
use fulcrum_lab::{
    dsr::DsrLab,
    host::backend_servers,
    traffic::{HttpConnection, http_server},
};

fn write_config(dir: &Path, me: u16, peer: u16, key: &Path, drained: u16) -> PathBuf {
    let backends: String = (1..=2)
        .map(|n| {
            format!(
                "      - address: {}\n        drain: {}\n",
                six(10 + n),
                n == drained
            )
        })
        .collect();
    let service = format!(
        "  - name: web6\n    vip: {VIP6}\n    port: 80\n    health:\n      - type: http\n        \
         path: /\n        interval: 200ms\n        timeout: 150ms\n        rise: 1\n    \
         backends:\n{backends}"
    );
    let path = dir.join("fulcrum.yaml");
    let text = format!(
        "{}flow_sharing:\n  listen: \"[{}]:7946\"\n  peers: [\"[{}]:7946\"]\n  key_file: {}\n  \
         sync_timeout: 2s\n  refresh_interval: 1h\n",
        config_file(dir, &service),
        six(me),
        six(peer),
        key.display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn ipv6_flows_made_through_a_are_carried_on_by_b() {
    let lab = DsrLab::new("fs6", 2).expect("lab");
    let (b_host, _b_pass) = lab
        .add_balancer("lb2", std::net::Ipv4Addr::new(10, 77, 0, 3))
        .expect("second balancer");
    with_ipv6(&lab);
    add_ipv6(&b_host, 3);
    let _servers = backend_servers(&lab.backends, "[::]:80".parse().unwrap(), http_server)
        .expect("HTTP servers on IPv6");

    let dir = temp_dir("flow-sharing-6");
    let key = dir.join("flow-key");
    std::fs::write(&key, [0x6a; 32]).expect("key");
    let a_dir = dir.join("a");
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a_config = write_config(&a_dir, 2, 3, &key, 2);
    let b_config = write_config(&b_dir, 3, 2, &key, 1);
    let vip = SocketAddr::from((VIP6, 80));

    let _a = start_in(&lab.balancer.ns, &a_config);
    wait_flow_ready(&lab.balancer.ns, 2);
    let mut dumped = HttpConnection::open(&lab.client.ns, vip).expect("connect through A");
    assert_eq!(dumped.get().expect("through A").server, "backend-1");

    // B starts after the flow exists: A's dump carries it over IPv6.
    let _b = start_in(&b_host.ns, &b_config);
    wait_flow_ready(&b_host.ns, 2);
    let b_flows = flows(&b_host.ns).expect("B's flow sharing");
    assert!(count(&b_flows, &["imports", "imported"]) >= 1, "{b_flows}");
    assert_eq!(
        b_flows["peers"][0]["address"],
        format!("[{}]:7946", six(2)),
        "{b_flows}"
    );

    let mut live = HttpConnection::open(&lab.client.ns, vip).expect("connect through A");
    assert_eq!(live.get().expect("through A").server, "backend-1");
    wait_until(
        "B imported the live IPv6 flow",
        Duration::from_secs(10),
        || flows(&b_host.ns).is_some_and(|f| count(&f, &["imports", "imported"]) >= 2),
    );

    route6_via(&lab.client.ns, 3);
    assert_eq!(
        dumped.get().expect("dumped flow through B").server,
        "backend-1"
    );
    assert_eq!(
        live.get().expect("shared flow through B").server,
        "backend-1"
    );
    let fresh = HttpConnection::open(&lab.client.ns, vip)
        .and_then(|mut c| c.get())
        .expect("a new connection through B");
    assert_eq!(fresh.server, "backend-2", "B's own choice for new flows");
    let _ = std::fs::remove_dir_all(dir);
}
