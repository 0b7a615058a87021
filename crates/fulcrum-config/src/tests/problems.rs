//! How problems are shown: unknown fields, wrong types, YAML syntax, missing fields, several
//! problems at once, and the file they are in.

use super::{EXAMPLE, edit, problem, problems, weight_message};
use crate::{ConfigError, load, parse};

#[test]
fn unknown_field_at_top_level() {
    assert_eq!(
        problem(&format!("{EXAMPLE}listen: 0.0.0.0:80\n")),
        "f.yaml:23:1: listen: unknown field `listen`, expected one of instance, interfaces, \
         xdp_mode, api, services, flow_sharing, flow_table, bgp, top_talkers"
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
