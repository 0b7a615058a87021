//! The validated configuration: what the daemon acts on once the file has been checked.
//!
//! Every value here has passed validation, and every default has been filled in, so the
//! daemon never has to guess or re-check. The YAML spelling of each field is given in
//! backticks; the default, if any, in parentheses.

use std::{fmt, net::IpAddr, net::Ipv4Addr, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

mod bgp;
mod forwarding;

pub use bgp::{Announce, Announcement, Bgp, BgpPeer};
pub use forwarding::{Forwarding, Tunnel, TunnelSource};

/// The whole file. Its order of services and backends is kept, for messages and display;
/// it carries no meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `instance` (`default`): names this daemon's pinned state,
    /// `/sys/fs/bpf/fulcrum/INSTANCE/`, which a restarted daemon adopts. Lowercase letters,
    /// digits, `_` and `-`; two daemons on one host need two instances.
    pub instance: String,
    /// `interfaces`: the interfaces the XDP program is attached to (at least one, each
    /// named once). Clients' packets for the VIPs must arrive on them.
    pub interfaces: Vec<String>,
    /// `xdp_mode` (`native`): how the program is attached to every interface.
    pub xdp_mode: XdpMode,
    /// `api`: where the REST API, metrics and console listen, and who may change things.
    pub api: Api,
    /// `services` (none): the virtual services, with their backends and health checks.
    pub services: Vec<Service>,
    /// Where services and backends are written, for problems found while applying.
    pub places: crate::place::Places,
    /// `flow_sharing` (none): sharing flows with other balancers; off without it.
    pub flow_sharing: Option<crate::flow_sharing::FlowSharing>,
    /// `flow_table` (defaults): the shared flow table's guard against floods.
    pub flow_table: crate::flow_table::FlowTable,
    /// `bgp` (none): the BGP speaker that announces the VIPs; without it nothing is
    /// announced.
    pub bgp: Option<Bgp>,
    /// `top_talkers` (on, see [`crate::TopTalkers`]): the busiest client prefixes per
    /// service.
    pub top_talkers: crate::top_talkers::TopTalkers,
}

/// How XDP is attached; native is the fast path, generic works on any driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// `native`: in the driver, before any allocation. Needs driver support.
    #[default]
    Native,
    /// `generic`: after the kernel built its packet buffer; slower, but works everywhere,
    /// including veth and bridges in a lab.
    Generic,
}

/// The API listener. Reading is open to anyone who can connect; changing needs the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    /// `listen` (`127.0.0.1:9180`): address and port of the REST API, `/metrics` and the
    /// console. Loopback by default, so nothing is exposed until the operator chooses to.
    pub listen: SocketAddr,
    /// `token_file` (none): a file holding the bearer token that mutating calls (drain,
    /// undrain, reload) must present. Without it every mutating call is refused. A relative
    /// path is taken relative to the daemon's working directory.
    pub token_file: Option<PathBuf>,
}

impl Api {
    /// The listener address used when `api.listen` is not given.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9180));
}

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            token_file: None,
        }
    }
}

/// One virtual service: what clients connect to, and the backends that answer them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `name`: how operators, the API, metrics and logs refer to the service. Unique, made
    /// of `a-z`, `0-9`, `_` and `-`, so it is safe in a URL path and a metric label.
    pub name: String,
    /// `vip`: the IPv4 or IPv6 address clients connect to.
    pub vip: IpAddr,
    /// `port` (`0`): the destination port clients connect to; 0 means every port of the VIP.
    pub port: u16,
    /// `protocol` (`tcp`): the transport protocol. (`vip`, `port`, `protocol`) is unique
    /// across services.
    pub protocol: Protocol,
    /// `scheduler` (`5-tuple`): what new flows are hashed on.
    pub scheduler: Scheduler,
    /// `health` (none): the checks a backend must pass to receive new flows. With no
    /// checks every backend counts as healthy.
    pub health: Vec<HealthCheck>,
    /// `health_rule` (`all`): how many of the checks must pass for a backend to be healthy.
    pub health_rule: HealthRule,
    /// `backends`: where flows go; each address appears once.
    pub backends: Vec<Backend>,
    /// `forwarding` (`l2-dsr`), `gue_port`, `tunnel_source`: how packets reach the
    /// backends.
    pub forwarding: Forwarding,
    /// `icmp_echo` (`true`): the balancer answers pings to the VIP itself. It is the VIP's
    /// setting: every service of one VIP must agree.
    pub icmp_echo: bool,
    /// `allow_local_vip` (`false`): the VIP may be an address of this host. Refused by
    /// default, since a service on the host's own address (port 0 or 22) cuts off SSH to
    /// it; set it for a VIP that a VRRP daemon moves onto this host.
    pub allow_local_vip: bool,
    /// `drain_period` (`0s`): how long a backend removed from the file keeps its flows
    /// (drained: no new ones) before it leaves; 0 removes it at once.
    pub drain_period: Duration,
    /// `announce`, `min_healthy`, `med`, `local_pref`, `communities`,
    /// `large_communities`: when and how the VIP is announced over BGP.
    pub announce: Announcement,
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `tcp`.
    #[default]
    Tcp,
    /// `udp`.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What the Maglev lookup hashes, which decides how flows spread and stick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Scheduler {
    /// `5-tuple`: addresses, ports and protocol; the best spread.
    #[default]
    #[serde(rename = "5-tuple")]
    FiveTuple,
    /// `source-ip`: the client address only, so every connection of a client lands on
    /// the same backend ("sticky").
    #[serde(rename = "source-ip")]
    SourceIp,
}

/// How many health checks must pass; several checks make a backend's health robust to
/// one flaky probe ("2 of 3").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthRule {
    /// `all`: every check must pass.
    #[default]
    All,
    /// A number N: at least N of the checks must pass; 1 ≤ N ≤ the number of checks.
    AtLeast(usize),
}

impl HealthRule {
    /// How many passing checks make a backend healthy, out of `checks`; 0 when there are
    /// no checks, so that "no checks" means "always healthy".
    pub fn required(self, checks: usize) -> usize {
        match self {
            HealthRule::All => checks,
            HealthRule::AtLeast(n) => n.min(checks),
        }
    }
}

/// One real server behind a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `address`: the backend's IPv4 or IPv6 address. With `l2-dsr` it is on a subnet
    /// directly connected to the balancer and of the VIP's family; tunnelled, anywhere
    /// routed (an IPv6 VIP needs IPv6 backends). It holds the VIP on its loopback.
    pub address: IpAddr,
    /// `weight` (`1`): its share of new flows relative to the other backends; at least 1
    /// (to take a backend out, drain it).
    pub weight: u32,
    /// `drain` (`false`): when true the backend gets no new flows, while flows already on
    /// it continue; how a backend is taken out for maintenance without breaking anything.
    pub drain: bool,
}

/// One probe run against every backend of a service. Thresholds count consecutive
/// results, so one lost probe does not flap a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// `type` and the fields of that type: what is probed.
    pub kind: CheckKind,
    /// `port` (the service's port): the backend port probed. Required when the service
    /// covers every port (port 0), since there is then nothing to default to.
    pub port: u16,
    /// `interval` (`1s`): time from the start of one probe to the start of the next.
    pub interval: Duration,
    /// `timeout` (`500ms`): how long a probe may take before it counts as failed; shorter
    /// than `interval`, so probes never overlap.
    pub timeout: Duration,
    /// `rise` (`2`): consecutive successes that make a failed backend healthy again (≥ 1).
    pub rise: u32,
    /// `fall` (`2`): consecutive failures that make a healthy backend failed (≥ 1).
    pub fall: u32,
}

impl HealthCheck {
    /// `interval` when not given.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// `timeout` when not given.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// `rise` and `fall` when not given.
    pub const DEFAULT_THRESHOLD: u32 = 2;
}

/// The kind of probe, with the fields that only make sense for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `type: tcp`: a TCP connect succeeds.
    Tcp,
    /// `type: http`: a plain HTTP GET answers as expected.
    Http(HttpCheck),
    /// `type: https`: the same over TLS.
    Https {
        /// What is asked and expected, as for `http`.
        request: HttpCheck,
        /// `insecure` (`false`): when true the backend's certificate is not verified, for
        /// backends with self-signed certificates or addressed by IP.
        insecure: bool,
    },
    /// `type: dns`: a query over UDP gets the expected answer code.
    Dns(DnsCheck),
}

/// An HTTP(S) GET and what its answer must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// `path` (`/`): the path requested; starts with `/`.
    pub path: String,
    /// `expect_status` (`200`): the status the answer must have, 100 to 599.
    pub expect_status: u16,
    /// `expect_body` (none): a substring the answer's body must contain.
    pub expect_body: Option<String>,
    /// `host` (none): the `Host` header sent; without it, the backend's address.
    pub host: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            expect_status: 200,
            expect_body: None,
            host: None,
        }
    }
}

/// A DNS query and the answer code it must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    /// `query` (required): the name asked for, such as `example.com`.
    pub query: String,
    /// `query_type` (`A`): the record type asked for.
    pub query_type: DnsType,
    /// `expect_rcode` (`NOERROR`): the response code that means healthy.
    pub expect_rcode: Rcode,
}

/// DNS record types a check can ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // The names are the standard mnemonics.
pub enum DnsType {
    #[default]
    A,
    Ns,
    Cname,
    Soa,
    Ptr,
    Mx,
    Txt,
    Aaaa,
    Srv,
}

impl DnsType {
    /// The type's number on the wire (RFC 1035, RFC 3596, RFC 2782), for building the query.
    pub const fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Ptr => 12,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
            DnsType::Srv => 33,
        }
    }
}

/// DNS response codes a check can expect (RFC 1035).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // The names are the standard mnemonics.
pub enum Rcode {
    #[default]
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
}

impl Rcode {
    /// The code's number in the DNS header, for comparing with an answer.
    pub const fn code(self) -> u8 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        }
    }
}
