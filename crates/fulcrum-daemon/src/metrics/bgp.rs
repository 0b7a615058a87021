//! `fulcrum_bgp_*`: the speaker's peers and routes.

use super::Exposition;
use crate::bgp::BgpStatus;

/// Session states in the order RFC 4271 lists them, one `fulcrum_bgp_peer_state` series each.
const STATES: [&str; 6] = [
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

/// The BGP families; nothing when BGP is not configured.
pub fn render_bgp(status: &BgpStatus) -> String {
    let mut out = Exposition::default();
    if !status.enabled {
        return out.finish();
    }
    out.family(
        "fulcrum_bgp_announce_gate",
        "gauge",
        "1 while routes may be announced, 0 while announcing is held back.",
    );
    out.sample(
        "fulcrum_bgp_announce_gate",
        &[],
        f64::from(u8::from(status.announce_gate)),
    );
    out.family(
        "fulcrum_bgp_desired_routes",
        "gauge",
        "VIP routes that qualify for announcement now.",
    );
    out.sample(
        "fulcrum_bgp_desired_routes",
        &[],
        status.desired.len() as f64,
    );
    out.family(
        "fulcrum_bgp_peer_up",
        "gauge",
        "1 while the session with the peer is Established.",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        let up = u8::from(p.state == "Established");
        out.sample("fulcrum_bgp_peer_up", &[("peer", &peer)], f64::from(up));
    }
    out.family(
        "fulcrum_bgp_peer_state",
        "gauge",
        "1 for the session's current state (RFC 4271 names), 0 for the others.",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        for state in STATES {
            let value = u8::from(p.state == state);
            out.sample(
                "fulcrum_bgp_peer_state",
                &[("peer", &peer), ("state", state)],
                f64::from(value),
            );
        }
    }
    out.family(
        "fulcrum_bgp_peer_uptime_seconds",
        "gauge",
        "Seconds since the session reached Established; 0 when it is not.",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        let uptime = p.uptime_seconds.unwrap_or(0) as f64;
        out.sample(
            "fulcrum_bgp_peer_uptime_seconds",
            &[("peer", &peer)],
            uptime,
        );
    }
    out.family(
        "fulcrum_bgp_peer_announced_prefixes",
        "gauge",
        "Prefixes the peer has from us.",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        let n = p.announced.len() as f64;
        out.sample("fulcrum_bgp_peer_announced_prefixes", &[("peer", &peer)], n);
    }
    out.family(
        "fulcrum_bgp_peer_not_announced_prefixes",
        "gauge",
        "Desired prefixes the peer does not get: a family it did not offer, or no next hop \
         of that family (the API says which).",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        let n = p.not_announced.len() as f64;
        out.sample(
            "fulcrum_bgp_peer_not_announced_prefixes",
            &[("peer", &peer)],
            n,
        );
    }
    out.family(
        "fulcrum_bgp_peer_family",
        "gauge",
        "1 for each address family negotiated with the peer (ipv4-unicast, ipv6-unicast).",
    );
    for p in &status.peers {
        let peer = p.address.to_string();
        for family in ["ipv4-unicast", "ipv6-unicast"] {
            let on = u8::from(p.families.iter().any(|f| f == family));
            out.sample(
                "fulcrum_bgp_peer_family",
                &[("peer", &peer), ("family", family)],
                f64::from(on),
            );
        }
    }
    out.finish()
}

#[cfg(test)]
pub(super) mod tests {
    use crate::bgp::{BgpPeerStatus, BgpStatus};

    /// Two peers, one up with a route: what promtool checks with the rest.
    pub(in crate::metrics) fn status() -> BgpStatus {
        let peer = |last: u8, state: &str| BgpPeerStatus {
            address: [10, 0, 2, last].into(),
            asn: 65000,
            state: state.to_owned(),
            uptime_seconds: (state == "Established").then_some(61),
            last_error: None,
            announced: vec!["10.0.100.1/32".to_owned()],
            families: vec!["ipv4-unicast".to_owned()],
            not_announced: vec![crate::bgp::NotAnnounced {
                prefix: "2001:db8:100::1/128".to_owned(),
                reason: "the peer did not offer IPv6 unicast".to_owned(),
            }],
        };
        BgpStatus {
            enabled: true,
            asn: Some(65001),
            router_id: Some([10, 0, 2, 11].into()),
            announce_gate: true,
            desired: vec!["10.0.100.1/32".to_owned()],
            peers: vec![peer(1, "Established"), peer(2, "Connect")],
        }
    }

    #[test]
    fn peers_have_state_uptime_and_routes() {
        let text = super::render_bgp(&status());
        for line in [
            "fulcrum_bgp_peer_up{peer=\"10.0.2.1\"} 1",
            "fulcrum_bgp_peer_up{peer=\"10.0.2.2\"} 0",
            "fulcrum_bgp_peer_state{peer=\"10.0.2.2\",state=\"Connect\"} 1",
            "fulcrum_bgp_peer_uptime_seconds{peer=\"10.0.2.1\"} 61",
            "fulcrum_bgp_peer_announced_prefixes{peer=\"10.0.2.1\"} 1",
            "fulcrum_bgp_desired_routes 1",
            "fulcrum_bgp_peer_not_announced_prefixes{peer=\"10.0.2.1\"} 1",
            "fulcrum_bgp_peer_family{peer=\"10.0.2.1\",family=\"ipv4-unicast\"} 1",
            "fulcrum_bgp_peer_family{peer=\"10.0.2.1\",family=\"ipv6-unicast\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert_eq!(super::render_bgp(&BgpStatus::default()), "");
    }
}
