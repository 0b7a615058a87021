//! Route health injection against real routers: BIRD 2 and GoBGP, each in the lab's client
//! namespace, peering with `fulcrum run` in the balancer's. The tests read the routers' own
//! view (`birdc show route`, `gobgp global rib`).

mod common;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use common::{
    PinDir, config_file, start_daemon, start_pinned, temp_dir, try_api, wait_until, web_service,
};
use fulcrum_lab::{
    bgp_peers::{Bird, Gobgp},
    dsr::{BALANCER, CLIENT, DsrLab, VIP, backend_addr},
};

const PREFIX: &str = "10.77.99.1/32";

/// BIRD in the client's namespace, AS 65000, one session to the balancer (AS 65001).
fn bird_config(extra: &str) -> String {
    format!(
        "router id {CLIENT};\n\
         protocol device {{ }}\n\
         protocol bgp fulcrum {{\n\
           local {CLIENT} as 65000;\n\
           neighbor {BALANCER} as 65001;\n\
           hold time 6;\n\
           connect retry time 1;\n\
           connect delay time 1;\n\
           error wait time 1, 2;\n\
           graceful restart on;\n\
           {extra}\n\
           ipv4 {{ import all; export none; }};\n\
         }}\n"
    )
}

/// The `bgp:` section peering with the router at CLIENT.
fn bgp_section(restart: &str, peer_extra: &str) -> String {
    format!(
        "bgp:\n  asn: 65001\n  router_id: {BALANCER}\n  graceful_restart: {restart}\n  \
         shutdown_delay: 1s\n  peers:\n    - address: {CLIENT}\n      asn: 65000\n      \
         hold_time: 6s\n{peer_extra}"
    )
}

fn write_config(dir: &Path, bgp: &str, service_extra: &str, instance: Option<&str>) -> PathBuf {
    let service = web_service(
        &VIP.to_string(),
        service_extra,
        &[backend_addr(1).to_string(), backend_addr(2).to_string()],
    );
    let mut text = config_file(dir, &service);
    text.push_str(bgp);
    if let Some(instance) = instance {
        text = format!("instance: {instance}\n{text}");
    }
    let path = dir.join("fulcrum.yaml");
    std::fs::write(&path, text).expect("config");
    path
}

fn bgp_status(lab: &DsrLab) -> String {
    try_api(&lab.balancer.ns, "GET", "/api/v1/bgp", None)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn bird_has_the_vip_while_backends_are_healthy_and_loses_it_when_they_fail_and_on_sigterm() {
    let lab = DsrLab::new("bgpa", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let bird = Bird::start(&lab.client.ns, &bird_config("")).expect("bird");
    let dir = temp_dir("bgp-announce");
    // GoBGP connects too; with `listen: off` only our connection can make the session.
    let bgp = bgp_section("3s", "").replace("  peers:\n", "  listen: off\n  peers:\n");
    let path = write_config(
        &dir,
        &bgp,
        "    med: 10\n    communities: [\"65000:100\"]\n    large_communities: [\"65000:1:2\"]\n",
        None,
    );
    let mut daemon = start_daemon(&lab, &path);
    wait_until("BIRD has the VIP", LIMIT, || !bird.route(PREFIX).is_empty());
    let route = bird.route(PREFIX);
    assert!(route.contains("BGP.med: 10"), "{route}");
    assert!(route.contains("(65000,100)"), "{route}");
    assert!(route.contains("(65000, 1, 2)"), "{route}");
    assert!(route.contains("BGP.as_path: 65001"), "{route}");
    let status = bgp_status(&lab);
    assert!(status.contains("\"state\":\"Established\""), "{status}");
    assert!(
        status.contains("\"announced\":[\"10.77.99.1/32\"]"),
        "{status}"
    );
    let metrics = try_api(&lab.balancer.ns, "GET", "/metrics", None)
        .expect("metrics")
        .1;
    assert!(
        metrics.contains(&format!("fulcrum_bgp_peer_up{{peer=\"{CLIENT}\"}} 1")),
        "{metrics}"
    );

    // Every backend fails its checks: the route goes; they come back: it returns.
    drop(servers);
    wait_until("BIRD loses the VIP", LIMIT, || {
        bird.route(PREFIX).is_empty()
    });
    let servers = lab.http_servers().expect("HTTP servers again");
    wait_until("BIRD has the VIP again", LIMIT, || {
        !bird.route(PREFIX).is_empty()
    });

    // SIGTERM: withdrawn and Cease before the daemon exits.
    assert_eq!(daemon.stop_with(libc::SIGTERM).expect("exits"), Some(0));
    assert_eq!(
        bird.route(PREFIX),
        "",
        "withdrawn by the time the daemon exited"
    );
    let log = bird.log();
    assert!(
        log.contains("Received: Administrative shutdown"),
        "BIRD got NOTIFICATION Cease: {log}"
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

fn protocol(bird: &Bird) -> String {
    bird.birdc(&["show", "protocols", "all", "fulcrum"])
        .unwrap_or_default()
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn bird_keeps_the_vip_through_a_graceful_restart_and_drops_it_after_a_crash() {
    let lab = DsrLab::new("bgpr", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let bird = Bird::start(&lab.client.ns, &bird_config("")).expect("bird");
    let dir = temp_dir("bgp-restart");
    let instance = format!("bgp-{}", std::process::id());
    let _pins = PinDir(fulcrum::pin::instance_dir(&instance));
    let path = write_config(&dir, &bgp_section("8s", ""), "", Some(&instance));
    let mut daemon = start_pinned(&lab, &path);
    wait_until("BIRD has the VIP", LIMIT, || !bird.route(PREFIX).is_empty());
    let fresh = protocol(&bird);
    assert!(
        !fresh.contains("Restart recovery") && !fresh.contains("AF preserved: ipv4"),
        "a fresh daemon sets neither the Restart State nor the Forwarding State bit: {fresh}"
    );

    // Handover and start again while watching BIRD's table: the route never disappears.
    let missing = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if bird.route(PREFIX).is_empty() {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Stops the watcher even when an assertion below fails.
        let _stop = SetOnDrop(&done);
        assert_eq!(daemon.stop_with(libc::SIGUSR2).expect("exits"), Some(75));
        // BIRD has no "stale" mark on routes; it says so on the protocol.
        wait_until(
            "BIRD to keep the routes for the restart time",
            LIMIT,
            || protocol(&bird).contains("Neighbor graceful restart active"),
        );
        daemon = start_pinned(&lab, &path);
        wait_until(
            "the new session's End-of-RIB to end the restart",
            LIMIT,
            || {
                let p = protocol(&bird);
                p.contains("BGP state:          Established") && !p.contains("restart active")
            },
        );
        let p = protocol(&bird);
        assert!(
            p.contains("Restart recovery") && p.contains("AF preserved: ipv4"),
            "the daemon that adopted the data plane opens with the R and F bits: {p}"
        );
    });
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "the route disappeared during the graceful restart"
    );
    assert!(
        !bird.route(PREFIX).is_empty(),
        "the route is there at the end"
    );

    // A crash and no restart: kept for the restart time, then withdrawn.
    daemon.stop_with(libc::SIGKILL).expect("killed");
    assert!(
        !bird.route(PREFIX).is_empty(),
        "kept while the restart time runs"
    );
    wait_until("BIRD drops the VIP after the restart time", LIMIT, || {
        bird.route(PREFIX).is_empty()
    });
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_withdraws_a_service_set_to_never_and_closes_a_removed_peer() {
    let lab = DsrLab::new("bgpl", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let bird = Bird::start(&lab.client.ns, &bird_config("")).expect("bird");
    let dir = temp_dir("bgp-reload");
    let path = write_config(&dir, &bgp_section("3s", ""), "", None);
    let daemon = start_daemon(&lab, &path);
    wait_until("BIRD has the VIP", LIMIT, || !bird.route(PREFIX).is_empty());

    write_config(&dir, &bgp_section("3s", ""), "    announce: never\n", None);
    daemon.signal(libc::SIGHUP);
    wait_until("BIRD loses the VIP set to never", LIMIT, || {
        bird.route(PREFIX).is_empty()
    });

    // The peer leaves the configuration: Cease, peer de-configured.
    let other =
        bgp_section("3s", "").replace(&format!("address: {CLIENT}"), "address: 10.77.0.250");
    write_config(&dir, &other, "", None);
    daemon.signal(libc::SIGHUP);
    wait_until("BIRD is told it was de-configured", LIMIT, || {
        bird.log().contains("Received: Peer de-configured")
    });
    assert!(bird.route(PREFIX).is_empty());
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bird_with_a_tcp_md5_password_establishes() {
    let lab = DsrLab::new("bgpm", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let bird =
        Bird::start(&lab.client.ns, &bird_config("password \"lab-md5-secret\";")).expect("bird");
    let dir = temp_dir("bgp-md5");
    let key = dir.join("md5");
    std::fs::write(&key, "lab-md5-secret\n").expect("key");
    let peer = format!("      md5_password_file: {}\n", key.display());
    let path = write_config(&dir, &bgp_section("3s", &peer), "", None);
    let daemon = start_daemon(&lab, &path);
    wait_until("BIRD has the VIP over an MD5 session", LIMIT, || {
        !bird.route(PREFIX).is_empty()
    });
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_ipv4_router_with_tcp_md5_connects_to_a_dual_stack_listener() {
    let lab = DsrLab::new("bgpd", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let bird =
        Bird::start(&lab.client.ns, &bird_config("password \"lab-md5-secret\";")).expect("bird");
    let dir = temp_dir("bgp-md5-dual");
    let key = dir.join("md5");
    std::fs::write(&key, "lab-md5-secret\n").expect("key");
    // Passive: only BIRD's connection, to [::]:179, can make the session; its MD5 key is
    // set on the IPv6 socket as the IPv4-mapped address.
    let peer = format!(
        "      passive: true\n      md5_password_file: {}\n",
        key.display()
    );
    let bgp = bgp_section("3s", &peer).replace("  peers:\n", "  listen: \"[::]:179\"\n  peers:\n");
    let path = write_config(&dir, &bgp, "", None);
    let daemon = start_daemon(&lab, &path);
    wait_until(
        "BIRD has the VIP over the dual-stack listener",
        LIMIT,
        || !bird.route(PREFIX).is_empty(),
    );
    assert_eq!(
        fulcrum_lab::bird::ip_next_hops(&bird, PREFIX).expect("birdc"),
        vec![std::net::IpAddr::from(BALANCER)],
        "the IPv4 local address, not its IPv6-mapped form"
    );
    drop(daemon);
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gobgp_gets_the_vip_with_its_attributes_and_loses_it() {
    let lab = DsrLab::new("bgpg", 2).expect("lab");
    let servers = lab.http_servers().expect("HTTP servers");
    let config = format!(
        "[global.config]\n  as = 65000\n  router-id = \"{CLIENT}\"\n\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{BALANCER}\"\n    \
         peer-as = 65001\n  [neighbors.timers.config]\n    connect-retry = 1\n    \
         hold-time = 9\n    keepalive-interval = 3\n"
    );
    let port = 50051 + (std::process::id() % 1000) as u16;
    let gobgp = Gobgp::start(&lab.client.ns, &config, port).expect("gobgpd");
    let dir = temp_dir("bgp-gobgp");
    // GoBGP connects too; with `listen: off` only our connection can make the session.
    let bgp = bgp_section("3s", "").replace("  peers:\n", "  listen: off\n  peers:\n");
    let path = write_config(
        &dir,
        &bgp,
        "    med: 10\n    communities: [\"65000:100\"]\n    large_communities: [\"65000:1:2\"]\n",
        None,
    );
    let daemon = start_daemon(&lab, &path);
    let rib = || {
        gobgp
            .gobgp(&["global", "rib", "-a", "ipv4"])
            .unwrap_or_default()
    };
    wait_until("GoBGP has the VIP", LIMIT, || rib().contains(PREFIX));
    let table = rib();
    let neighbor = gobgp.gobgp(&["neighbor"]).unwrap_or_default();
    assert!(neighbor.contains("Establ"), "{neighbor}");
    assert!(table.contains("{Med: 10}"), "{table}");
    assert!(table.contains("65000:100"), "{table}");
    assert!(table.contains("65000:1:2"), "{table}");
    assert!(table.contains("65001"), "AS path: {table}");
    let listening = (lab.balancer.ns)
        .exec("ss", &["-Hltn", "sport", "=", ":179"])
        .expect("ss");
    assert!(listening.trim().is_empty(), "listen: off, yet: {listening}");
    drop(servers);
    wait_until("GoBGP loses the VIP", LIMIT, || !rib().contains(PREFIX));
    drop(daemon);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bird_over_an_ipv6_session_gets_the_ipv4_vip_with_its_next_hop_and_loses_it_on_sigterm() {
    let lab = DsrLab::new("bgp6", 2).expect("lab");
    let (client6, balancer6) = ("fd00:77::1", "fd00:77::2");
    for (host, addr) in [(&lab.client, client6), (&lab.balancer, balancer6)] {
        let addr = format!("{addr}/64");
        (host.ns)
            .ip(&["-6", "addr", "add", &addr, "dev", "eth0", "nodad"])
            .expect("IPv6 address");
    }
    let servers = lab.http_servers().expect("HTTP servers");
    // BIRD connects to the balancer's IPv6 address and offers both families.
    let bird = bird_config("ipv6 { import all; export none; };")
        .replace(&format!("local {CLIENT} "), &format!("local {client6} "))
        .replace(
            &format!("neighbor {BALANCER} "),
            &format!("neighbor {balancer6} "),
        );
    let bird = Bird::start(&lab.client.ns, &bird).expect("bird");
    let dir = temp_dir("bgp-ipv6-session");
    // No `listen`: with an IPv6 peer it is [::]:179. An IPv6 session needs the IPv4 next hop.
    let bgp = bgp_section("3s", &format!("      next_hop: {BALANCER}\n")).replace(
        &format!("address: {CLIENT}"),
        &format!("address: {client6}"),
    );
    let path = write_config(&dir, &bgp, "", None);
    let mut daemon = start_daemon(&lab, &path);
    wait_until("BIRD has the VIP", LIMIT, || !bird.route(PREFIX).is_empty());
    assert_eq!(
        fulcrum_lab::bird::ip_next_hops(&bird, PREFIX).expect("birdc"),
        vec![std::net::IpAddr::from(BALANCER)],
        "{}",
        bird.route(PREFIX)
    );
    let status = bgp_status(&lab);
    assert!(
        status.contains(&format!("\"address\":\"{client6}\"")),
        "{status}"
    );
    assert!(
        status.contains("\"families\":[\"ipv4-unicast\",\"ipv6-unicast\"]"),
        "{status}"
    );
    assert!(status.contains("\"not_announced\":[]"), "{status}");
    let listening = (lab.balancer.ns)
        .exec("ss", &["-Hltn", "sport", "=", ":179"])
        .expect("ss");
    // ss writes a dual-stack [::] listener as `*`.
    assert!(
        listening.contains("*:179"),
        "[::]:179 with IPv4 too: {listening}"
    );

    assert_eq!(daemon.stop_with(libc::SIGTERM).expect("exits"), Some(0));
    assert_eq!(
        bird.route(PREFIX),
        "",
        "withdrawn by the time the daemon exited"
    );
    assert!(bird.log().contains("Received: Administrative shutdown"));
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}
