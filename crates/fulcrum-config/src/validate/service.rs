//! A service and its backends, as written and as checked.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Checker, bgp, earlier, forwarding, health::RawCheck};
use crate::error::{WEIGHTS, quote, weight_problem};
use crate::model::{Backend, HealthRule, Protocol, Scheduler, Service};

/// Longest service name: names go into every metric line and console row.
const MAX_NAME: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Option<Spanned<String>>,
    pub(super) vip: Option<Spanned<String>>,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    scheduler: Scheduler,
    health: Option<Vec<Spanned<RawCheck>>>,
    health_rule: Option<Spanned<String>>,
    pub(super) backends: Option<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    allow_local_vip: bool,
    drain_period: Option<Spanned<String>>,
    forwarding: Option<Spanned<String>>,
    gue_port: Option<Spanned<u16>>,
    tunnel_source: Option<Spanned<forwarding::RawTunnelSource>>,
    pub(super) icmp_echo: Option<Spanned<bool>>,
    announce: Option<crate::model::Announce>,
    min_healthy: Option<Spanned<u32>>,
    med: Option<u32>,
    local_pref: Option<u32>,
    communities: Option<Vec<Spanned<String>>>,
    large_communities: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) address: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    drain: bool,
}

impl Checker<'_> {
    pub(super) fn service(&mut self, path: &str, raw: &Spanned<RawService>) -> Option<Service> {
        let (at, s) = (&raw.referenced, &raw.value);
        let name = self
            .required(&s.name, at, format_args!("{path}.name"), "name: web")
            .and_then(|name| self.name(name, path));
        let vip = self
            .required(&s.vip, at, format_args!("{path}.vip"), "vip: 10.66.99.1")
            .and_then(|vip| self.address(vip, format_args!("{path}.vip"), "a VIP"));
        let forwarding = self.forwarding(
            path,
            forwarding::RawForwarding {
                forwarding: s.forwarding.as_ref(),
                gue_port: s.gue_port.as_ref(),
                tunnel_source: s.tunnel_source.as_ref(),
            },
        );
        let checks = s.health.as_deref().unwrap_or_default();
        let health: Vec<_> = (checks.iter().enumerate())
            .map(|(j, check)| self.check(&format!("{path}.health[{j}]"), check, s.port))
            .collect();
        let health_rule = match &s.health_rule {
            None => Some(HealthRule::All),
            Some(rule) => self.health_rule(rule, checks.len(), path),
        };
        let backends = self
            .required(
                &s.backends,
                at,
                format_args!("{path}.backends"),
                "backends: [{address: 10.66.0.11}]",
            )
            .and_then(|backends| self.backends(backends, path, vip, forwarding.as_ref()));
        let drain_period = self.drain_period(path, &s.drain_period);
        let announce = bgp::RawAnnounce {
            announce: s.announce,
            min_healthy: s.min_healthy.as_ref(),
            med: s.med,
            local_pref: s.local_pref,
            communities: s.communities.as_deref(),
            large_communities: s.large_communities.as_deref(),
        };
        let announce = self.announcement(path, announce, s.backends.as_ref().map(Vec::len));
        Some(Service {
            name: name?,
            vip: vip?,
            port: s.port,
            protocol: s.protocol,
            scheduler: s.scheduler,
            health: health.into_iter().collect::<Option<_>>()?,
            health_rule: health_rule?,
            backends: backends?,
            allow_local_vip: s.allow_local_vip,
            drain_period: drain_period?,
            forwarding: forwarding?,
            icmp_echo: s.icmp_echo.as_ref().is_none_or(|e| e.value),
            announce: announce?,
        })
    }

    /// `icmp_echo` is the VIP's, not the service's: every service of a VIP must agree.
    pub(super) fn same_echo(
        &mut self,
        seen: &mut HashMap<IpAddr, (bool, usize, u64)>,
        i: usize,
        service: &Service,
        vip: &Spanned<String>,
        raw: Option<&Spanned<bool>>,
    ) {
        let at = raw.map_or(&vip.referenced, |e| &e.referenced);
        let here = (service.icmp_echo, i, at.line());
        match earlier(seen, service.vip, here) {
            Some((other, j, line)) if other != service.icmp_echo => {
                self.report::<()>(
                    at,
                    format_args!("services[{i}].icmp_echo"),
                    format!(
                        "{} here but {other} for services[{j}] (line {line}) on the same VIP; \
                         echo is answered per VIP, so give every service of {} the same value",
                        service.icmp_echo, service.vip
                    ),
                );
            }
            _ => {}
        }
    }

    /// `drain_period`: a duration, where 0 (the default) removes a backend at once.
    fn drain_period(&mut self, path: &str, raw: &Option<Spanned<String>>) -> Option<Duration> {
        let Some(text) = raw else {
            return Some(Duration::ZERO);
        };
        match humantime::parse_duration(text.value.trim()) {
            Ok(d) => Some(d),
            Err(_) => self.report(
                &text.referenced,
                format_args!("{path}.drain_period"),
                format!(
                    "{} is not a duration; write a number and a unit, like 30s or 2m (0s \
                     removes a backend at once)",
                    quote(&text.value)
                ),
            ),
        }
    }

    fn name(&mut self, name: &Spanned<String>, path: &str) -> Option<String> {
        let n = &name.value;
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        let length = n.chars().count();
        if (1..=MAX_NAME).contains(&length) && n.chars().all(valid) {
            return Some(n.clone());
        }
        let quoted = match length > MAX_NAME {
            true => format!("{} ({length} characters)", quote(&format!("{:.20}...", n))),
            false => quote(n),
        };
        self.report(
            &name.referenced,
            format_args!("{path}.name"),
            format!(
                "{quoted} is not a service name; use 1 to {MAX_NAME} lowercase letters, digits, \
                 '_' and '-', like web-1"
            ),
        )
    }

    fn backends(
        &mut self,
        raw: &[Spanned<RawBackend>],
        path: &str,
        vip: Option<IpAddr>,
        forwarding: Option<&crate::model::Forwarding>,
    ) -> Option<Vec<Backend>> {
        let mut seen: HashMap<IpAddr, (usize, u64)> = HashMap::new();
        let mut backends = Vec::new();
        for (j, raw) in raw.iter().enumerate() {
            let b = &raw.value;
            let address_path = format!("{path}.backends[{j}].address");
            let text = self.required(
                &b.address,
                &raw.referenced,
                &address_path,
                "address: 10.66.0.11",
            );
            let address = text.and_then(|t| self.address(t, &address_path, "a backend"));
            if let (Some(text), Some(address)) = (text, address)
                && let Some((k, line)) = earlier(&mut seen, address, (j, text.referenced.line()))
            {
                self.report::<()>(
                    &text.referenced,
                    &address_path,
                    format!(
                        "{address} is already {path}.backends[{k}] (line {line}); list each \
                         backend once per service"
                    ),
                );
            }
            let weight = match &b.weight {
                None => Some(1),
                Some(w) if !WEIGHTS.contains(&w.value) => self.report(
                    &w.referenced,
                    format_args!("{path}.backends[{j}].weight"),
                    weight_problem(&w.value.to_string()),
                ),
                Some(w) => Some(w.value),
            };
            if let (Some(address), Some(text), Some(vip), Some(forwarding)) =
                (address, text, vip, forwarding)
                && address != vip
            {
                self.family(&text.referenced, &address_path, vip, address, forwarding);
            }
            if let (Some(address), Some(text), Some(vip)) = (address, text, vip)
                && address == vip
            {
                self.report::<()>(
                    &text.referenced,
                    &address_path,
                    format!(
                        "{address} is the service's own VIP; a backend must be another host \
                         (traffic to the VIP would loop back to the balancer)"
                    ),
                );
            }
            backends.push(address.zip(weight).map(|(address, weight)| Backend {
                address,
                weight,
                drain: b.drain,
            }));
        }
        backends.into_iter().collect()
    }
}
