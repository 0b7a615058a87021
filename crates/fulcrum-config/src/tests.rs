//! Parsing and validation, seen from the operator's side: files in, models or messages out.

use std::{net::IpAddr, path::Path, time::Duration};

use super::*;

mod bgp;
mod forwarding;

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
        bgp: None,
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
fn unknown_field_at_top_level() {
    assert_eq!(
        problem(&format!("{EXAMPLE}listen: 0.0.0.0:80\n")),
        "f.yaml:23:1: listen: unknown field `listen`, expected one of instance, interfaces, \
         xdp_mode, api, services, flow_sharing, bgp"
    );
}

#[test]
fn unknown_field_in_a_service() {
    assert_eq!(
        problem(&edit("    protocol: tcp\n", "    proto: tcp\n")),
        "f.yaml:9:5: services[0].proto: unknown field `proto`, expected one of name, vip, port, \
         protocol, scheduler, health, health_rule, backends, allow_local_vip, drain_period, forwarding, gue_port, tunnel_source, icmp_echo, announce, min_healthy, med, local_pref, communities, large_communities"
    );
}

#[test]
fn unknown_field_in_a_health_check() {
    assert_eq!(
        problem(&edit("        rise: 2\n", "        retries: 2\n")),
        "f.yaml:16:9: services[0].health[0].retries: unknown field `retries`, expected one of \
         type, interval, timeout, rise, fall, port, path, expect_status, expect_body, host, \
         insecure, query, query_type, expect_rcode"
    );
}

#[test]
fn field_of_another_check_type() {
    assert_eq!(
        problem(&edit("        path: /\n", "        query: example.com\n")),
        "f.yaml:12:16: services[0].health[0].query: only dns checks take `query`, and this one \
         is http; remove it"
    );
}

#[test]
fn wrong_type_quotes_the_value_and_says_what_is_valid() {
    assert_eq!(
        problem(&edit("port: 80", "port: eighty")),
        "f.yaml:8:11: services[0].port: 'eighty' is not a whole number from 0 to 65535"
    );
    assert_eq!(
        problem(&edit("port: 80", "port: 65536")),
        "f.yaml:8:11: services[0].port: '65536' is not a whole number from 0 to 65535"
    );
    assert_eq!(
        problem(&edit("        weight: 2\n", "        drain: yes\n")),
        "f.yaml:21:16: services[0].backends[1].drain: 'yes' is not true or false"
    );
    assert_eq!(
        problem(&edit("[eth0]", "eth0")),
        "f.yaml:1:13: interfaces: expected a list (`[a, b]`, or one `- item` per line)"
    );
    assert_eq!(
        problem(&edit("protocol: tcp", "protocol: sctp")),
        "f.yaml:9:15: services[0].protocol: unknown variant `sctp`, expected one of tcp, udp"
    );
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        problem(&edit("[eth0]", "[eth0")),
        "f.yaml:2:4: interfaces: illegal placement of ':' indicator"
    );
    assert_eq!(
        problem(&edit("    port: 80\n", "    port: 80\n    port: 81\n")),
        "f.yaml:9:5: services[0]: duplicate mapping key `port` is not allowed here"
    );
}

#[test]
fn missing_required_field_is_reported_where_it_belongs() {
    assert_eq!(
        problem(&edit("    vip: 10.66.99.1\n", "")),
        "f.yaml:6:5: services[0].vip: missing; add it, like `vip: 10.66.99.1`"
    );
    assert_eq!(
        problem(&edit(
            "      - type: http\n        path: /\n",
            "      - path: /\n"
        )),
        "f.yaml:11:9: services[0].health[0].type: missing; add it, like `type: tcp`"
    );
    assert_eq!(
        problem(&edit(
            "      - address: 10.66.0.13\n",
            "      - weight: 3\n"
        )),
        "f.yaml:22:9: services[0].backends[2].address: missing; add it, like `address: \
         10.66.0.11`"
    );
    assert_eq!(
        problem(""),
        "f.yaml:1:1: interfaces: missing; add it, like `interfaces: [eth0]`"
    );
    assert_eq!(
        problem("interfaces: []\n"),
        "f.yaml:1:13: interfaces: the list is empty; name at least one interface to attach to, \
         like `interfaces: [eth0]`"
    );
}

#[test]
fn duplicate_backend() {
    assert_eq!(
        problem(&edit("address: 10.66.0.13", "address: 10.66.0.11")),
        "f.yaml:22:18: services[0].backends[2].address: 10.66.0.11 is already \
         services[0].backends[0] (line 19); list each backend once per service"
    );
}

/// The example followed by a second service named `name` on `vip`, port 80.
fn with_second_service(name: &str, vip: &str) -> String {
    format!(
        "{EXAMPLE}  - name: {name}\n    vip: {vip}\n    port: 80\n    backends: \
         [{{address: 10.66.0.21}}]\n"
    )
}

#[test]
fn duplicate_service_name() {
    assert_eq!(
        problem(&with_second_service("web", "10.66.99.2")),
        "f.yaml:23:11: services[1].name: 'web' is already the name of services[0] (line 6); \
         give each service its own name"
    );
}

#[test]
fn duplicate_vip_port_protocol() {
    assert_eq!(
        problem(&with_second_service("web2", "10.66.99.1")),
        "f.yaml:24:10: services[1].vip: 10.66.99.1:80/tcp is already served by 'web' (line 7); \
         each (vip, port, protocol) belongs to one service, so change one of them"
    );
    valid(
        &with_second_service("web2", "10.66.99.1")
            .replace("port: 80\n    backends", "port: 81\n    backends"),
    );
    valid(&with_second_service("web2", "10.66.99.1").replace(
        "port: 80\n    backends",
        "port: 80\n    protocol: udp\n    backends",
    ));
}

#[test]
fn timeout_not_shorter_than_interval() {
    assert_eq!(
        problem(&edit("timeout: 500ms", "timeout: 2s")),
        "f.yaml:15:18: services[0].health[0].timeout: 2s must be shorter than interval (1s)"
    );
    assert_eq!(
        problem(&edit("        timeout: 500ms\n", "").replace("interval: 1s", "interval: 500ms")),
        "f.yaml:14:19: services[0].health[0].interval: 500ms must be longer than timeout \
         (500ms, the default)"
    );
    assert_eq!(
        problem(&edit("interval: 1s", "interval: often")),
        "f.yaml:14:19: services[0].health[0].interval: 'often' is not a duration; write a \
         number and a unit, like 500ms, 1s or 2m"
    );
}

#[test]
fn health_rule_out_of_range() {
    let rule = |rule: &str| {
        edit(
            "    backends:\n",
            &format!("    health_rule: {rule}\n    backends:\n"),
        )
    };
    assert_eq!(
        problem(&rule("2")),
        "f.yaml:18:18: services[0].health_rule: 2 is out of range; with 1 health check, use \
         `all` or 1"
    );
    assert_eq!(
        problem(&rule("0")),
        "f.yaml:18:18: services[0].health_rule: 0 is out of range; with 1 health check, use \
         `all` or 1"
    );
    assert_eq!(
        problem(&rule("most")),
        "f.yaml:18:18: services[0].health_rule: 'most' is not a health rule; with 1 health \
         check, use `all` or 1"
    );
    assert_eq!(
        valid(&rule("1")).services[0].health_rule,
        HealthRule::AtLeast(1)
    );
    assert_eq!(valid(&rule("all")).services[0].health_rule, HealthRule::All);
}

#[test]
fn bad_ip_is_quoted() {
    assert_eq!(
        problem(&edit("10.66.0.12", "10.66.0.300")),
        "f.yaml:20:18: services[0].backends[1].address: '10.66.0.300' is not an IP address; \
         write an IPv4 address like 10.66.0.11 or an IPv6 address like 2001:db8::11"
    );
    assert_eq!(
        problem(&edit("vip: 10.66.99.1", "vip: 0.0.0.0")),
        "f.yaml:7:10: services[0].vip: 0.0.0.0 cannot be a VIP; use a unicast address, like \
         10.66.0.11"
    );
}

#[test]
fn bad_service_name() {
    assert_eq!(
        problem(&edit("name: web", "name: Web Site")),
        "f.yaml:6:11: services[0].name: 'Web Site' is not a service name; use 1 to 64 \
         lowercase letters, digits, '_' and '-', like web-1"
    );
}

#[test]
fn dns_check_without_query() {
    assert_eq!(
        problem(&edit(
            "type: http\n        path: /\n        expect_status: 200\n",
            "type: dns\n"
        )),
        "f.yaml:11:9: services[0].health[0].query: missing; add it, like `query: example.com`"
    );
}

#[test]
fn port_0_with_a_check_that_names_no_port() {
    assert_eq!(
        problem(&edit("    port: 80\n", "    port: 0\n")),
        "f.yaml:11:9: services[0].health[0].port: missing; the service covers every port \
         (port 0), so the check must name the port to probe, like `port: 80`"
    );
    let config =
        valid(&edit("    port: 80\n", "").replace("fall: 2\n", "fall: 2\n        port: 8080\n"));
    assert_eq!(
        (config.services[0].port, config.services[0].health[0].port),
        (0, 8080)
    );
}

#[test]
fn several_problems_are_reported_together_in_file_order() {
    let text = edit("timeout: 500ms", "timeout: 5s")
        .replace("name: web", "name: WEB")
        .replace("weight: 2", "weight: 0");
    assert_eq!(
        problems(&text),
        [
            "f.yaml:6:11: services[0].name: 'WEB' is not a service name; use 1 to 64 lowercase \
             letters, digits, '_' and '-', like web-1"
                .to_owned(),
            "f.yaml:15:18: services[0].health[0].timeout: 5s must be shorter than interval (1s)"
                .to_owned(),
            format!(
                "f.yaml:21:17: services[0].backends[1].weight: {}",
                weight_message("0")
            ),
        ]
    );
    let error = parse(&text, "f.yaml").expect_err("invalid");
    assert_eq!(
        error.to_string().lines().count(),
        3,
        "one line per problem:\n{error}"
    );
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("fulcrum-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("fulcrum.yaml");
    std::fs::write(&file, edit("timeout: 500ms", "timeout: 2s")).expect("write");
    let error = load(&file).expect_err("invalid");
    let expected = format!(
        "{}:15:18: services[0].health[0].timeout: 2s must be shorter than interval (1s)",
        file.display()
    );
    assert_eq!(error.to_string(), expected);

    let missing = dir.join("missing.yaml");
    let error = load(&missing).expect_err("missing");
    assert_eq!(
        error.to_string(),
        format!("{}: cannot read the configuration file", missing.display())
    );
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn health_rule_counts_the_checks_to_pass() {
    assert_eq!(HealthRule::All.required(3), 3);
    assert_eq!(HealthRule::AtLeast(2).required(3), 2);
    assert_eq!(HealthRule::All.required(0), 0, "no checks: always healthy");
}

fn weight_message(found: &str) -> String {
    format!(
        "'{found}' is not a weight; use a whole number from 1 to 1000 (Maglev's 65537-slot \
         table keeps shares proportional up to 1000 to 1; to stop new flows to a backend, set \
         `drain: true`)"
    )
}

#[test]
fn a_backend_cannot_be_its_own_vip() {
    assert_eq!(
        problem(&edit("address: 10.66.0.13", "address: 10.66.99.1")),
        "f.yaml:22:18: services[0].backends[2].address: 10.66.99.1 is the service's own VIP; a \
         backend must be another host (traffic to the VIP would loop back to the balancer)"
    );
}

#[test]
fn service_names_have_at_most_64_characters() {
    let longest = "a".repeat(64);
    let config = valid(&edit("name: web", &format!("name: {longest}")));
    assert_eq!(config.services[0].name, longest);
    assert_eq!(
        problem(&edit("name: web", &format!("name: {}", "a".repeat(65)))),
        "f.yaml:6:11: services[0].name: 'aaaaaaaaaaaaaaaaaaaa...' (65 characters) is not a \
         service name; use 1 to 64 lowercase letters, digits, '_' and '-', like web-1"
    );
    // A huge name is not echoed back whole.
    let huge = problem(&edit(
        "name: web",
        &format!("name: {}", "b".repeat(5_000_000)),
    ));
    assert!(
        huge.len() < 200 && huge.contains("(5000000 characters)"),
        "{huge}"
    );
    assert_eq!(
        problem(&edit("name: web", "name: Web")),
        "f.yaml:6:11: services[0].name: 'Web' is not a service name; use 1 to 64 lowercase \
         letters, digits, '_' and '-', like web-1"
    );
}

#[test]
fn weights_have_one_range_and_one_message() {
    let config = valid(&edit("weight: 2", "weight: 1000"));
    assert_eq!(config.services[0].backends[1].weight, 1000);
    for weight in ["0", "1001", "1000000", "-1", "abc", "4294967296", "1.5"] {
        assert_eq!(
            problem(&edit("weight: 2", &format!("weight: {weight}"))),
            format!(
                "f.yaml:21:17: services[0].backends[1].weight: {}",
                weight_message(weight)
            ),
            "weight: {weight}"
        );
    }
}

#[test]
fn a_binary_file_is_named_with_its_position() {
    let dir = std::env::temp_dir().join(format!("fulcrum-config-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("fulcrum.yaml");
    let mut bytes = b"interfaces: [eth0]\nservices:\n  - name: w".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x01]);
    std::fs::write(&file, &bytes).expect("write");
    let error = load(&file).expect_err("binary");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:3:12: byte 0xff at offset 40 is not UTF-8 text; the configuration must be a \
             UTF-8 YAML file (is this the right file?)",
            file.display()
        )
    );
    // One problem, as the API and `fulcrum reload` show it.
    assert_eq!(error.problems().len(), 1);
    std::fs::remove_dir_all(&dir).expect("clean up");
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
