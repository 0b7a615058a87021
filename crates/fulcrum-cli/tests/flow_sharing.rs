//! Two daemons sharing flows in the DSR lab. A serves new connections on backend-1 only
//! (backend-2 drained there); B would send them to backend-2 (backend-1 drained there),
//! so a connection that keeps working on backend-1 when the client's route moves to B
//! proves that B learned the flow from A. B started after A learns A's flows from the
//! start-up dump; a flow opened while both run reaches B as it is made; a B with the
//! wrong key learns nothing and both sides count the refusals; a reload that gives B the
//! right key file restarts its flow sharing, and B then learns what it missed.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use common::{config_file, count, flows, start_in as start, temp_dir, wait_flow_ready, wait_until};
use fulcrum_lab::{
    dsr::{BALANCER, DsrLab, VIP, backend_addr},
    netns::NetNs,
    traffic::HttpConnection,
};

const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

fn service(drained: u8) -> String {
    let backends: String = (1..=2)
        .map(|n| {
            format!(
                "      - address: {}\n        drain: {}\n",
                backend_addr(n),
                n == drained
            )
        })
        .collect();
    format!(
        "  - name: web\n    vip: {VIP}\n    port: 80\n    health:\n      - type: http\n        \
         path: /\n        interval: 200ms\n        timeout: 150ms\n        rise: 1\n    \
         backends:\n{backends}"
    )
}

fn write_config(
    dir: &Path,
    me: Ipv4Addr,
    peer: Ipv4Addr,
    key: &Path,
    drained: u8,
) -> std::path::PathBuf {
    let path = dir.join(format!("{me}.yaml"));
    let text = format!(
        "{}flow_sharing:\n  listen: {me}:7946\n  peers: [{peer}:7946]\n  key_file: {}\n  \
         sync_timeout: 2s\n  refresh_interval: 1h\n",
        config_file(dir, &service(drained)),
        key.display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn wait_ready(ns: &NetNs) {
    wait_flow_ready(ns, 2);
}

fn route_via(lab: &DsrLab, balancer: Ipv4Addr) {
    lab.client
        .ns
        .ip(&[
            "route",
            "replace",
            "10.77.99.0/24",
            "via",
            &balancer.to_string(),
        ])
        .expect("route");
}

#[test]
fn flows_made_through_a_reach_b_and_bad_keys_are_counted() {
    let lab = DsrLab::new("fs", 2).expect("lab");
    let _servers = lab.http_servers().expect("HTTP servers");
    let (b_host, _b_pass) = lab.add_balancer("lb2", B_ADDR).expect("second balancer");
    let dir = temp_dir("flow-sharing");
    let key = dir.join("flow-key");
    std::fs::write(&key, [0x5a; 32]).expect("key");
    let a_config = write_config(&dir, BALANCER, B_ADDR, &key, 2);
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_config = write_config(&b_dir, B_ADDR, BALANCER, &key, 1);
    let vip = SocketAddr::from((VIP, 80));

    let _a = start(&lab.balancer.ns, &a_config);
    wait_ready(&lab.balancer.ns);
    let mut before_b = HttpConnection::open(&lab.client.ns, vip).expect("connect through A");
    assert_eq!(before_b.get().expect("through A").server, "backend-1");

    // B starts after the flow exists: its start-up sync asks A, which dumps its table.
    let mut b = start(&b_host.ns, &b_config);
    wait_ready(&b_host.ns);
    let b_flows = flows(&b_host.ns).unwrap();
    assert!(count(&b_flows, &["imports", "imported"]) >= 1, "{b_flows}");
    assert_eq!(
        b_flows["peers"][0]["synced"], true,
        "A answered B's sync: {b_flows}"
    );

    // A new flow through A while both run reaches B within the batch delay.
    let mut live = HttpConnection::open(&lab.client.ns, vip).expect("connect through A");
    assert_eq!(live.get().expect("through A").server, "backend-1");
    wait_until("B imported the live flow", Duration::from_secs(10), || {
        flows(&b_host.ns).is_some_and(|f| count(&f, &["imports", "imported"]) >= 2)
    });

    // Every packet now goes through B, which only knows these flows from A.
    route_via(&lab, B_ADDR);
    assert_eq!(
        before_b.get().expect("dumped flow through B").server,
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
    route_via(&lab, BALANCER);

    // B restarted with another key: A refuses what B sends, B refuses what A sends.
    b.stop_with(libc::SIGTERM).expect("B stops");
    std::fs::write(&key, [0x33; 32]).expect("other key");
    let a_bad_before = count(&flows(&lab.balancer.ns).unwrap(), &["rejected", "bad_mac"]);
    let b = start(&b_host.ns, &b_config);
    wait_ready(&b_host.ns);
    let a_flows = flows(&lab.balancer.ns).unwrap();
    assert!(
        count(&a_flows, &["rejected", "bad_mac"]) > a_bad_before,
        "A counts B's requests as forged: {a_flows}"
    );
    let mut after = HttpConnection::open(&lab.client.ns, vip).expect("connect through A");
    assert_eq!(after.get().expect("through A").server, "backend-1");
    wait_until("B refused A's share", Duration::from_secs(10), || {
        flows(&b_host.ns).is_some_and(|f| count(&f, &["rejected", "bad_mac"]) >= 1)
    });
    let b_flows = flows(&b_host.ns).unwrap();
    assert_eq!(
        count(&b_flows, &["imports", "imported"]),
        0,
        "nothing forged is imported: {b_flows}"
    );
    assert_eq!(
        b_flows["synced"], true,
        "B gave up waiting at sync_timeout: {b_flows}"
    );

    // Reload B with a key file holding the right key: flow sharing restarts, asks A again,
    // and the flow B missed now goes through B on its backend.
    let right = b_dir.join("flow-key-2");
    std::fs::write(&right, [0x5a; 32]).expect("key");
    write_config(&b_dir, B_ADDR, BALANCER, &right, 1);
    b.signal(libc::SIGHUP);
    wait_until(
        "B imported after the reload",
        Duration::from_secs(15),
        || flows(&b_host.ns).is_some_and(|f| count(&f, &["imports", "imported"]) >= 1),
    );
    route_via(&lab, B_ADDR);
    assert_eq!(
        after.get().expect("flow learned after the reload").server,
        "backend-1"
    );
    route_via(&lab, BALANCER);
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}
