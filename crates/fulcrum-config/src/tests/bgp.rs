//! The `bgp:` section and the services' announce fields.

use std::{net::IpAddr, time::Duration};

use super::{problem, problems, valid};
use crate::{Announce, Announcement, Bgp, BgpPeer};

const BGP: &str = "\
interfaces: [eth0]
bgp:
  asn: 65001
  router_id: 10.0.2.11
  peers:
    - address: 10.0.2.1
      asn: 65000
services:
  - name: web
    vip: 10.0.100.1
    port: 80
    backends: [{address: 10.0.1.1}, {address: 10.0.1.2}]
";

fn bgp_edit(from: &str, to: &str) -> String {
    assert!(BGP.contains(from), "{from:?} is not in the base");
    BGP.replacen(from, to, 1)
}

#[test]
fn a_minimal_bgp_section_takes_every_default() {
    let config = valid(BGP);
    let expected = Bgp {
        asn: 65001,
        router_id: "10.0.2.11".parse().expect("address"),
        graceful_restart: Some(Duration::from_secs(120)),
        shutdown_delay: Duration::from_secs(2),
        listen: Some(Bgp::DEFAULT_LISTEN),
        next_hop_ipv6: None,
        peers: vec![BgpPeer {
            address: "10.0.2.1".parse().expect("address"),
            asn: 65000,
            port: 179,
            hold_time: Duration::from_secs(90),
            passive: false,
            md5_password_file: None,
            next_hop: None,
        }],
    };
    assert_eq!(config.bgp, Some(expected));
    assert_eq!(config.services[0].announce, Announcement::default());
}

#[test]
fn the_spec_example_parses_with_every_field() {
    let text = "\
interfaces: [eth0]
bgp:
  asn: 4200000001
  router_id: 10.0.2.11
  graceful_restart: off
  shutdown_delay: 500ms
  listen: 10.0.2.11:1179
  peers:
    - address: 10.0.2.1
      asn: 65000
      port: 1179
      hold_time: 0s
      passive: true
      md5_password_file: /etc/fulcrum/bgp-md5
      next_hop: 10.0.2.11
services:
  - name: web
    vip: 10.0.100.1
    port: 80
    announce: never
    min_healthy: 2
    med: 10
    local_pref: 200
    communities: [\"65000:100\", \"0:65535\"]
    large_communities: [\"65000:1:2\"]
    backends: [{address: 10.0.1.1}, {address: 10.0.1.2}]
";
    let config = valid(text);
    let bgp = config.bgp.expect("bgp");
    assert_eq!(bgp.asn, 4_200_000_001);
    assert_eq!(bgp.graceful_restart, None);
    assert_eq!(bgp.shutdown_delay, Duration::from_millis(500));
    assert_eq!(bgp.listen, Some("10.0.2.11:1179".parse().expect("address")));
    let peer = &bgp.peers[0];
    assert_eq!(peer.port, 1179);
    assert_eq!(peer.hold_time, Duration::ZERO);
    assert!(peer.passive);
    assert_eq!(
        peer.md5_password_file.as_deref(),
        Some(std::path::Path::new("/etc/fulcrum/bgp-md5"))
    );
    assert_eq!(peer.next_hop, Some(IpAddr::from([10, 0, 2, 11])));
    assert_eq!(
        config.services[0].announce,
        Announcement {
            mode: Announce::Never,
            min_healthy: 2,
            med: Some(10),
            local_pref: Some(200),
            communities: vec![(65000, 100), (0, 65535)],
            large_communities: vec![(65000, 1, 2)],
        }
    );
}

#[test]
fn missing_required_fields_are_named_at_their_parent() {
    let text = bgp_edit("  asn: 65001\n  router_id: 10.0.2.11\n", "");
    assert_eq!(
        problems(&text),
        [
            "f.yaml:3:3: bgp.asn: missing; add it, like `asn: 65001`",
            "f.yaml:3:3: bgp.router_id: missing; add it, like `router_id: 10.0.2.11`",
        ]
    );
    let text = bgp_edit("      asn: 65000\n", "");
    assert_eq!(
        problem(&text),
        "f.yaml:6:7: bgp.peers[0].asn: missing; add it, like `asn: 65000`"
    );
}

#[test]
fn out_of_range_timers_say_what_is_valid() {
    assert_eq!(
        problem(&bgp_edit("  peers:", "  graceful_restart: 5000s\n  peers:")),
        "f.yaml:5:21: bgp.graceful_restart: '5000s' is out of range; use whole seconds, \
         1s to 4095s, or `off`"
    );
    assert_eq!(
        problem(&bgp_edit(
            "asn: 65000\n",
            "asn: 65000\n      hold_time: 2s\n"
        )),
        "f.yaml:8:18: bgp.peers[0].hold_time: '2s' is too short (RFC 4271); use 0s (no \
         keepalives) or 3s to 65535s"
    );
    assert_eq!(
        problem(&bgp_edit(
            "asn: 65000\n",
            "asn: 65000\n      hold_time: 1500ms\n"
        )),
        "f.yaml:8:18: bgp.peers[0].hold_time: '1500ms' is out of range; use whole seconds, \
         0s (no keepalives) or 3s to 65535s"
    );
}

#[test]
fn listen_off_only_connects_out_and_refuses_passive_peers() {
    let off = bgp_edit("  peers:", "  listen: off\n  peers:");
    assert_eq!(valid(&off).bgp.expect("bgp").listen, None);
    assert_eq!(
        problem(&bgp_edit("  peers:", "  listen: 179\n  peers:")),
        "f.yaml:5:11: bgp.listen: '179' is not an address and port; write one like \
         10.0.2.11:179, or `off` to only connect out"
    );
    let passive = off.replace(
        "      asn: 65000\n",
        "      asn: 65000\n      passive: true\n",
    );
    assert_eq!(
        problem(&passive),
        "f.yaml:7:7: bgp.peers[0].passive: a passive peer must connect to us, but bgp.listen \
         is `off`; give bgp.listen an address or make the peer active"
    );
}

#[test]
fn bad_addresses_asns_and_duplicates_are_refused() {
    assert_eq!(
        problem(&bgp_edit("router_id: 10.0.2.11", "router_id: eleven")),
        "f.yaml:4:14: bgp.router_id: 'eleven' is not an IPv4 address; write four numbers \
         from 0 to 255, like 10.66.0.11"
    );
    assert_eq!(
        problem(&bgp_edit("asn: 65001", "asn: 0")),
        "f.yaml:3:8: bgp.asn: 0 is reserved (RFC 7607, RFC 6793); use an AS number from 1 \
         to 4294967295, like 65001"
    );
    let twice = bgp_edit(
        "      asn: 65000\n",
        "      asn: 65000\n    - address: 10.0.2.1\n      asn: 65002\n",
    );
    assert_eq!(
        problem(&twice),
        "f.yaml:8:16: bgp.peers[1].address: 10.0.2.1 is already bgp.peers[0] (line 6); list \
         each router once"
    );
    assert!(
        problem(&bgp_edit("  peers:", "  neighbours: []\n  peers:"))
            .contains("unknown field `neighbours`"),
    );
}

#[test]
fn bad_announce_fields_are_refused_where_they_are() {
    assert_eq!(
        problem(&bgp_edit(
            "    port: 80\n",
            "    port: 80\n    min_healthy: 3\n"
        )),
        "f.yaml:12:18: services[0].min_healthy: 3 is out of range; the service has 2 \
         backends, so use 1 to 2"
    );
    assert_eq!(
        problem(&bgp_edit(
            "    port: 80\n",
            "    port: 80\n    communities: [\"65000:100\", \"70000:1\"]\n"
        )),
        "f.yaml:12:32: services[0].communities[1]: '70000:1' is not a community; write \
         ASN:VALUE, two numbers from 0 to 65535, like 65000:100"
    );
    assert_eq!(
        problem(&bgp_edit(
            "    port: 80\n",
            "    port: 80\n    large_communities: [\"1:2\"]\n"
        )),
        "f.yaml:12:25: services[0].large_communities[0]: '1:2' is not a large community; \
         write GLOBAL:DATA1:DATA2, three numbers from 0 to 4294967295, like 65000:1:2"
    );
    assert!(
        problem(&bgp_edit(
            "    port: 80\n",
            "    port: 80\n    announce: sometimes\n"
        ))
        .starts_with("f.yaml:12:15: services[0].announce:"),
    );
}

#[test]
fn a_bgp_change_is_a_reload_change() {
    let old = valid(BGP);
    let new = valid(&bgp_edit("asn: 65000", "asn: 65002"));
    let diff = crate::diff(&old, &new);
    assert!(diff.bgp_changed);
    let new = valid(&bgp_edit("    port: 80\n", "    port: 80\n    med: 5\n"));
    let diff = crate::diff(&old, &new);
    assert!(!diff.bgp_changed);
    assert!(diff.changed[0].announce_changed);
}

#[test]
fn ipv6_peers_listen_on_both_families_and_take_an_ipv6_next_hop() {
    let text = bgp_edit(
        "  peers:\n    - address: 10.0.2.1\n      asn: 65000\n",
        "  next_hop_ipv6: 2001:db8:2::11\n  peers:\n    - address: 10.0.2.1\n      asn: 65000\n    \
         - address: 2001:db8:2::1\n      asn: 65002\n      next_hop: 10.0.2.11\n",
    );
    let bgp = valid(&text).bgp.expect("bgp");
    assert_eq!(
        bgp.next_hop_ipv6,
        Some("2001:db8:2::11".parse().expect("address"))
    );
    assert_eq!(
        bgp.peers[1].address,
        "2001:db8:2::1".parse::<IpAddr>().expect("address")
    );
    assert_eq!(bgp.listen, Some(Bgp::DEFAULT_LISTEN_IPV6));
    assert_eq!(bgp.listen, Some("[::]:179".parse().expect("address")));
    let explicit = text.replace("  peers:", "  listen: \"[2001:db8:2::11]:1179\"\n  peers:");
    assert_eq!(
        valid(&explicit).bgp.expect("bgp").listen,
        Some("[2001:db8:2::11]:1179".parse().expect("address"))
    );
}

#[test]
fn a_vip_with_no_next_hop_of_its_family_is_refused_where_the_next_hop_goes() {
    // An IPv6 session announcing an IPv4 VIP needs the peer's IPv4 next_hop.
    let text = bgp_edit("address: 10.0.2.1", "address: 2001:db8:2::1");
    assert_eq!(
        problem(&text),
        "f.yaml:6:7: bgp.peers[0].next_hop: required: services[0] announces the IPv4 VIP \
         10.0.100.1, and the session to 2001:db8:2::1 is IPv6, so it has no IPv4 address of \
         ours to send; give the IPv4 address routers forward the VIP's traffic to, like \
         `next_hop: 10.0.2.11`"
    );
    let never = text.replace("    port: 80\n", "    port: 80\n    announce: never\n");
    assert!(
        valid(&never).bgp.is_some(),
        "nothing announced, nothing needed"
    );
    let with_hop = text.replace(
        "      asn: 65000\n",
        "      asn: 65000\n      next_hop: 10.0.2.11\n",
    );
    assert_eq!(
        valid(&with_hop).bgp.expect("bgp").peers[0].next_hop,
        Some(IpAddr::from([10, 0, 2, 11]))
    );
}

#[test]
fn bad_ipv6_peers_and_next_hops_are_refused() {
    assert_eq!(
        problem(&bgp_edit("  peers:", "  next_hop_ipv6: fe80::1\n  peers:")),
        "f.yaml:5:18: bgp.next_hop_ipv6: fe80::1 cannot be the next hop; use a global \
         unicast IPv6 address of this host (not link-local, loopback or multicast), like \
         2001:db8::11"
    );
    assert_eq!(
        problem(&bgp_edit(
            "  peers:",
            "  next_hop_ipv6: 10.0.2.11\n  peers:"
        )),
        "f.yaml:5:18: bgp.next_hop_ipv6: '10.0.2.11' is not an IPv6 address; write one like \
         2001:db8::11"
    );
    assert_eq!(
        problem(&bgp_edit("address: 10.0.2.1", "address: fe80::1")),
        "f.yaml:6:16: bgp.peers[0].address: fe80::1 cannot be a peer; use a unicast \
         address, like 10.0.2.1 or 2001:db8::1 (link-local addresses are not supported)"
    );
    assert_eq!(
        problem(&bgp_edit("address: 10.0.2.1", "address: router")),
        "f.yaml:6:16: bgp.peers[0].address: 'router' is not an IP address; write an IPv4 or \
         IPv6 address, like 10.0.2.1 or 2001:db8::1"
    );
}

#[test]
fn an_ipv6_vip_announced_to_an_ipv4_peer_needs_next_hop_ipv6() {
    let v6 = bgp_edit(
        "    vip: 10.0.100.1\n    port: 80\n    backends: [{address: 10.0.1.1}, {address: 10.0.1.2}]\n",
        "    vip: 2001:db8:100::1\n    port: 80\n    backends: [{address: 2001:db8:200::10}]\n",
    );
    assert_eq!(
        problem(&v6),
        "f.yaml:3:3: bgp.next_hop_ipv6: required: services[0] announces the IPv6 VIP \
         2001:db8:100::1, and the session to bgp.peers[0] (10.0.2.1) is IPv4, so it has no \
         IPv6 address of ours to send; give the IPv6 address routers forward the VIP's \
         traffic to, like `next_hop_ipv6: 2001:db8::11`"
    );
    let with_hop = v6.replace("  peers:", "  next_hop_ipv6: 2001:db8:2::11\n  peers:");
    assert_eq!(
        valid(&with_hop).bgp.expect("bgp").next_hop_ipv6,
        Some("2001:db8:2::11".parse().expect("address"))
    );
    // An IPv6 session sends its own address: nothing to configure.
    let over6 = v6.replace("address: 10.0.2.1", "address: 2001:db8:2::1");
    assert!(valid(&over6).bgp.is_some());
}
