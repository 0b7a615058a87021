//! The Prometheus text exposition of a [`Status`] (format 0.0.4), kept to what
//! `promtool check metrics` accepts: HELP and TYPE for every family, `_total` counters,
//! base units, escaped label values.

use std::fmt::Write as _;

use crate::status::{BackendStatus, Health, ServiceStatus, Status};

mod bgp;

pub use bgp::render_bgp;

/// Global counters that are actions; every other global counter is a reason.
const ACTIONS: [&str; 4] = ["tx", "redirect", "pass", "drop"];

/// Renders the exposition.
pub fn render(status: &Status) -> String {
    let mut out = Exposition::default();

    out.family(
        "fulcrum_packets_total",
        "counter",
        "Packets the data plane handled, by action.",
    );
    for (label, value) in status
        .counters
        .iter()
        .filter(|(l, _)| ACTIONS.contains(&l.as_str()))
    {
        out.sample("fulcrum_packets_total", &[("action", label)], *value as f64);
    }
    out.family(
        "fulcrum_packet_reasons_total",
        "counter",
        "Packets by the reason they took their path (drops, passes, flow events).",
    );
    for (label, value) in status
        .counters
        .iter()
        .filter(|(l, _)| !ACTIONS.contains(&l.as_str()))
    {
        out.sample(
            "fulcrum_packet_reasons_total",
            &[("reason", label)],
            *value as f64,
        );
    }

    out.family(
        "fulcrum_health_local_failures_total",
        "counter",
        "Health probes that could not run for a local reason (descriptors, memory, ports).",
    );
    out.sample(
        "fulcrum_health_local_failures_total",
        &[],
        status.health_local_failures as f64,
    );

    let name = "fulcrum_service_info";
    out.family(
        name,
        "gauge",
        "Always 1: a service's VIP, port, protocol, forwarding mode and ICMP echo, as labels.",
    );
    for s in &status.services {
        let (vip, port) = (s.vip.to_string(), s.port.to_string());
        let labels = [
            ("service", s.name.as_str()),
            ("vip", &vip),
            ("port", &port),
            ("protocol", &s.protocol),
            ("forwarding", &s.forwarding),
            ("icmp_echo", if s.icmp_echo { "true" } else { "false" }),
        ];
        out.sample(name, &labels, 1.0);
    }

    type Pick = fn(&crate::status::TrafficStatus) -> f64;
    let traffic: [(&str, &str, Pick); 3] = [
        ("packets_total", "Packets forwarded", |t| t.packets as f64),
        ("bytes_total", "Bytes forwarded (whole frames)", |t| {
            t.bytes as f64
        }),
        ("new_flows_total", "Flows newly assigned", |t| {
            t.new_flows as f64
        }),
    ];
    for (suffix, help, pick) in traffic {
        let name = format!("fulcrum_service_{suffix}");
        out.family(&name, "counter", &format!("{help} for a service."));
        for s in &status.services {
            out.sample(&name, &[("service", &s.name)], pick(&s.traffic));
        }
        let name = format!("fulcrum_backend_{suffix}");
        out.family(&name, "counter", &format!("{help} to a backend."));
        for (s, b, addr) in backends(status) {
            out.sample(
                &name,
                &[("service", &s.name), ("backend", &addr)],
                pick(&b.traffic),
            );
        }
    }

    type Gauge = fn(&crate::status::BackendStatus) -> f64;
    let gauges: [(&str, &str, Gauge); 4] = [
        (
            "fulcrum_backend_up",
            "1 when the backend's health checks pass, else 0.",
            |b| f64::from(u8::from(b.health == Health::Up)),
        ),
        (
            "fulcrum_backend_drained",
            "1 when the backend is drained, else 0.",
            |b| f64::from(u8::from(b.drained)),
        ),
        (
            "fulcrum_backend_unresolved",
            "1 when the data plane cannot reach the backend (see the API's data_plane_error), else 0.",
            |b| f64::from(u8::from(b.data_plane_error.is_some())),
        ),
        (
            "fulcrum_backend_leaving",
            "1 while a backend removed from the configuration drains before it leaves, else 0.",
            |b| f64::from(u8::from(b.leaving)),
        ),
    ];
    for (name, help, pick) in gauges {
        out.family(name, "gauge", help);
        for (s, b, addr) in backends(status) {
            out.sample(name, &[("service", &s.name), ("backend", &addr)], pick(b));
        }
    }
    let name = "fulcrum_backend_health_info";
    out.family(
        name,
        "gauge",
        "Always 1: the backend's health in words and its last health-check error, as labels.",
    );
    for (s, b, addr) in backends(status) {
        let health = match b.health {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        };
        let error = b.last_error.as_deref().unwrap_or("");
        let labels = [
            ("service", s.name.as_str()),
            ("backend", &addr),
            ("health", health),
            ("last_error", error),
        ];
        out.sample(name, &labels, 1.0);
    }
    let name = "fulcrum_health_check_duration_seconds";
    out.family(
        name,
        "gauge",
        "How long a backend's last health check took.",
    );
    for (s, b, addr) in backends(status) {
        for (i, c) in b.checks.iter().enumerate() {
            if let Some(latency) = c.latency_seconds {
                let index = i.to_string();
                let labels = [
                    ("service", s.name.as_str()),
                    ("backend", &addr),
                    ("check", &index),
                    ("type", &c.kind),
                ];
                out.sample(name, &labels, latency);
            }
        }
    }
    out.finish()
}

/// Every backend with its service and its address as a label value.
fn backends(status: &Status) -> impl Iterator<Item = (&ServiceStatus, &BackendStatus, String)> {
    status.services.iter().flat_map(|s| {
        s.backends
            .iter()
            .map(move |b| (s, b, b.address.to_string()))
    })
}

/// The text being built; every family's samples follow its own HELP and TYPE.
#[derive(Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
        }
    }

    pub(crate) fn finish(self) -> String {
        self.text
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };

    use super::*;
    use crate::status::{BackendStatus, CheckStatus, ServiceStatus, TrafficStatus};

    fn status() -> Status {
        let traffic = TrafficStatus {
            packets: 10,
            bytes: 1500,
            new_flows: 2,
            packets_per_second: 1.0,
            bits_per_second: 1200.0,
        };
        let backend = |last: u8, health| BackendStatus {
            address: [10, 66, 0, last].into(),
            weight: 1,
            drained: last == 12,
            health,
            last_error: (health == Health::Down).then(|| "connect refused".to_string()),
            checks: vec![CheckStatus {
                kind: "http".into(),
                up: health == Health::Up,
                latency_seconds: Some(0.0012),
                last_error: None,
            }],
            traffic,
            data_plane_error: (last == 12).then(|| "backend 10.66.0.12: no route to it".into()),
            leaving: false,
        };
        let six = BackendStatus {
            address: "2001:db8:200::10".parse().expect("address"),
            ..backend(11, Health::Up)
        };
        Status {
            services: vec![
                ServiceStatus {
                    name: "web \"main\"".into(),
                    vip: [10, 66, 99, 1].into(),
                    port: 80,
                    protocol: "tcp".into(),
                    forwarding: "l2-dsr".into(),
                    icmp_echo: true,
                    traffic,
                    backends: vec![backend(11, Health::Up), backend(12, Health::Down)],
                },
                ServiceStatus {
                    name: "web6".into(),
                    vip: "2001:db8:100::1".parse().expect("vip"),
                    port: 443,
                    protocol: "tcp".into(),
                    forwarding: "gue".into(),
                    icmp_echo: false,
                    traffic,
                    backends: vec![six],
                },
            ],
            counters: vec![
                ("tx".into(), 7),
                ("pass".into(), 3),
                ("pass_not_vip".into(), 3),
            ],
            reloading: false,
            health_local_failures: 3,
        }
    }

    #[test]
    fn renders_what_an_operator_greps_for() {
        let text = render(&status());
        for line in [
            "fulcrum_packets_total{action=\"tx\"} 7",
            "fulcrum_packet_reasons_total{reason=\"pass_not_vip\"} 3",
            "fulcrum_backend_up{service=\"web \\\"main\\\"\",backend=\"10.66.0.11\"} 1",
            "fulcrum_backend_up{service=\"web \\\"main\\\"\",backend=\"10.66.0.12\"} 0",
            "fulcrum_backend_drained{service=\"web \\\"main\\\"\",backend=\"10.66.0.12\"} 1",
            "fulcrum_backend_unresolved{service=\"web \\\"main\\\"\",backend=\"10.66.0.12\"} 1",
            "fulcrum_health_local_failures_total 3",
            "fulcrum_service_bytes_total{service=\"web \\\"main\\\"\"} 1500",
            "fulcrum_backend_health_info{service=\"web \\\"main\\\"\",backend=\"10.66.0.12\",health=\"down\",last_error=\"connect refused\"} 1",
            "fulcrum_service_info{service=\"web6\",vip=\"2001:db8:100::1\",port=\"443\",protocol=\"tcp\",forwarding=\"gue\",icmp_echo=\"false\"} 1",
            "fulcrum_backend_up{service=\"web6\",backend=\"2001:db8:200::10\"} 1",
            "fulcrum_backend_packets_total{service=\"web6\",backend=\"2001:db8:200::10\"} 10",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn promtool_accepts_it() {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus, installed by make setup)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(
                (render(&status())
                    + &render_bgp(&bgp::tests::status())
                    + &crate::flow_metrics::render(&crate::flow_metrics::tests::status())
                    + &crate::talkers::render(&crate::talkers::tests::status()))
                    .as_bytes(),
            )
            .expect("write");
        let out = child.wait_with_output().expect("promtool output");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool refused the exposition: {said}"
        );
        assert!(said.trim().is_empty(), "promtool has remarks: {said}");
    }
}
