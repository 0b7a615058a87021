//! IPv6 addresses, forwarding modes, tunnel sources and ICMP echo: what is accepted, what
//! each mistake says and where, and what a reload of them changes.

use super::{ip, problem, problems, valid};
use crate::*;

/// A GUE service on IPv6, every new field written.
const SIX: &str = "\
interfaces: [eth0]
services:
  - name: web6
    vip: 2001:db8:100::1
    port: 80
    forwarding: gue
    gue_port: 7000
    tunnel_source: { ipv4: 192.0.2.0/28, ipv6: \"2001:db8:ffff::5\" }
    icmp_echo: false
    backends:
      - address: 2001:db8:200::10
      - address: 2001:db8:200::11
        weight: 3
";

fn six(from: &str, to: &str) -> String {
    assert!(SIX.contains(from), "{from:?} is not in the IPv6 example");
    SIX.replacen(from, to, 1)
}

/// A one-service file with `extra` lines (indented as service fields) and `backends`.
fn service(vip: &str, extra: &str, backends: &[&str]) -> String {
    let mut text =
        format!("interfaces: [eth0]\nservices:\n  - name: s\n    vip: {vip}\n    port: 80\n");
    for line in extra.lines() {
        text.push_str(&format!("    {line}\n"));
    }
    text.push_str("    backends:\n");
    for b in backends {
        text.push_str(&format!("      - address: {b}\n"));
    }
    text
}

#[test]
fn an_ipv6_gue_service_parses_with_every_field() {
    let config = valid(SIX);
    let s = &config.services[0];
    assert_eq!(s.vip, ip("2001:db8:100::1"));
    assert_eq!(
        s.forwarding,
        Forwarding::Gue {
            tunnel: Tunnel {
                ipv4: TunnelSource::Prefix {
                    network: ip("192.0.2.0"),
                    len: 28
                },
                ipv6: TunnelSource::Fixed(ip("2001:db8:ffff::5")),
            },
            port: 7000,
        }
    );
    assert!(!s.icmp_echo);
    let backends: Vec<(IpAddr, u32)> = s.backends.iter().map(|b| (b.address, b.weight)).collect();
    assert_eq!(
        backends,
        [(ip("2001:db8:200::10"), 1), (ip("2001:db8:200::11"), 3)]
    );
    assert_eq!(s.forwarding.to_string(), "gue");
}

use std::net::IpAddr;

#[test]
fn new_fields_take_their_defaults() {
    let l2 = valid(&service("10.0.0.1", "", &["10.0.1.1"]));
    assert_eq!(l2.services[0].forwarding, Forwarding::L2Dsr);
    assert!(l2.services[0].icmp_echo, "echo is answered by default");
    let gue = valid(&service("10.0.0.1", "forwarding: gue", &["10.0.1.1"]));
    assert_eq!(
        gue.services[0].forwarding,
        Forwarding::Gue {
            tunnel: Tunnel {
                ipv4: TunnelSource::Route,
                ipv6: TunnelSource::Route
            },
            port: 6080
        },
        "the route's source, port 6080"
    );
    let ipip = valid(&service(
        "10.0.0.1",
        "forwarding: ipip\ntunnel_source: {ipv6: \"2001:db8::/96\"}",
        &["10.0.1.1"],
    ));
    assert_eq!(
        ipip.services[0].forwarding,
        Forwarding::Ipip(Tunnel {
            ipv4: TunnelSource::Route,
            ipv6: TunnelSource::Prefix {
                network: ip("2001:db8::"),
                len: 96
            }
        })
    );
    let l2_six = valid(&service("2001:db8::1", "", &["2001:db8::10"]));
    assert_eq!(l2_six.services[0].backends[0].address, ip("2001:db8::10"));
}

#[test]
fn an_ipv4_vip_may_be_tunnelled_to_ipv6_backends_but_not_switched_to_them() {
    for mode in ["ipip", "gue"] {
        let config = valid(&service(
            "10.0.0.1",
            &format!("forwarding: {mode}"),
            &["10.0.1.1", "2001:db8::10"],
        ));
        assert_eq!(config.services[0].backends[1].address, ip("2001:db8::10"));
    }
    assert_eq!(
        problem(&service("10.0.0.1", "", &["10.0.1.1", "2001:db8::10"])),
        "f.yaml:8:18: services[0].backends[1].address: 2001:db8::10 is IPv6, but the VIP \
         10.0.0.1 is IPv4; with `forwarding: l2-dsr` the backends have the VIP's family \
         (`forwarding: ipip` or `gue` tunnels IPv4 to IPv6 backends)"
    );
}

#[test]
fn an_ipv6_vip_needs_ipv6_backends_in_every_mode() {
    assert_eq!(
        problem(&six("address: 2001:db8:200::11", "address: 10.0.1.1")),
        "f.yaml:12:18: services[0].backends[1].address: 10.0.1.1 is IPv4, but the VIP \
         2001:db8:100::1 is IPv6; an IPv6 packet is not tunnelled in IPv4 (only 4in4, 6in6 \
         and 4in6), so give the service IPv6 backends"
    );
    assert_eq!(
        problem(&service("2001:db8::1", "", &["10.0.1.1"])),
        "f.yaml:7:18: services[0].backends[0].address: 10.0.1.1 is IPv4, but the VIP \
         2001:db8::1 is IPv6; an IPv6 VIP needs IPv6 backends"
    );
}

#[test]
fn tunnel_fields_on_a_mode_that_does_not_take_them_are_named() {
    let l2 = six("    forwarding: gue\n", "");
    assert_eq!(
        problems(&l2),
        [
            "f.yaml:6:15: services[0].gue_port: only `forwarding: gue` takes `gue_port`, and \
             this service is l2-dsr; remove it",
            "f.yaml:7:20: services[0].tunnel_source: only `forwarding: ipip` and `gue` take \
             `tunnel_source`, and this service is l2-dsr (its packets keep the client's \
             source); remove it, or set `forwarding`",
        ]
    );
    assert_eq!(
        problem(&six("forwarding: gue", "forwarding: ipip")),
        "f.yaml:7:15: services[0].gue_port: only `forwarding: gue` takes `gue_port`, and this \
         service is ipip; remove it"
    );
}

#[test]
fn unknown_mode_and_port_0_are_refused() {
    assert_eq!(
        problem(&six("forwarding: gue", "forwarding: gre")),
        "f.yaml:6:17: services[0].forwarding: 'gre' is not a forwarding mode; use l2-dsr (the \
         default), ipip or gue"
    );
    assert_eq!(
        problem(&six("gue_port: 7000", "gue_port: 0")),
        "f.yaml:7:15: services[0].gue_port: 0 is not a UDP port; use 1 to 65535, the port the \
         backends decapsulate on (6080 by default)"
    );
    assert_eq!(
        problem(&six("gue_port: 7000", "gue_port: 70000")),
        "f.yaml:7:15: services[0].gue_port: '70000' is not a whole number from 0 to 65535"
    );
}

#[test]
fn tunnel_sources_are_checked_by_family_prefix_and_host_bits() {
    // The field's text starts at column 28 (ipv4) and 10 characters after ipv4's text.
    let source = |v4: &str, v6: &str| {
        let text = problem(&six(
            "{ ipv4: 192.0.2.0/28, ipv6: \"2001:db8:ffff::5\" }",
            &format!("{{ ipv4: \"{v4}\", ipv6: \"{v6}\" }}"),
        ));
        let v6_at = format!(
            "f.yaml:8:{}: services[0].tunnel_source.ipv6",
            28 + v4.len() + 10
        );
        text.replace(&v6_at, "V6")
    };
    let v4_at = "f.yaml:8:28: services[0].tunnel_source.ipv4";
    let v6_at = "V6";
    assert_eq!(
        source("2001:db8::5", "2001:db8::6"),
        format!(
            "{v4_at}: '2001:db8::5' is not an IPv4 address; write an IPv4 address like \
             192.0.2.5 (every packet from it), or a prefix like 192.0.2.0/28 (a source per flow)"
        )
    );
    assert_eq!(
        source("192.0.2.5", "192.0.2.6"),
        format!(
            "{v6_at}: '192.0.2.6' is not an IPv6 address; write an IPv6 address like \
             2001:db8::5 (every packet from it), or a prefix like 2001:db8::/112 (a source per \
             flow)"
        )
    );
    assert_eq!(
        source("192.0.2.1/28", "2001:db8::/112"),
        format!(
            "{v4_at}: '192.0.2.1/28' has host bits set; the network of a /28 around it is \
             192.0.2.0/28"
        )
    );
    assert_eq!(
        source("192.0.2.0/28", "2001:db8::/64"),
        format!(
            "{v6_at}: '2001:db8::/64' has no valid prefix length; use /96 to /128 (per-flow \
             sources vary the last 32 bits only)"
        )
    );
    assert_eq!(
        source("10.0.0.0/4", "2001:db8::/112"),
        format!(
            "{v4_at}: '10.0.0.0/4' has no valid prefix length; use /8 to /32 (a source range \
             wider than a /8 is not one network)"
        )
    );
    assert_eq!(
        source("224.0.0.1", "2001:db8::"),
        format!(
            "{v4_at}: 224.0.0.1 cannot be a tunnel source; use a unicast address, like 10.66.0.11"
        )
    );
    assert_eq!(
        problem(&six("ipv6: \"2001:db8:ffff::5\" }", "ipv6: x, gre: 1 }")),
        "f.yaml:8:51: services[0].tunnel_source.gre: unknown field `gre`, expected one of ipv4, ipv6"
    );
}

#[test]
fn ipv6_addresses_that_cannot_serve_are_refused() {
    let vip = |vip: &str| problem(&six("vip: 2001:db8:100::1", &format!("vip: \"{vip}\"")));
    let at = "f.yaml:4:10: services[0].vip";
    assert_eq!(
        vip("fe80::1"),
        format!(
            "{at}: fe80::1 cannot be a VIP; link-local addresses need an interface; use a \
             global or unique local address"
        )
    );
    assert_eq!(
        vip("::ffff:10.0.0.1"),
        format!(
            "{at}: ::ffff:10.0.0.1 cannot be a VIP; it is an IPv4 address in IPv6 form; write \
             the IPv4 address itself"
        )
    );
    assert_eq!(
        vip("ff02::1"),
        format!("{at}: ff02::1 cannot be a VIP; use a unicast address, like 2001:db8::11")
    );
    assert_eq!(
        vip("2001:db8::g"),
        format!(
            "{at}: '2001:db8::g' is not an IP address; write an IPv4 address like 10.66.0.11 \
             or an IPv6 address like 2001:db8::11"
        )
    );
}

#[test]
fn ipv6_duplicates_are_found_however_they_are_written() {
    assert_eq!(
        problem(&six(
            "address: 2001:db8:200::11",
            "address: 2001:0db8:200:0::10"
        )),
        "f.yaml:12:18: services[0].backends[1].address: 2001:db8:200::10 is already \
         services[0].backends[0] (line 11); list each backend once per service"
    );
    let two = format!(
        "{SIX}  - name: again\n    vip: 2001:db8:100:0::1\n    port: 80\n    forwarding: gue\n    \
         icmp_echo: false\n    backends: []\n"
    );
    assert_eq!(
        problem(&two),
        "f.yaml:15:10: services[1].vip: [2001:db8:100::1]:80/tcp is already served by 'web6' \
         (line 4); each (vip, port, protocol) belongs to one service, so change one of them"
    );
}

#[test]
fn services_of_one_vip_agree_on_icmp_echo() {
    let other = |echo: &str| {
        format!(
            "{SIX}  - name: dns\n    vip: 2001:db8:100::1\n    port: 53\n{echo}    backends: []\n"
        )
    };
    assert_eq!(
        problem(&other("")),
        "f.yaml:15:10: services[1].icmp_echo: true here but false for services[0] (line 9) on \
         the same VIP; echo is answered per VIP, so give every service of 2001:db8:100::1 the \
         same value"
    );
    assert_eq!(valid(&other("    icmp_echo: false\n")).services.len(), 2);
}

/// The diff between `SIX` and `SIX` edited.
fn reload(from: &str, to: &str) -> ConfigDiff {
    diff(&valid(SIX), &valid(&six(from, to)))
}

fn web6(changes: ServiceDiff) -> ConfigDiff {
    ConfigDiff {
        changed: vec![ServiceDiff {
            name: "web6".to_owned(),
            ..changes
        }],
        ..ConfigDiff::default()
    }
}

#[test]
fn a_new_forwarding_mode_or_tunnel_setting_updates_the_service_in_place() {
    let forwarding = web6(ServiceDiff {
        forwarding_changed: true,
        ..ServiceDiff::default()
    });
    assert_eq!(
        reload("    gue_port: 7000\n", "    gue_port: 7001\n"),
        forwarding
    );
    assert_eq!(
        reload("ipv4: 192.0.2.0/28", "ipv4: 192.0.2.16/28"),
        forwarding
    );
    let ipip = six("    gue_port: 7000\n", "").replace("forwarding: gue", "forwarding: ipip");
    assert_eq!(diff(&valid(SIX), &valid(&ipip)), forwarding, "gue to ipip");
    assert_eq!(
        reload("icmp_echo: false", "icmp_echo: true"),
        web6(ServiceDiff {
            icmp_echo_changed: true,
            ..ServiceDiff::default()
        })
    );
    assert_eq!(
        reload(
            "      - address: 2001:db8:200::10\n",
            "      - address: 2001:db8:200::10\n      - address: 2001:db8:200::12\n"
        ),
        web6(ServiceDiff {
            backends_added: vec![ip("2001:db8:200::12")],
            ..ServiceDiff::default()
        })
    );
    assert!(reload("2001:db8:200::10", "2001:db8:200:0::10").is_empty());
}

#[test]
fn the_ipv6_example_file_parses() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ipv6.yaml");
    let config = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let modes: Vec<(&str, &str, bool)> = (config.services.iter())
        .map(|s| (&*s.name, s.forwarding.mode(), s.icmp_echo))
        .collect();
    assert_eq!(
        modes,
        [
            ("web6", "l2-dsr", true),
            ("api6", "ipip", true),
            ("dns4", "gue", false)
        ]
    );
    assert!(config.api.listen.is_ipv6());
    assert!(config.services[2].vip.is_ipv4());
    assert!(
        config.services[2]
            .backends
            .iter()
            .all(|b| b.address.is_ipv6())
    );
}
