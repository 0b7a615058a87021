//! The file as written (serde types that keep every value's position) and its checking into
//! the [`crate::model`]. Everything the YAML layer cannot check is checked here, and every
//! problem is collected with its position, so one run shows the operator all of them.

use std::{
    collections::HashMap, collections::hash_map::Entry, fmt::Display, hash::Hash, net::IpAddr,
    net::Ipv4Addr, net::SocketAddr, path::PathBuf, time::Duration,
};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::error::{Position, Problem, WEIGHTS, quote, weight_problem};
use crate::flow_sharing::RawFlowSharing;
use crate::model::{
    Api, Backend, CheckKind, Config, DnsCheck, DnsType, HealthCheck, HealthRule, HttpCheck,
    Protocol, Rcode, Scheduler, Service, XdpMode,
};
use crate::place::{Places, ServicePlaces};

mod bgp;
mod forwarding;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    instance: Option<Spanned<String>>,
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    xdp_mode: XdpMode,
    api: Option<RawApi>,
    services: Option<Vec<Spanned<RawService>>>,
    flow_sharing: Option<Spanned<RawFlowSharing>>,
    bgp: Option<Spanned<bgp::RawBgp>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<Spanned<String>>,
    vip: Option<Spanned<String>>,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    scheduler: Scheduler,
    health: Option<Vec<Spanned<RawCheck>>>,
    health_rule: Option<Spanned<String>>,
    backends: Option<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    allow_local_vip: bool,
    drain_period: Option<Spanned<String>>,
    forwarding: Option<Spanned<String>>,
    gue_port: Option<Spanned<u16>>,
    tunnel_source: Option<Spanned<forwarding::RawTunnelSource>>,
    icmp_echo: Option<Spanned<bool>>,
    announce: Option<crate::model::Announce>,
    min_healthy: Option<Spanned<u32>>,
    med: Option<u32>,
    local_pref: Option<u32>,
    communities: Option<Vec<Spanned<String>>>,
    large_communities: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    drain: bool,
}

/// One flat record for every check type, rather than a serde enum tagged by `type`: serde
/// buffers tagged enums and loses positions, and a flat record lets a field of the wrong
/// type be named ("only dns checks take `query`") instead of reported as unknown.
///
/// Required fields here and above are `Option`s so that a missing one is reported at its
/// parent with an example; serde would point at wherever the parent happened to end.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<Spanned<CheckType>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    port: Option<Spanned<u16>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<u16>>,
    expect_body: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    query: Option<Spanned<String>>,
    query_type: Option<Spanned<DnsType>>,
    expect_rcode: Option<Spanned<Rcode>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CheckType {
    Tcp,
    Http,
    Https,
    Dns,
}

impl CheckType {
    fn name(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Dns => "dns",
        }
    }
}

/// Checks `raw` into a [`Config`], or returns every problem found, in file order.
pub(crate) fn validate(raw: Spanned<RawConfig>, origin: &str) -> Result<Config, Vec<Problem>> {
    let mut v = Checker {
        origin,
        problems: Vec::new(),
    };
    let config = v.config(&raw);
    let mut problems = v.problems;
    problems.sort_by_key(|p| p.position);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

/// Collects problems; each conversion returns `None` when its part had one, and the parts
/// are combined only once all of them have been looked at.
pub(crate) struct Checker<'a> {
    origin: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn report<T>(
        &mut self,
        at: &Location,
        path: impl Display,
        message: String,
    ) -> Option<T> {
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            position: Position::of(at),
            path: path.to_string(),
            message,
        });
        None
    }

    /// A field that must be given. Reported at its parent: a missing field has no place of
    /// its own, and the parent is where it should be added.
    pub(crate) fn required<'r, T>(
        &mut self,
        field: &'r Option<T>,
        parent: &Location,
        path: impl Display,
        example: &str,
    ) -> Option<&'r T> {
        match field {
            Some(field) => Some(field),
            None => self.report(parent, path, format!("missing; add it, like `{example}`")),
        }
    }

    fn config(&mut self, raw: &Spanned<RawConfig>) -> Option<Config> {
        let (top, c) = (&raw.referenced, &raw.value);
        let interfaces = self
            .required(&c.interfaces, top, "interfaces", "interfaces: [eth0]")
            .and_then(|i| self.interfaces(i));
        let api = self.api(c.api.as_ref());
        let mut names: HashMap<&str, (usize, u64)> = HashMap::new();
        let mut ids: HashMap<(IpAddr, u16, Protocol), (&str, u64)> = HashMap::new();
        let mut echo: HashMap<IpAddr, (bool, usize, u64)> = HashMap::new();
        let mut services = Vec::new();
        for (i, raw) in c.services.iter().flatten().enumerate() {
            let service = self.service(&format!("services[{i}]"), raw);
            let name = raw.value.name.as_ref();
            if let Some(name) = name
                && let Some((j, line)) =
                    earlier(&mut names, &name.value, (i, name.referenced.line()))
            {
                self.report::<()>(
                    &name.referenced,
                    format_args!("services[{i}].name"),
                    format!(
                        "{} is already the name of services[{j}] (line {line}); give each \
                         service its own name",
                        quote(&name.value)
                    ),
                );
            }
            if let (Some(service), Some(name), Some(vip)) = (&service, name, &raw.value.vip) {
                let id = (service.vip, service.port, service.protocol);
                let here = (&*name.value, vip.referenced.line());
                if let Some((other, line)) = earlier(&mut ids, id, here) {
                    self.report::<()>(
                        &vip.referenced,
                        format_args!("services[{i}].vip"),
                        format!(
                            "{} is already served by {} (line {line}); each (vip, port, \
                             protocol) belongs to one service, so change one of them",
                            service_id(id),
                            quote(other)
                        ),
                    );
                }
            }
            if let (Some(service), Some(vip)) = (&service, &raw.value.vip) {
                self.same_echo(&mut echo, i, service, vip, raw.value.icmp_echo.as_ref());
            }
            services.push(service);
        }
        let instance = self.instance(c.instance.as_ref());
        let flow_sharing = c.flow_sharing.as_ref().map(|f| self.flow_sharing(f));
        let bgp = match &c.bgp {
            None => Some(None),
            Some(raw) => self.bgp(raw, &services).map(Some),
        };
        Some(Config {
            instance: instance?,
            interfaces: interfaces?,
            xdp_mode: c.xdp_mode,
            api: api?,
            services: services.into_iter().collect::<Option<_>>()?,
            places: places(c, self.origin),
            flow_sharing: match flow_sharing {
                None => None,
                Some(f) => Some(f?),
            },
            bgp: bgp?,
        })
    }

    fn interfaces(&mut self, raw: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<String>> {
        if raw.value.is_empty() {
            return self.report(
                &raw.referenced,
                "interfaces",
                "the list is empty; name at least one interface to attach to, like \
                 `interfaces: [eth0]`"
                    .to_owned(),
            );
        }
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut ok = true;
        for (i, name) in raw.value.iter().enumerate() {
            let (n, at) = (&name.value, &name.referenced);
            let path = format!("interfaces[{i}]");
            if n.is_empty()
                || n.len() > 15
                || n == "."
                || n == ".."
                || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
            {
                ok = false;
                self.report::<()>(
                    at,
                    path,
                    format!(
                        "{} is not an interface name; Linux names have 1 to 15 characters, \
                         without '/', ':' or spaces",
                        quote(n)
                    ),
                );
            } else if let Some(line) = earlier(&mut seen, n, at.line()) {
                ok = false;
                self.report::<()>(
                    at,
                    path,
                    format!(
                        "{} is already listed (line {line}); name each interface once",
                        quote(n)
                    ),
                );
            }
        }
        ok.then(|| raw.value.iter().map(|n| n.value.clone()).collect())
    }

    fn api(&mut self, raw: Option<&RawApi>) -> Option<Api> {
        let Some(raw) = raw else {
            return Some(Api::default());
        };
        let listen = match &raw.listen {
            None => Some(Api::DEFAULT_LISTEN),
            Some(listen) => match listen.value.trim().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => self.report(
                    &listen.referenced,
                    "api.listen",
                    format!(
                        "{} is not an address and port; write one like 127.0.0.1:9180 or \
                         [::1]:9180",
                        quote(&listen.value)
                    ),
                ),
            },
        };
        let token_file = match &raw.token_file {
            Some(file) if file.value.trim().is_empty() => self.report(
                &file.referenced,
                "api.token_file",
                "empty; give the path of the file holding the API token, or leave the field \
                 out"
                .to_owned(),
            ),
            file => Some(file.as_ref().map(|f| PathBuf::from(&f.value))),
        };
        Some(Api {
            listen: listen?,
            token_file: token_file?,
        })
    }

    fn service(&mut self, path: &str, raw: &Spanned<RawService>) -> Option<Service> {
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
    fn same_echo(
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

    /// `instance`: a name that is safe as a directory name.
    fn instance(&mut self, raw: Option<&Spanned<String>>) -> Option<String> {
        let Some(name) = raw else {
            return Some("default".to_owned());
        };
        let n = &name.value;
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if !n.is_empty() && n.len() <= 64 && n.chars().all(valid) {
            return Some(n.clone());
        }
        self.report(
            &name.referenced,
            "instance",
            format!(
                "{} is not an instance name; use 1 to 64 lowercase letters, digits, '_' and \
                 '-', like edge-1",
                quote(n)
            ),
        )
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

    fn ipv4(&mut self, text: &Spanned<String>, path: impl Display, what: &str) -> Option<Ipv4Addr> {
        match text.value.trim().parse::<Ipv4Addr>() {
            Ok(ip) if !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()) => Some(ip),
            Ok(ip) => self.report(
                &text.referenced,
                path,
                format!("{ip} cannot be {what}; use a unicast address, like 10.66.0.11"),
            ),
            Err(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not an IPv4 address; write four numbers from 0 to 255, like \
                     10.66.0.11",
                    quote(&text.value)
                ),
            ),
        }
    }

    fn health_rule(
        &mut self,
        rule: &Spanned<String>,
        checks: usize,
        path: &str,
    ) -> Option<HealthRule> {
        let text = rule.value.trim();
        if text == "all" {
            return Some(HealthRule::All);
        }
        let valid = match checks {
            0 => "with no health checks, only `all` is valid (or leave it out)".to_owned(),
            1 => "with 1 health check, use `all` or 1".to_owned(),
            n => format!("with {n} health checks, use `all` or a number from 1 to {n}"),
        };
        let path = format_args!("{path}.health_rule");
        match text.parse::<usize>() {
            Ok(n) if (1..=checks).contains(&n) => Some(HealthRule::AtLeast(n)),
            Ok(n) => self.report(
                &rule.referenced,
                path,
                format!("{n} is out of range; {valid}"),
            ),
            Err(_) => self.report(
                &rule.referenced,
                path,
                format!("{} is not a health rule; {valid}", quote(&rule.value)),
            ),
        }
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

    fn check(
        &mut self,
        path: &str,
        raw: &Spanned<RawCheck>,
        service_port: u16,
    ) -> Option<HealthCheck> {
        let (at, c) = (&raw.referenced, &raw.value);
        let kind = self
            .required(&c.kind, at, format_args!("{path}.type"), "type: tcp")
            .and_then(|kind| self.check_kind(path, at, kind.value, c));
        let interval = self.duration(path, "interval", &c.interval, HealthCheck::DEFAULT_INTERVAL);
        let timeout = self.duration(path, "timeout", &c.timeout, HealthCheck::DEFAULT_TIMEOUT);
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout >= interval
        {
            let (i, t) = (
                humantime::format_duration(interval),
                humantime::format_duration(timeout),
            );
            match (&c.timeout, &c.interval) {
                (Some(timeout), _) => self.report::<()>(
                    &timeout.referenced,
                    format_args!("{path}.timeout"),
                    format!("{t} must be shorter than interval ({i})"),
                ),
                (None, Some(interval)) => self.report::<()>(
                    &interval.referenced,
                    format_args!("{path}.interval"),
                    format!("{i} must be longer than timeout ({t}, the default)"),
                ),
                (None, None) => None,
            };
        }
        let rise = self.threshold(path, "rise", &c.rise);
        let fall = self.threshold(path, "fall", &c.fall);
        let port = match (&c.port, service_port) {
            (Some(p), _) if p.value == 0 => self.report(
                &p.referenced,
                format_args!("{path}.port"),
                "0 is not a port to probe; use 1 to 65535".to_owned(),
            ),
            (Some(p), _) => Some(p.value),
            (None, 0) => self.report(
                at,
                format_args!("{path}.port"),
                "missing; the service covers every port (port 0), so the check must name the \
                 port to probe, like `port: 80`"
                    .to_owned(),
            ),
            (None, port) => Some(port),
        };
        Some(HealthCheck {
            kind: kind?,
            port: port?,
            interval: interval?,
            timeout: timeout?,
            rise: rise?,
            fall: fall?,
        })
    }

    fn check_kind(
        &mut self,
        path: &str,
        at: &Location,
        kind: CheckType,
        c: &RawCheck,
    ) -> Option<CheckKind> {
        use CheckType::{Dns, Http, Https};
        let fields: [(&str, Option<&Location>, &[CheckType]); 8] = [
            ("path", at_of(&c.path), &[Http, Https]),
            ("expect_status", at_of(&c.expect_status), &[Http, Https]),
            ("expect_body", at_of(&c.expect_body), &[Http, Https]),
            ("host", at_of(&c.host), &[Http, Https]),
            ("insecure", at_of(&c.insecure), &[Https]),
            ("query", at_of(&c.query), &[Dns]),
            ("query_type", at_of(&c.query_type), &[Dns]),
            ("expect_rcode", at_of(&c.expect_rcode), &[Dns]),
        ];
        let mut ok = true;
        for (field, location, types) in fields {
            if let Some(location) = location
                && !types.contains(&kind)
            {
                ok = false;
                let types: Vec<&str> = types.iter().map(|t| t.name()).collect();
                self.report::<()>(
                    location,
                    format_args!("{path}.{field}"),
                    format!(
                        "only {} checks take `{field}`, and this one is {}; remove it",
                        types.join(" and "),
                        kind.name()
                    ),
                );
            }
        }
        let kind = match kind {
            CheckType::Tcp => Some(CheckKind::Tcp),
            CheckType::Http => self.http(path, c).map(CheckKind::Http),
            CheckType::Https => self.http(path, c).map(|request| CheckKind::Https {
                request,
                insecure: c.insecure.as_ref().is_some_and(|i| i.value),
            }),
            CheckType::Dns => self.dns(path, at, c).map(CheckKind::Dns),
        };
        kind.filter(|_| ok)
    }

    fn http(&mut self, path: &str, c: &RawCheck) -> Option<HttpCheck> {
        let default = HttpCheck::default();
        let request_path = match &c.path {
            None => Some(default.path),
            Some(p) if p.value.starts_with('/') && !p.value.chars().any(char::is_whitespace) => {
                Some(p.value.clone())
            }
            Some(p) => self.report(
                &p.referenced,
                format_args!("{path}.path"),
                format!(
                    "{} is not a request path; it starts with '/' and has no spaces, like \
                     /healthz",
                    quote(&p.value)
                ),
            ),
        };
        let expect_status = match &c.expect_status {
            None => Some(default.expect_status),
            Some(s) if (100..=599).contains(&s.value) => Some(s.value),
            Some(s) => self.report(
                &s.referenced,
                format_args!("{path}.expect_status"),
                format!("{} is not an HTTP status; use 100 to 599", s.value),
            ),
        };
        let host = match &c.host {
            Some(h) if !is_word(&h.value) => self.report(
                &h.referenced,
                format_args!("{path}.host"),
                format!(
                    "{} is not a Host header; give a host name, like www.example.com",
                    quote(&h.value)
                ),
            ),
            host => Some(host.as_ref().map(|h| h.value.clone())),
        };
        Some(HttpCheck {
            path: request_path?,
            expect_status: expect_status?,
            expect_body: c.expect_body.as_ref().map(|b| b.value.clone()),
            host: host?,
        })
    }

    fn dns(&mut self, path: &str, at: &Location, c: &RawCheck) -> Option<DnsCheck> {
        let query = match self.required(
            &c.query,
            at,
            format_args!("{path}.query"),
            "query: example.com",
        ) {
            Some(q) if !is_word(&q.value) || q.value.len() > 253 => self.report(
                &q.referenced,
                format_args!("{path}.query"),
                format!(
                    "{} is not a domain name; give one like example.com",
                    quote(&q.value)
                ),
            ),
            query => query.map(|q| q.value.clone()),
        };
        Some(DnsCheck {
            query: query?,
            query_type: c.query_type.as_ref().map(|t| t.value).unwrap_or_default(),
            expect_rcode: c.expect_rcode.as_ref().map(|r| r.value).unwrap_or_default(),
        })
    }

    pub(crate) fn duration(
        &mut self,
        path: &str,
        field: &str,
        raw: &Option<Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = raw else {
            return Some(default);
        };
        let path = format_args!("{path}.{field}");
        match humantime::parse_duration(text.value.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is zero; give a duration, like 500ms or 2s",
                    quote(&text.value)
                ),
            ),
            Err(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not a duration; write a number and a unit, like 500ms, 1s or 2m",
                    quote(&text.value)
                ),
            ),
        }
    }

    fn threshold(&mut self, path: &str, field: &str, raw: &Option<Spanned<u32>>) -> Option<u32> {
        match raw {
            None => Some(HealthCheck::DEFAULT_THRESHOLD),
            Some(n) if n.value >= 1 => Some(n.value),
            Some(n) => self.report(
                &n.referenced,
                format_args!("{path}.{field}"),
                "0 is too few; it counts consecutive probes, so use 1 or more".to_owned(),
            ),
        }
    }
}

/// Where each service's VIP and each backend's address are written.
fn places(c: &RawConfig, origin: &str) -> Places {
    let services = (c.services.iter().flatten())
        .map(|s| ServicePlaces {
            vip: s
                .value
                .vip
                .as_ref()
                .and_then(|v| Position::of(&v.referenced)),
            backends: (s.value.backends.iter().flatten())
                .map(|b| {
                    let at = b
                        .value
                        .address
                        .as_ref()
                        .map_or(&b.referenced, |a| &a.referenced);
                    Position::of(at)
                })
                .collect(),
        })
        .collect();
    Places {
        origin: origin.to_owned(),
        services,
    }
}

/// Remembers where `key` was seen first, and returns that when it is seen again.
pub(crate) fn earlier<K: Hash + Eq, V: Copy>(
    seen: &mut HashMap<K, V>,
    key: K,
    here: V,
) -> Option<V> {
    match seen.entry(key) {
        Entry::Occupied(first) => Some(*first.get()),
        Entry::Vacant(slot) => {
            slot.insert(here);
            None
        }
    }
}

/// Longest service name: names go into every metric line and console row.
const MAX_NAME: usize = 64;

fn at_of<T>(field: &Option<Spanned<T>>) -> Option<&Location> {
    field.as_ref().map(|f| &f.referenced)
}

/// Non-empty, without spaces or control characters: what goes verbatim into a request.
fn is_word(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn service_id((vip, port, protocol): (IpAddr, u16, Protocol)) -> String {
    match (vip, port) {
        (vip, 0) => format!("{vip} (every port)/{protocol}"),
        (IpAddr::V4(vip), port) => format!("{vip}:{port}/{protocol}"),
        (IpAddr::V6(vip), port) => format!("[{vip}]:{port}/{protocol}"),
    }
}
