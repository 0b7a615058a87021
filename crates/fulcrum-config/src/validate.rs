//! The file as written (serde types that keep every value's position) and its checking into
//! the [`crate::model`]. Everything the YAML layer cannot check is checked here, and every
//! problem is collected with its position, so one run shows the operator all of them.

use std::{
    collections::HashMap, collections::hash_map::Entry, fmt::Display, hash::Hash, net::IpAddr,
    net::Ipv4Addr, net::SocketAddr, path::PathBuf, time::Duration,
};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::error::{Position, Problem, quote};
use crate::flow_sharing::RawFlowSharing;
use crate::flow_table::RawFlowTable;
use crate::model::{Api, Config, Protocol, XdpMode};
use crate::place::{Places, ServicePlaces};

mod bgp;
mod forwarding;
mod health;
mod service;

use service::RawService;

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
    flow_table: Option<Spanned<RawFlowTable>>,
    bgp: Option<Spanned<bgp::RawBgp>>,
    top_talkers: Option<Spanned<crate::top_talkers::RawTopTalkers>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
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
        let flow_table = self.flow_table(c.flow_table.as_ref());
        let top_talkers = match &c.top_talkers {
            None => Some(Default::default()),
            Some(raw) => self.top_talkers(raw),
        };
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
            flow_table: flow_table?,
            bgp: bgp?,
            top_talkers: top_talkers?,
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

fn service_id((vip, port, protocol): (IpAddr, u16, Protocol)) -> String {
    match (vip, port) {
        (vip, 0) => format!("{vip} (every port)/{protocol}"),
        (IpAddr::V4(vip), port) => format!("{vip}:{port}/{protocol}"),
        (IpAddr::V6(vip), port) => format!("[{vip}]:{port}/{protocol}"),
    }
}
