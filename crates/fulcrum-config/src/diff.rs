//! What a reload changes, so that only the difference is applied and everything that did
//! not change keeps its flows.

use std::{collections::HashMap, net::IpAddr};

use crate::model::{Backend, Config, Service};

/// The difference between the running configuration and a new one. Services are matched by
/// name; a service that did not change appears nowhere. Apply removals before additions: a
/// renamed service, or one whose (vip, port, protocol) changed, is both removed and added,
/// and the two may claim the same (vip, port, protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `instance` changed: the pinned state moves, which only a restart can do.
    pub instance_changed: bool,
    /// `interfaces` changed: the program must be attached to or detached from interfaces.
    pub interfaces_changed: bool,
    /// `xdp_mode` changed: every attachment must be redone.
    pub xdp_mode_changed: bool,
    /// `api` changed: the listener must be rebound or the token reread.
    pub api_changed: bool,
    /// `flow_sharing` changed: flow sharing restarts with the new settings (turning it on
    /// or off takes a restart: the data plane's ring of new flows is sized at load).
    pub flow_sharing_changed: bool,
    /// `flow_table` changed: its settings are given to the data plane when it is loaded,
    /// so only a restart applies them.
    pub flow_table_changed: bool,
    /// `top_talkers` changed: its sampling and prefix lengths are set in the data plane
    /// when it is loaded, so only a restart applies them.
    pub top_talkers_changed: bool,
    /// `bgp` changed: the speaker is reconfigured (peers added, removed or reset), which a
    /// reload applies.
    pub bgp_changed: bool,
    /// Services only in the new configuration, or whose (vip, port, protocol) changed; in
    /// the new file's order.
    pub added: Vec<String>,
    /// Services only in the old configuration, or whose (vip, port, protocol) changed; in
    /// the old file's order.
    pub removed: Vec<String>,
    /// Services kept with the same (vip, port, protocol) but something else changed; in the
    /// new file's order.
    pub changed: Vec<ServiceDiff>,
}

impl ConfigDiff {
    /// True when the reload changes nothing, so there is nothing to apply or to log.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// What changed in a service that stays in place, and so keeps its flows. Backends are
/// matched by address; their order in the file does not matter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDiff {
    /// The service's name, the same in both configurations.
    pub name: String,
    /// `scheduler` changed: the Maglev table must be recomputed with the new hash.
    pub scheduler_changed: bool,
    /// `health` or `health_rule` changed (including the checks' order): the checks must
    /// be restarted.
    pub health_changed: bool,
    /// `forwarding`, `gue_port` or `tunnel_source` changed: the service is updated in
    /// place (its flows keep their backends, which are resolved again for the new mode).
    pub forwarding_changed: bool,
    /// `icmp_echo` changed: the VIP's echo answering is switched.
    pub icmp_echo_changed: bool,
    /// Backends that start receiving new flows (new order).
    pub backends_added: Vec<IpAddr>,
    /// Backends that stop receiving new flows (old order).
    pub backends_removed: Vec<IpAddr>,
    /// Backends kept whose weight changed (new order).
    pub reweighted: Vec<Reweight>,
    /// Backends kept whose drain flag changed (new order).
    pub drain_changed: Vec<DrainChange>,
    /// The announce fields changed: routes are recomputed, nothing else.
    pub announce_changed: bool,
}

impl ServiceDiff {
    fn is_empty(&self) -> bool {
        *self
            == ServiceDiff {
                name: self.name.clone(),
                ..ServiceDiff::default()
            }
    }
}

/// A backend whose share of new flows changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reweight {
    /// The backend.
    pub address: IpAddr,
    /// Its weight before.
    pub old: u32,
    /// Its weight now.
    pub new: u32,
}

/// A backend being drained or undrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainChange {
    /// The backend.
    pub address: IpAddr,
    /// Whether it is drained now.
    pub drain: bool,
}

/// Compares two valid configurations for a reload; see [`ConfigDiff`] for how services
/// are matched.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let olds: HashMap<&str, &Service> = old.services.iter().map(|s| (&*s.name, s)).collect();
    let news: HashMap<&str, &Service> = new.services.iter().map(|s| (&*s.name, s)).collect();
    let kept =
        |a: &Service, b: &Service| (a.vip, a.port, a.protocol) == (b.vip, b.port, b.protocol);
    let mut d = ConfigDiff {
        instance_changed: old.instance != new.instance,
        interfaces_changed: old.interfaces != new.interfaces,
        xdp_mode_changed: old.xdp_mode != new.xdp_mode,
        api_changed: old.api != new.api,
        flow_sharing_changed: old.flow_sharing != new.flow_sharing,
        flow_table_changed: old.flow_table != new.flow_table,
        top_talkers_changed: old.top_talkers != new.top_talkers,
        bgp_changed: old.bgp != new.bgp,
        ..ConfigDiff::default()
    };
    for o in &old.services {
        if !news.get(&*o.name).is_some_and(|n| kept(o, n)) {
            d.removed.push(o.name.clone());
        }
    }
    for n in &new.services {
        match olds.get(&*n.name) {
            Some(o) if kept(o, n) => {
                let changes = service_diff(o, n);
                if !changes.is_empty() {
                    d.changed.push(changes);
                }
            }
            _ => d.added.push(n.name.clone()),
        }
    }
    d
}

fn service_diff(old: &Service, new: &Service) -> ServiceDiff {
    let olds: HashMap<IpAddr, &Backend> = old.backends.iter().map(|b| (b.address, b)).collect();
    let news: HashMap<IpAddr, &Backend> = new.backends.iter().map(|b| (b.address, b)).collect();
    let mut d = ServiceDiff {
        name: new.name.clone(),
        scheduler_changed: old.scheduler != new.scheduler,
        health_changed: (&old.health, old.health_rule) != (&new.health, new.health_rule),
        announce_changed: old.announce != new.announce,
        forwarding_changed: old.forwarding != new.forwarding,
        icmp_echo_changed: old.icmp_echo != new.icmp_echo,
        ..ServiceDiff::default()
    };
    d.backends_removed = (old.backends.iter())
        .filter(|b| !news.contains_key(&b.address))
        .map(|b| b.address)
        .collect();
    for n in &new.backends {
        let Some(o) = olds.get(&n.address) else {
            d.backends_added.push(n.address);
            continue;
        };
        if o.weight != n.weight {
            d.reweighted.push(Reweight {
                address: n.address,
                old: o.weight,
                new: n.weight,
            });
        }
        if o.drain != n.drain {
            d.drain_changed.push(DrainChange {
                address: n.address,
                drain: n.drain,
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
interfaces: [eth0]
services:
  - name: web
    vip: 10.66.99.1
    port: 80
    health: [{type: tcp}]
    backends:
      - address: 10.66.0.11
      - address: 10.66.0.12
        weight: 2
  - name: dns
    vip: 10.66.99.2
    port: 53
    protocol: udp
    backends:
      - address: 10.66.0.21
";

    /// The diff from `BASE` to `BASE` with `from` replaced by `to`.
    fn diff_to(from: &str, to: &str) -> ConfigDiff {
        assert!(BASE.contains(from), "{from:?} is not in the base");
        let parse = |text: &str| {
            crate::parse(text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
        };
        diff(&parse(BASE), &parse(&BASE.replacen(from, to, 1)))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    /// A diff of `web` alone, with everything else unchanged.
    fn web(changes: ServiceDiff) -> ConfigDiff {
        ConfigDiff {
            changed: vec![ServiceDiff {
                name: "web".to_owned(),
                ..changes
            }],
            ..ConfigDiff::default()
        }
    }

    #[test]
    fn no_change_is_empty() {
        let d = diff_to("", "");
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(d, ConfigDiff::default());
    }

    #[test]
    fn backend_order_is_no_change() {
        let d = diff_to(
            "      - address: 10.66.0.11\n      - address: 10.66.0.12\n        weight: 2\n",
            "      - address: 10.66.0.12\n        weight: 2\n      - address: 10.66.0.11\n",
        );
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn backend_added() {
        assert_eq!(
            diff_to(
                "        weight: 2\n",
                "        weight: 2\n      - address: 10.66.0.13\n"
            ),
            web(ServiceDiff {
                backends_added: vec![ip("10.66.0.13")],
                ..ServiceDiff::default()
            })
        );
    }

    #[test]
    fn backend_removed() {
        assert_eq!(
            diff_to("      - address: 10.66.0.11\n", ""),
            web(ServiceDiff {
                backends_removed: vec![ip("10.66.0.11")],
                ..ServiceDiff::default()
            })
        );
    }

    #[test]
    fn weight_changed() {
        assert_eq!(
            diff_to("weight: 2", "weight: 5"),
            web(ServiceDiff {
                reweighted: vec![Reweight {
                    address: ip("10.66.0.12"),
                    old: 2,
                    new: 5
                }],
                ..ServiceDiff::default()
            })
        );
    }

    #[test]
    fn drain_changed() {
        assert_eq!(
            diff_to("weight: 2\n", "weight: 2\n        drain: true\n"),
            web(ServiceDiff {
                drain_changed: vec![DrainChange {
                    address: ip("10.66.0.12"),
                    drain: true
                }],
                ..ServiceDiff::default()
            })
        );
    }

    #[test]
    fn scheduler_and_health_changes_are_flagged() {
        assert_eq!(
            diff_to("    port: 80\n", "    port: 80\n    scheduler: source-ip\n"),
            web(ServiceDiff {
                scheduler_changed: true,
                ..ServiceDiff::default()
            })
        );
        let health = ServiceDiff {
            health_changed: true,
            ..ServiceDiff::default()
        };
        assert_eq!(
            diff_to("{type: tcp}", "{type: tcp, rise: 3}"),
            web(health.clone())
        );
        assert_eq!(
            diff_to(
                "health: [{type: tcp}]",
                "health: [{type: tcp}]\n    health_rule: 1"
            ),
            web(health)
        );
    }

    #[test]
    fn rename_is_remove_and_add() {
        assert_eq!(
            diff_to("name: web", "name: www"),
            ConfigDiff {
                removed: vec!["web".to_owned()],
                added: vec!["www".to_owned()],
                ..ConfigDiff::default()
            }
        );
    }

    #[test]
    fn new_vip_port_or_protocol_is_remove_and_add() {
        let both = |name: &str| ConfigDiff {
            removed: vec![name.to_owned()],
            added: vec![name.to_owned()],
            ..ConfigDiff::default()
        };
        assert_eq!(diff_to("vip: 10.66.99.1", "vip: 10.66.99.9"), both("web"));
        assert_eq!(diff_to("port: 80", "port: 8080"), both("web"));
        assert_eq!(diff_to("protocol: udp", "protocol: tcp"), both("dns"));
    }

    #[test]
    fn only_the_changed_service_appears() {
        let d = diff_to("address: 10.66.0.21", "address: 10.66.0.22");
        assert_eq!(
            d,
            ConfigDiff {
                changed: vec![ServiceDiff {
                    name: "dns".to_owned(),
                    backends_added: vec![ip("10.66.0.22")],
                    backends_removed: vec![ip("10.66.0.21")],
                    ..ServiceDiff::default()
                }],
                ..ConfigDiff::default()
            }
        );
    }

    #[test]
    fn services_added_and_removed() {
        let dns = BASE.find("  - name: dns").expect("dns in base");
        assert_eq!(
            diff_to(&BASE[dns..], ""),
            ConfigDiff {
                removed: vec!["dns".to_owned()],
                ..ConfigDiff::default()
            }
        );
        assert_eq!(
            diff_to(
                "services:\n",
                "services:\n  - {name: new, vip: 10.66.99.3, backends: []}\n"
            ),
            ConfigDiff {
                added: vec!["new".to_owned()],
                ..ConfigDiff::default()
            }
        );
    }

    #[test]
    fn settings_outside_services_are_flagged() {
        let d = diff_to(
            "interfaces: [eth0]",
            "interfaces: [eth0, eth1]\nxdp_mode: generic\napi: {listen: 0.0.0.0:9180}",
        );
        assert_eq!(
            d,
            ConfigDiff {
                interfaces_changed: true,
                xdp_mode_changed: true,
                api_changed: true,
                ..ConfigDiff::default()
            }
        );
    }
}
