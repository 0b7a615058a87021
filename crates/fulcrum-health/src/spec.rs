//! What to check: plain data that the configuration layer fills in and [`CheckSpec::validate`]
//! vets, so a bad value is refused when it is loaded and not discovered by a probe at 3 a.m.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

/// One health check of a backend. Identity for hot reload is [`CheckSpec::same_probe`]: the
/// timing and thresholds can change without losing the check's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// What the probe does.
    pub probe: Probe,
    /// Port probed on the backend. Explicit here: the configuration layer fills in the service
    /// port when the operator gives none.
    pub port: u16,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// How long one probe may take before it counts as a failure.
    pub timeout: Duration,
    /// Consecutive successes that turn the check up.
    pub rise: u32,
    /// Consecutive failures that turn the check down.
    pub fall: u32,
}

/// The kinds of probe, each with only the parameters that mean something for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// A TCP connection can be established.
    Tcp,
    /// An HTTP/1.1 GET answers as expected.
    Http(HttpCheck),
    /// The same over TLS.
    Https {
        /// The request and the expected answer.
        http: HttpCheck,
        /// Skip certificate verification: backends often serve self-signed or internal
        /// certificates whose validity is not what the check is about.
        insecure: bool,
    },
    /// A DNS query over UDP gets the expected response code.
    Dns(DnsCheck),
}

/// An HTTP GET and what its answer must look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// Request target; must start with `/`.
    pub path: String,
    /// `Host` header (and TLS server name); the backend address when absent.
    pub host: Option<String>,
    /// The status the answer must carry.
    pub expect_status: u16,
    /// A substring the body must contain (only the first [`BODY_LIMIT`] bytes are searched).
    pub expect_body: Option<String>,
}

/// How much of a body is read when one is expected: health pages are small, and a huge body
/// must not make the checker allocate without bound.
pub const BODY_LIMIT: usize = 256 * 1024;

/// A DNS query and the response code it must get.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsCheck {
    /// The name asked for, e.g. `example.com`.
    pub query: String,
    /// The record type asked for.
    pub query_type: QueryType,
    /// The response code the answer must carry.
    pub expect_rcode: Rcode,
}

/// A DNS record type (RFC 1035 QTYPE), by number so that any type can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryType(pub u16);

const QUERY_TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("ANY", 255),
];

/// The types most checks ask for, so code need not spell numbers.
impl QueryType {
    /// An IPv4 address.
    pub const A: Self = Self(1);
    /// An IPv6 address.
    pub const AAAA: Self = Self(28);
}

impl FromStr for QueryType {
    type Err = SpecError;

    /// Accepts the usual mnemonics (case-insensitive) and RFC 3597's `TYPEnnn`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.to_ascii_uppercase();
        if let Some(&(_, n)) = QUERY_TYPES.iter().find(|(name, _)| *name == up) {
            return Ok(Self(n));
        }
        up.strip_prefix("TYPE")
            .and_then(|n| n.parse().ok())
            .map(Self)
            .ok_or_else(|| SpecError::QueryType(s.to_owned()))
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match QUERY_TYPES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

/// A DNS response code (RFC 1035 RCODE, the 4 header bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rcode(pub u8);

const RCODES: &[(&str, u8)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
];

/// The codes checks usually expect or meet, so code need not spell numbers.
impl Rcode {
    /// The query was answered.
    pub const NOERROR: Self = Self(0);
    /// The server could not answer (often: its upstream is down).
    pub const SERVFAIL: Self = Self(2);
    /// The name does not exist; a healthy answer for a probe of a made-up name.
    pub const NXDOMAIN: Self = Self(3);
    /// The server declines to answer (often: recursion not allowed).
    pub const REFUSED: Self = Self(5);
}

impl FromStr for Rcode {
    type Err = SpecError;

    /// Accepts the mnemonics (case-insensitive) or a number from 0 to 15.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.to_ascii_uppercase();
        if let Some(&(_, n)) = RCODES.iter().find(|(name, _)| *name == up) {
            return Ok(Self(n));
        }
        s.parse()
            .ok()
            .filter(|n| *n < 16)
            .map(Self)
            .ok_or_else(|| SpecError::Rcode(s.to_owned()))
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match RCODES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "RCODE{}", self.0),
        }
    }
}

/// How many of a backend's checks must be up for the backend to be healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rule {
    /// Every check.
    #[default]
    All,
    /// At least this many ("2 of 3").
    AtLeast(usize),
}

impl Rule {
    /// Checks that must be up among `checks`; never more than there are.
    pub fn required(self, checks: usize) -> usize {
        match self {
            Rule::All => checks,
            Rule::AtLeast(n) => n.min(checks),
        }
    }
}

/// What is wrong with a check specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The HTTP path cannot be sent as a request target.
    #[error("path {0:?} must start with '/' and contain no spaces or control characters")]
    Path(String),
    /// The host cannot be sent as a header or used as a TLS server name.
    #[error("host {0:?} is not a valid host name or address")]
    Host(String),
    /// The DNS name cannot be encoded.
    #[error("query {name:?}: {why}")]
    DnsName {
        /// The name as given.
        name: String,
        /// What rule it breaks.
        why: &'static str,
    },
    /// Not a known record type.
    #[error(
        "unknown query type {0:?} (valid: A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ANY or TYPEnnn)"
    )]
    QueryType(String),
    /// Not a known response code.
    #[error(
        "unknown rcode {0:?} (valid: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED or 0-15)"
    )]
    Rcode(String),
}

impl CheckSpec {
    /// Refuses what a probe could not send or would misread, so errors surface at load time.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (what, zero) in [
            ("interval", self.interval.is_zero()),
            ("timeout", self.timeout.is_zero()),
            ("rise", self.rise == 0),
            ("fall", self.fall == 0),
        ] {
            if zero {
                return Err(SpecError::Zero(what));
            }
        }
        match &self.probe {
            Probe::Tcp => Ok(()),
            Probe::Http(http) => http.validate(),
            Probe::Https { http, .. } => {
                http.validate()?;
                if let Some(host) = &http.host {
                    crate::probe::server_name(Some(host), IpAddr::from([0, 0, 0, 0]))
                        .map_err(|_| SpecError::Host(host.clone()))?;
                }
                Ok(())
            }
            Probe::Dns(dns) => crate::probe::dns::encode_name(&dns.query)
                .map(drop)
                .map_err(|why| SpecError::DnsName {
                    name: dns.query.clone(),
                    why,
                }),
        }
    }

    /// Whether two specs probe the same thing, so that a reload changing only the interval,
    /// timeout or thresholds keeps the check's state.
    pub fn same_probe(&self, other: &CheckSpec) -> bool {
        self.probe == other.probe && self.port == other.port
    }
}

impl HttpCheck {
    fn validate(&self) -> Result<(), SpecError> {
        let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !self.path.starts_with('/') || bad(&self.path) {
            return Err(SpecError::Path(self.path.clone()));
        }
        match &self.host {
            Some(host) if bad(host) => Err(SpecError::Host(host.clone())),
            _ => Ok(()),
        }
    }
}

/// A short label for logs and reasons: `tcp :80`, `http :80 /health`, `dns :53 example.com A`.
impl fmt::Display for CheckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Tcp => write!(f, "tcp :{}", self.port),
            Probe::Http(h) => write!(f, "http :{} {}", self.port, h.path),
            Probe::Https { http, .. } => write!(f, "https :{} {}", self.port, http.path),
            Probe::Dns(d) => write!(f, "dns :{} {} {}", self.port, d.query, d.query_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> CheckSpec {
        CheckSpec {
            probe: Probe::Tcp,
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        }
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!("aaaa".parse::<QueryType>(), Ok(QueryType::AAAA));
        assert_eq!("TYPE65".parse::<QueryType>(), Ok(QueryType(65)));
        assert_eq!(QueryType(65).to_string(), "TYPE65");
        assert!("BOGUS".parse::<QueryType>().is_err());
        assert_eq!("nxdomain".parse::<Rcode>(), Ok(Rcode::NXDOMAIN));
        assert_eq!("9".parse::<Rcode>(), Ok(Rcode(9)));
        assert!("16".parse::<Rcode>().is_err());
        assert_eq!(Rcode::NOERROR.to_string(), "NOERROR");
    }

    #[test]
    fn validation_refuses_what_probes_cannot_send() {
        assert_eq!(tcp().validate(), Ok(()));
        let zero = CheckSpec { fall: 0, ..tcp() };
        assert_eq!(zero.validate(), Err(SpecError::Zero("fall")));
        let http = |path: &str, host: Option<&str>| CheckSpec {
            probe: Probe::Http(HttpCheck {
                path: path.into(),
                host: host.map(Into::into),
                expect_status: 200,
                expect_body: None,
            }),
            ..tcp()
        };
        assert_eq!(http("/ok", Some("example.com")).validate(), Ok(()));
        assert!(matches!(
            http("ok", None).validate(),
            Err(SpecError::Path(_))
        ));
        assert!(matches!(
            http("/a b", None).validate(),
            Err(SpecError::Path(_))
        ));
        assert!(matches!(
            http("/", Some("x\r\nEvil: 1")).validate(),
            Err(SpecError::Host(_))
        ));
        let dns = CheckSpec {
            probe: Probe::Dns(DnsCheck {
                query: "a..b".into(),
                query_type: QueryType::A,
                expect_rcode: Rcode::NOERROR,
            }),
            ..tcp()
        };
        assert!(matches!(dns.validate(), Err(SpecError::DnsName { .. })));
    }

    #[test]
    fn identity_ignores_timing_and_thresholds() {
        let slow = CheckSpec {
            interval: Duration::from_secs(5),
            rise: 3,
            ..tcp()
        };
        assert!(tcp().same_probe(&slow));
        assert!(!tcp().same_probe(&CheckSpec { port: 81, ..tcp() }));
        assert_eq!(tcp().to_string(), "tcp :80");
    }
}
