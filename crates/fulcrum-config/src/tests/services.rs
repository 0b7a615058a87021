//! Services and backends: names, addresses, weights, and what must be unique.

use super::{EXAMPLE, edit, problem, valid, weight_message};

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
