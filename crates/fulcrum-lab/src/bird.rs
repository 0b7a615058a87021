//! The ECMP lab router's BIRD config (multipath kernel export, static or BGP routes to
//! the VIP) and what the lab reads back from BIRD (paths, session state).

use std::net::{IpAddr, Ipv4Addr};

pub use crate::bgp_peers::Bird;

/// A BGP neighbour of the router.
#[derive(Clone, Debug)]
pub struct Neighbor {
    /// Protocol name in BIRD (`show protocols`), e.g. `lb1`.
    pub name: String,
    /// The neighbour's address.
    pub address: Ipv4Addr,
    /// The neighbour's ASN.
    pub asn: u32,
}

/// How the router learns the VIP's routes.
#[derive(Clone, Debug)]
pub enum Routes {
    /// A static multipath route to `prefix` via these next hops (no BGP).
    Static {
        /// The prefix, e.g. `10.78.99.1/32`.
        prefix: String,
        /// The ECMP next hops.
        via: Vec<Ipv4Addr>,
    },
    /// Passive BGP sessions to these neighbours; what they announce is installed.
    Bgp {
        /// The router's ASN.
        asn: u32,
        /// Hold time in seconds (3 or more); keepalives go at a third of it.
        hold_secs: u16,
        /// The neighbours.
        neighbors: Vec<Neighbor>,
    },
}

/// What goes into the router's `bird.conf`.
#[derive(Clone, Debug)]
pub struct BirdConfig {
    /// The router ID (one of the router's addresses).
    pub router_id: Ipv4Addr,
    /// The router's own address on the neighbours' subnet (BGP `local`).
    pub local: Ipv4Addr,
    /// Static routes or BGP.
    pub routes: Routes,
}

impl BirdConfig {
    /// The config text: a device protocol, a kernel protocol that exports every route with
    /// `merge paths yes` (so equal BGP paths become one ECMP route), and the routes.
    pub fn render(&self) -> String {
        let mut text = format!(
            "router id {};\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths yes;\n}}\n",
            self.router_id
        );
        match &self.routes {
            Routes::Static { prefix, via } => {
                let hops: String = via.iter().map(|v| format!(" via {v}")).collect();
                text.push_str(&format!(
                    "protocol static vip {{\n  ipv4;\n  route {prefix}{hops};\n}}\n"
                ));
            }
            Routes::Bgp {
                asn,
                hold_secs,
                neighbors,
            } => {
                for n in neighbors {
                    text.push_str(&format!(
                        "protocol bgp {name} {{\n  local {local} as {asn};\n  neighbor {addr} as {peer_asn};\n  passive on;\n  hold time {hold};\n  keepalive time {keep};\n  error wait time 1, 2;\n  graceful restart on;\n  ipv4 {{ import all; export none; }};\n}}\n",
                        name = n.name,
                        local = self.local,
                        addr = n.address,
                        peer_asn = n.asn,
                        hold = hold_secs,
                        keep = (hold_secs / 3).max(1),
                    ));
                }
            }
        }
        text
    }
}

/// The next hops of every path to `prefix` that `bird` holds (`birdc show route for
/// PREFIX`: one per BGP neighbour announcing it, or the static route's); empty when none.
pub fn next_hops(bird: &Bird, prefix: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = bird.birdc(&["show", "route", "for", prefix])?;
    Ok(parse_next_hops(&out))
}

/// The next hops of every path to `prefix` in `bird`, of either family (an IPv6 route's
/// next hops are IPv6 addresses).
pub fn ip_next_hops(bird: &Bird, prefix: &str) -> anyhow::Result<Vec<IpAddr>> {
    let out = bird.birdc(&["show", "route", "for", prefix])?;
    Ok(parse_next_hops(&out))
}

/// Whether `bird`'s BGP protocol `name` has its session up.
pub fn established(bird: &Bird, name: &str) -> bool {
    bird.birdc(&["show", "protocols", name])
        .is_ok_and(|out| out.contains("Established"))
}

/// The `via ADDR` next hops in `birdc show route` or `ip route show` output (one per path
/// of a multipath route, or the single one), sorted.
pub(crate) fn parse_next_hops<T: std::str::FromStr + Ord>(out: &str) -> Vec<T> {
    let mut hops: Vec<T> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort();
    hops.dedup();
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_a_multipath_and_a_single_route() {
        let multi = "Table master4:\n10.78.99.1/32        unicast [lb1 00:50:01.123] * (100) [AS65001i]\n\tvia 10.78.0.12 on eth0 weight 1\n\tvia 10.78.0.11 on eth0 weight 1\n";
        assert_eq!(
            parse_next_hops::<Ipv4Addr>(multi),
            vec![Ipv4Addr::new(10, 78, 0, 11), Ipv4Addr::new(10, 78, 0, 12)]
        );
        let single = "Table master4:\n10.78.99.1/32        unicast [lb2 00:50:01] * (100) [AS65001i]\n\tvia 10.78.0.12 on eth0\n";
        assert_eq!(
            parse_next_hops::<Ipv4Addr>(single),
            vec![Ipv4Addr::new(10, 78, 0, 12)]
        );
        assert!(parse_next_hops::<Ipv4Addr>("Table master4:\n").is_empty());
        let v6 = "Table master6:\nfd00:79:99::1/128    unicast [over4 07:50:01] * (100) [AS65001i]\n\tvia fd00:79::2 on eth0\n";
        assert_eq!(
            parse_next_hops::<IpAddr>(v6),
            vec!["fd00:79::2".parse::<IpAddr>().expect("address")]
        );
    }
}
