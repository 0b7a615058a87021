//! Parsing and validation, seen from the operator's side: files in, models or messages out.

use std::{net::IpAddr, path::Path, time::Duration};

use super::*;

mod bgp;
mod forwarding;
mod health;
mod problems;
mod services;
mod top_talkers;

/// The example of issue 4, which must be accepted as written.
const EXAMPLE: &str = "\
interfaces: [eth0]
api:
  listen: 127.0.0.1:9180
  token_file: /etc/fulcrum/token
services:
  - name: web
    vip: 10.66.99.1
    port: 80
    protocol: tcp
    health:
      - type: http
        path: /
        expect_status: 200
        interval: 1s
        timeout: 500ms
        rise: 2
        fall: 2
    backends:
      - address: 10.66.0.11
      - address: 10.66.0.12
        weight: 2
      - address: 10.66.0.13
";

fn valid(text: &str) -> Config {
    parse(text, "f.yaml").unwrap_or_else(|e| panic!("rejected:\n{e}\n--- in:\n{text}"))
}

/// The one problem `text` has, as displayed.
fn problem(text: &str) -> String {
    let problems = problems(text);
    assert_eq!(
        problems.len(),
        1,
        "expected one problem, got {problems:#?}\n--- in:\n{text}"
    );
    problems[0].clone()
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, "f.yaml") {
        Ok(config) => panic!("accepted: {config:#?}\n--- in:\n{text}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

/// `EXAMPLE` with `from` replaced by `to`, which must occur in it.
fn edit(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from:?} is not in the example");
    EXAMPLE.replacen(from, to, 1)
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn backend(address: &str, weight: u32) -> Backend {
    Backend {
        address: ip(address),
        weight,
        drain: false,
    }
}

/// The message for a weight written as `found`.
fn weight_message(found: &str) -> String {
    format!(
        "'{found}' is not a weight; use a whole number from 1 to 1000 (Maglev's 65537-slot \
         table keeps shares proportional up to 1000 to 1; to stop new flows to a backend, set \
         `drain: true`)"
    )
}

#[test]
fn the_issue_example_parses_to_the_expected_model() {
    let expected = Config {
        instance: "default".to_owned(),
        interfaces: vec!["eth0".to_owned()],
        xdp_mode: XdpMode::Native,
        api: Api {
            listen: "127.0.0.1:9180".parse().expect("test address"),
            token_file: Some("/etc/fulcrum/token".into()),
        },
        services: vec![Service {
            name: "web".to_owned(),
            vip: ip("10.66.99.1"),
            port: 80,
            protocol: Protocol::Tcp,
            scheduler: Scheduler::FiveTuple,
            health: vec![HealthCheck {
                kind: CheckKind::Http(HttpCheck {
                    path: "/".to_owned(),
                    expect_status: 200,
                    expect_body: None,
                    host: None,
                }),
                port: 80,
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 2,
            }],
            health_rule: HealthRule::All,
            backends: vec![
                backend("10.66.0.11", 1),
                backend("10.66.0.12", 2),
                backend("10.66.0.13", 1),
            ],
            allow_local_vip: false,
            drain_period: Duration::ZERO,
            forwarding: Forwarding::L2Dsr,
            icmp_echo: true,
            announce: Announcement::default(),
        }],
        places: Default::default(),
        flow_sharing: None,
        flow_table: Default::default(),
        bgp: None,
        top_talkers: Default::default(),
    };
    assert_eq!(valid(EXAMPLE), expected);
}

#[test]
fn every_omitted_field_takes_its_default() {
    let config = valid(
        "\
interfaces: [eth0]
services:
  - name: bare
    vip: 10.0.0.1
    backends: [{address: 10.0.1.1}]
  - name: checked
    vip: 10.0.0.2
    port: 8080
    health:
      - type: tcp
      - type: http
      - type: https
      - type: dns
        query: example.com
    backends: []
",
    );
    assert_eq!(config.xdp_mode, XdpMode::Native);
    assert_eq!(config.api, Api::default());
    assert_eq!(config.api.listen.to_string(), "127.0.0.1:9180");
    assert_eq!(config.api.token_file, None);

    let bare = &config.services[0];
    assert_eq!(bare.port, 0, "no port means every port");
    assert_eq!(bare.protocol, Protocol::Tcp);
    assert_eq!(bare.scheduler, Scheduler::FiveTuple);
    assert_eq!(bare.health, []);
    assert_eq!(bare.health_rule, HealthRule::All);
    assert_eq!(
        bare.backends,
        [backend("10.0.1.1", 1)],
        "weight 1, not drained"
    );

    let checks = &config.services[1].health;
    for check in checks {
        assert_eq!(check.port, 8080, "{check:?} probes the service's port");
        assert_eq!(check.interval, Duration::from_secs(1), "{check:?}");
        assert_eq!(check.timeout, Duration::from_millis(500), "{check:?}");
        assert_eq!((check.rise, check.fall), (2, 2), "{check:?}");
    }
    let http = HttpCheck {
        path: "/".to_owned(),
        expect_status: 200,
        expect_body: None,
        host: None,
    };
    assert_eq!(checks[0].kind, CheckKind::Tcp);
    assert_eq!(checks[1].kind, CheckKind::Http(http.clone()));
    assert_eq!(
        checks[2].kind,
        CheckKind::Https {
            request: http,
            insecure: false
        }
    );
    assert_eq!(
        checks[3].kind,
        CheckKind::Dns(DnsCheck {
            query: "example.com".to_owned(),
            query_type: DnsType::A,
            expect_rcode: Rcode::NoError,
        })
    );
}

#[test]
fn empty_sections_mean_none() {
    let config = valid("interfaces: [eth0]\napi:\nservices:\n");
    assert_eq!((config.api, config.services), (Api::default(), vec![]));
}

#[test]
fn the_commented_example_file_parses_and_sets_every_field() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fulcrum.yaml");
    let config = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.services.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["web", "dns", "all-ports", "web6"]);
    let sharing = config.flow_sharing.as_ref().expect("flow_sharing");
    assert_eq!(sharing.peers.len(), 1);
    assert_eq!(
        sharing.multicast.as_ref().map(|m| &*m.interface),
        Some("eth0")
    );
    assert_eq!(config.flow_table.insert_budget, 20000);
    assert_eq!(config.top_talkers.top, 5);
    assert_eq!(config.top_talkers.ipv4_prefixes, [24, 20]);
    let [web, dns, all, web6] = &config.services[..] else {
        unreachable!("four services")
    };
    assert_eq!(web.health_rule, HealthRule::AtLeast(2));
    assert_eq!(web.health_rule.required(web.health.len()), 2);
    assert_eq!(web.health[1].port, 443);
    assert!(
        matches!(web.health[1].kind, CheckKind::Https { insecure: true, .. }),
        "{:?}",
        web.health[1]
    );
    assert!(web.backends[2].drain);
    assert_eq!(
        (dns.protocol, dns.scheduler),
        (Protocol::Udp, Scheduler::SourceIp)
    );
    assert_eq!((all.port, all.health[0].port), (0, 22));
    assert_eq!((web.forwarding, web.icmp_echo), (Forwarding::L2Dsr, true));
    assert!(web6.vip.is_ipv6() && web6.backends.iter().all(|b| b.address.is_ipv6()));
    assert!(
        matches!(web6.forwarding, Forwarding::Gue { port: 6080, tunnel } if tunnel.ipv4 != TunnelSource::Route && tunnel.ipv6 != TunnelSource::Route),
        "{:?}",
        web6.forwarding
    );
}

#[test]
fn every_setting_is_read() {
    let config = valid(
        "\
interfaces: [eth0, eth1]
xdp_mode: generic
api: {listen: '[::1]:8000'}
services:
  - name: dns_1
    vip: 10.0.0.1
    port: 53
    protocol: udp
    scheduler: source-ip
    health_rule: 1
    health:
      - {type: dns, query: example.org, query_type: AAAA, expect_rcode: NXDOMAIN, port: 5353, interval: 2m, timeout: 3s, rise: 1, fall: 5}
      - {type: https, path: /up, expect_status: 204, expect_body: fine, host: a.example, insecure: true}
    backends:
      - {address: 10.0.1.1, weight: 7, drain: true}
",
    );
    assert_eq!(config.interfaces, ["eth0", "eth1"]);
    assert_eq!(config.xdp_mode, XdpMode::Generic);
    assert_eq!(config.api.listen.to_string(), "[::1]:8000");
    let s = &config.services[0];
    assert_eq!(s.health_rule, HealthRule::AtLeast(1));
    let dns = &s.health[0];
    assert_eq!(
        (dns.port, dns.interval, dns.timeout, dns.rise, dns.fall),
        (5353, Duration::from_secs(120), Duration::from_secs(3), 1, 5)
    );
    assert_eq!(
        dns.kind,
        CheckKind::Dns(DnsCheck {
            query: "example.org".to_owned(),
            query_type: DnsType::Aaaa,
            expect_rcode: Rcode::NxDomain,
        })
    );
    assert_eq!(
        s.health[1].kind,
        CheckKind::Https {
            request: HttpCheck {
                path: "/up".to_owned(),
                expect_status: 204,
                expect_body: Some("fine".to_owned()),
                host: Some("a.example".to_owned()),
            },
            insecure: true,
        }
    );
    assert_eq!(
        s.backends,
        [Backend {
            address: ip("10.0.1.1"),
            weight: 7,
            drain: true
        }]
    );
}

#[test]
fn the_fleet_example_parses_with_bgp_and_flow_sharing() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet.yaml");
    let config = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let bgp = config.bgp.as_ref().expect("bgp");
    assert_eq!((bgp.asn, bgp.peers.len()), (65001, 1));
    assert_eq!(bgp.peers[0].hold_time, Duration::from_secs(9));
    let sharing = config.flow_sharing.as_ref().expect("flow_sharing");
    assert_eq!(sharing.peers.len(), 1);
    assert_eq!(config.services[0].backends.len(), 3);
}
