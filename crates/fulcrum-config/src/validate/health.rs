//! A service's health checks and its `health_rule`, as written and as checked.

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::Checker;
use crate::error::quote;
use crate::model::{CheckKind, DnsCheck, DnsType, HealthCheck, HealthRule, HttpCheck, Rcode};

/// One flat record for every check type, rather than a serde enum tagged by `type`: serde
/// buffers tagged enums and loses positions, and a flat record lets a field of the wrong
/// type be named ("only dns checks take `query`") instead of reported as unknown.
///
/// Required fields here and above are `Option`s so that a missing one is reported at its
/// parent with an example; serde would point at wherever the parent happened to end.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
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

impl Checker<'_> {
    pub(super) fn health_rule(
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

    pub(super) fn check(
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

fn at_of<T>(field: &Option<Spanned<T>>) -> Option<&Location> {
    field.as_ref().map(|f| &f.referenced)
}

/// Non-empty, without spaces or control characters: what goes verbatim into a request.
fn is_word(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}
