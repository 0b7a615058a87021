//! What the daemon shows people, machines and scripts: one model, rendered as the API's
//! JSON, the Prometheus exposition, the console and the CLI table.

use std::net::IpAddr;

use fulcrum::{Counter, GlobalStats, Traffic};
use serde::Serialize;

/// The whole daemon at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    /// Services in configuration order.
    pub services: Vec<ServiceStatus>,
    /// Global data plane counters by label (`tx`, `pass_not_vip`, ...).
    pub counters: Vec<(String, u64)>,
    /// A reload is being applied; this view is the configuration before it.
    pub reloading: bool,
    /// Probes that could not run for a reason of this host (no descriptors, memory or
    /// ports): the checker's trouble, not the backends'.
    pub health_local_failures: u64,
}

/// One service and its backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// The configured name, unique.
    pub name: String,
    pub vip: IpAddr,
    /// 0 means every port.
    pub port: u16,
    pub protocol: String,
    /// `l2-dsr`, `ipip` or `gue`.
    pub forwarding: String,
    /// The balancer answers pings to the VIP.
    pub icmp_echo: bool,
    pub traffic: TrafficStatus,
    pub backends: Vec<BackendStatus>,
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub weight: u32,
    /// Keeps its flows, takes no new ones.
    pub drained: bool,
    pub health: Health,
    /// Why the last failing check failed, while it fails.
    pub last_error: Option<String>,
    /// Each health check's last result.
    pub checks: Vec<CheckStatus>,
    pub traffic: TrafficStatus,
    /// Why the data plane cannot serve it although it is wanted (no route, behind a
    /// gateway, egress not attached): it is left out while the rest of its service works.
    pub data_plane_error: Option<String>,
    /// Removed from the configuration and draining for its service's `drain_period`: it
    /// keeps its flows, takes no new ones, then leaves.
    pub leaving: bool,
}

/// A backend's health as the checks decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passed `rise` checks (or the service has none): takes new flows unless drained.
    Up,
    /// Failed `fall` checks: out of the data plane, its flows move.
    Down,
    /// Not checked `rise` times yet: takes no new flows.
    Unknown,
}

/// One health check's last result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckStatus {
    /// `tcp`, `http`, `https` or `dns`.
    pub kind: String,
    pub up: bool,
    /// How long the last probe took, in seconds.
    pub latency_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// Counters and the rates computed from the last two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TrafficStatus {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub packets_per_second: f64,
    pub bits_per_second: f64,
}

impl TrafficStatus {
    /// Counters now, with rates against the sample `elapsed_seconds` ago.
    pub fn sample(now: Traffic, before: Option<Traffic>, elapsed_seconds: f64) -> Self {
        let rate = |now: u64, before: u64| {
            if elapsed_seconds > 0.0 {
                now.saturating_sub(before) as f64 / elapsed_seconds
            } else {
                0.0
            }
        };
        let before = before.unwrap_or(now);
        Self {
            packets: now.packets,
            bytes: now.bytes,
            new_flows: now.new_flows,
            packets_per_second: rate(now.packets, before.packets),
            bits_per_second: 8.0 * rate(now.bytes, before.bytes),
        }
    }
}

/// Global counters by their stable labels.
pub fn counters(stats: &GlobalStats) -> Vec<(String, u64)> {
    Counter::ALL
        .iter()
        .map(|c| (c.label().to_string(), stats.get(*c)))
        .collect()
}
