//! The configuration in the terms of the library and the health checker: service ids,
//! schedulers, check specs and targets.

use std::{collections::HashMap, net::IpAddr};

use fulcrum::{
    Balancer, BalancerError, Forwarding, Protocol, Scheduler, ServiceId, Tunnel, TunnelSource,
};
use fulcrum_config::{CheckKind, Config, HealthRule};
use fulcrum_health::{BackendId, CheckSpec, HttpCheck, Probe, Rule, Target, Via};
use tracing::warn;

/// How each tunnelled backend is probed, by (service name, backend address).
pub(crate) type Vias = HashMap<(String, IpAddr), Via>;

/// Has the data plane carry the health probes of every checked backend of a tunnelled
/// service to its VIP (see `fulcrum::Balancer::set_probes`), so that a check proves the
/// backend serves the VIP; the rest keep probing the backend's own address.
pub(crate) fn probe_vias(lb: &mut Balancer, config: &Config) -> Result<Vias, BalancerError> {
    let mut names = Vec::new();
    let mut wanted = Vec::new();
    for s in &config.services {
        if s.forwarding == fulcrum_config::Forwarding::L2Dsr || s.health.is_empty() {
            continue;
        }
        for b in &s.backends {
            names.push(s.name.clone());
            wanted.push((service(s), b.address));
        }
    }
    let routes = lb.set_probes(&wanted)?;
    Ok(names
        .into_iter()
        .zip(routes)
        .map(|(name, r)| {
            if let Some(why) = &r.unreachable {
                warn!(service = name, backend = %r.address, "health probes cannot reach it yet: {why}");
            }
            let via = Via {
                vip: r.service.vip,
                mark: r.mark,
                device: r.device,
            };
            ((name, r.address), via)
        })
        .collect())
}

/// The health targets of a configuration.
pub(crate) fn targets(config: &Config, vias: &Vias) -> Vec<Target> {
    config
        .services
        .iter()
        .flat_map(|service| {
            service.backends.iter().map(move |b| Target {
                backend: BackendId {
                    service: service.name.clone(),
                    address: b.address,
                },
                via: vias.get(&(service.name.clone(), b.address)).cloned(),
                checks: service.health.iter().map(check_spec).collect(),
                rule: match service.health_rule {
                    HealthRule::All => Rule::All,
                    HealthRule::AtLeast(n) => Rule::AtLeast(n),
                },
            })
        })
        .collect()
}

fn check_spec(check: &fulcrum_config::HealthCheck) -> CheckSpec {
    let http = |h: &fulcrum_config::HttpCheck| HttpCheck {
        path: h.path.clone(),
        host: h.host.clone(),
        expect_status: h.expect_status,
        expect_body: h.expect_body.clone(),
    };
    let probe = match &check.kind {
        CheckKind::Tcp => Probe::Tcp,
        CheckKind::Http(h) => Probe::Http(http(h)),
        CheckKind::Https { request, insecure } => Probe::Https {
            http: http(request),
            insecure: *insecure,
        },
        CheckKind::Dns(d) => Probe::Dns(fulcrum_health::DnsCheck {
            query: d.query.clone(),
            query_type: fulcrum_health::QueryType(d.query_type.code()),
            expect_rcode: fulcrum_health::Rcode(d.expect_rcode.code()),
        }),
    };
    CheckSpec {
        probe,
        port: check.port,
        interval: check.interval,
        timeout: check.timeout,
        rise: check.rise,
        fall: check.fall,
    }
}

/// The data plane's identity of a configured service.
pub(crate) fn service_id(service: &fulcrum_config::Service) -> ServiceId {
    let protocol = match service.protocol {
        fulcrum_config::Protocol::Tcp => Protocol::Tcp,
        fulcrum_config::Protocol::Udp => Protocol::Udp,
    };
    ServiceId::new(service.vip, service.port, protocol)
}

/// The data plane's service: identity, scheduler, forwarding and echo.
pub(crate) fn service(service: &fulcrum_config::Service) -> fulcrum::Service {
    fulcrum::Service {
        id: service_id(service),
        scheduler: match service.scheduler {
            fulcrum_config::Scheduler::FiveTuple => Scheduler::FiveTuple,
            fulcrum_config::Scheduler::SourceIp => Scheduler::SourceIp,
        },
        forwarding: forwarding(&service.forwarding),
        icmp_echo: service.icmp_echo,
    }
}

fn forwarding(f: &fulcrum_config::Forwarding) -> Forwarding {
    let tunnel = |t: &fulcrum_config::Tunnel| Tunnel {
        ipv4_source: source(t.ipv4),
        ipv6_source: source(t.ipv6),
    };
    match f {
        fulcrum_config::Forwarding::L2Dsr => Forwarding::L2Dsr,
        fulcrum_config::Forwarding::Ipip(t) => Forwarding::Ipip(tunnel(t)),
        fulcrum_config::Forwarding::Gue { tunnel: t, port } => Forwarding::Gue {
            tunnel: tunnel(t),
            port: *port,
        },
    }
}

fn source(s: fulcrum_config::TunnelSource) -> TunnelSource {
    match s {
        fulcrum_config::TunnelSource::Route => TunnelSource::Route,
        fulcrum_config::TunnelSource::Fixed(address) => TunnelSource::Fixed(address),
        fulcrum_config::TunnelSource::Prefix { network, len } => {
            TunnelSource::Prefix { network, len }
        }
    }
}
