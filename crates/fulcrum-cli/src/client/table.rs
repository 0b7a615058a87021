//! The `fulcrum status` table: the part of the services' JSON it shows, and its layout.

use std::fmt::Write as _;

use serde::Deserialize;

use super::text::{one_line, wrap};

/// The width `fulcrum status` fits its table into.
pub(super) const TABLE_WIDTH: usize = 100;
/// The narrowest the last error column gets, however wide the other columns are.
const MIN_ERROR_WIDTH: usize = 24;
/// The most lines a last error is wrapped onto before it is cut.
const MAX_ERROR_LINES: usize = 4;

/// What `GET /api/v1/services` returns, as far as the CLI shows it.
#[derive(Debug, Deserialize)]
pub(super) struct Snapshot {
    services: Vec<Service>,
    #[serde(default)]
    reload_error: Option<String>,
}

/// One service.
#[derive(Debug, Deserialize)]
struct Service {
    name: String,
    vip: String,
    /// 0 means every port.
    port: u16,
    protocol: String,
    /// `l2-dsr`, `ipip` or `gue`; absent from daemons before tunnels.
    #[serde(default)]
    forwarding: Option<String>,
    #[serde(default)]
    traffic: Traffic,
    #[serde(default)]
    backends: Vec<Backend>,
}

/// One backend of a service.
#[derive(Debug, Deserialize)]
struct Backend {
    address: String,
    weight: u32,
    drained: bool,
    /// `up`, `down` or `unknown`.
    health: String,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    traffic: Traffic,
}

/// Rates; `null` (a rate that was not a number) shows as 0.
#[derive(Debug, Default, Deserialize)]
struct Traffic {
    #[serde(default)]
    packets_per_second: Option<f64>,
    #[serde(default)]
    bits_per_second: Option<f64>,
}

const HEADERS: [&str; 8] = [
    "SERVICE/BACKEND",
    "WEIGHT",
    "HEALTH",
    "DRAINED",
    "PPS",
    "BIT RATE",
    "LAST ERROR",
    "",
];
/// Columns aligned right: the numbers.
const RIGHT: [bool; 8] = [false, true, false, false, true, true, false, false];
/// Backends are indented under their service.
const INDENT: &str = "  ";

/// `VIP:PORT/PROTO`, an IPv6 VIP in brackets when a port follows; `VIP/PROTO` for every port.
fn service_label(vip: &str, port: u16, protocol: &str) -> String {
    match port {
        0 => format!("{vip}/{protocol}"),
        port if vip.contains(':') => format!("[{vip}]:{port}/{protocol}"),
        port => format!("{vip}:{port}/{protocol}"),
    }
}

/// The status table: a line per service (name, `VIP:PORT/PROTO`, its forwarding mode and its rates) and under
/// it a line per backend; last errors wrapped so that lines fit `width` columns when given.
/// Then the reload error, if any.
pub(super) fn render(snapshot: &Snapshot, width: Option<usize>) -> String {
    let mut out = String::new();
    if snapshot.services.is_empty() {
        out.push_str("no services\n");
    }
    // Cells: SERVICE/BACKEND, WEIGHT, HEALTH, DRAINED, PPS, BIT RATE, LAST ERROR. A service's
    // first cell spans the columns up to PPS.
    let mut rows: Vec<(bool, [String; 7])> = Vec::new();
    for service in &snapshot.services {
        let (name, vip, protocol) = (
            one_line(&service.name),
            one_line(&service.vip),
            one_line(&service.protocol),
        );
        let id = service_label(&vip, service.port, &protocol);
        let label = match &service.forwarding {
            Some(mode) => format!("{name}  {id}  {}", one_line(mode)),
            None => format!("{name}  {id}"),
        };
        let [pps, bits] = rates(&service.traffic);
        rows.push((
            true,
            [label, "".into(), "".into(), "".into(), pps, bits, "".into()],
        ));
        if service.backends.is_empty() {
            let none = format!("{INDENT}(no backends)");
            rows.push((
                false,
                [
                    none,
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ],
            ));
        }
        for backend in &service.backends {
            let [pps, bits] = rates(&backend.traffic);
            rows.push((
                false,
                [
                    format!("{INDENT}{}", one_line(&backend.address)),
                    backend.weight.to_string(),
                    one_line(&backend.health),
                    if backend.drained { "yes" } else { "no" }.into(),
                    pps,
                    bits,
                    backend
                        .last_error
                        .as_deref()
                        .map(one_line)
                        .unwrap_or_default(),
                ],
            ));
        }
    }
    if !rows.is_empty() {
        let mut widths: [usize; 6] = std::array::from_fn(|i| HEADERS[i].chars().count());
        for (is_service, row) in &rows {
            for (i, (w, cell)) in widths.iter_mut().zip(row).enumerate() {
                if !*is_service || i >= 4 {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        // A service's label spans the first four columns; widen the first if it must.
        let span = |widths: &[usize; 6]| widths[..4].iter().sum::<usize>() + 2 * 3;
        for (_, row) in rows.iter().filter(|(is_service, _)| *is_service) {
            let label = row[0].chars().count();
            widths[0] += label.saturating_sub(span(&widths));
        }
        // Everything before the last column, with two spaces between columns.
        let before_error: usize = widths.iter().map(|w| w + 2).sum();
        let error_width =
            width.map(|width| width.saturating_sub(before_error).max(MIN_ERROR_WIDTH));
        let header: [String; 7] = std::array::from_fn(|i| HEADERS[i].to_string());
        for (is_service, row) in std::iter::once(&(false, header)).chain(&rows) {
            let mut line = String::new();
            let pad = |line: &mut String, cell: &str, width: usize, right: bool| {
                let pad = width.saturating_sub(cell.chars().count());
                if right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.push_str("  ");
            };
            let first = if *is_service {
                pad(&mut line, &row[0], span(&widths), false);
                4
            } else {
                0
            };
            for i in first..6 {
                pad(&mut line, &row[i], widths[i], RIGHT[i]);
            }
            let error = match error_width {
                Some(max) => wrap(&row[6], max, MAX_ERROR_LINES),
                None => vec![row[6].clone()],
            };
            for (n, part) in error.iter().enumerate() {
                if n > 0 {
                    line = " ".repeat(before_error);
                }
                line.push_str(part);
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    if let Some(error) = &snapshot.reload_error {
        let _ = writeln!(
            out,
            "\nlast reload refused, the running configuration stays: {}",
            one_line(error)
        );
    }
    out
}

/// Packets per second and bit rate, as shown.
fn rates(traffic: &Traffic) -> [String; 2] {
    [
        si(traffic.packets_per_second.unwrap_or(0.0)),
        format!("{}b/s", si_spaced(traffic.bits_per_second.unwrap_or(0.0))),
    ]
}

/// A rate with an SI prefix and two or three significant digits: `0`, `4.5`, `950`,
/// `12k`, `1.2M`.
pub(super) fn si(value: f64) -> String {
    let (number, prefix) = scaled(value);
    format!("{number}{prefix}")
}

/// Like [`si`], with a space before the prefix, for a unit to follow: `12.3 M`, `950 `.
fn si_spaced(value: f64) -> String {
    let (number, prefix) = scaled(value);
    format!("{number} {prefix}")
}

fn scaled(value: f64) -> (String, &'static str) {
    let value = if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    };
    if value == 0.0 {
        return ("0".into(), "");
    }
    let mut scaled = value;
    for prefix in ["", "k", "M", "G", "T", "P"] {
        let text = if scaled < 9.95 {
            format!("{scaled:.1}")
        } else {
            format!("{scaled:.0}")
        };
        if text.parse::<f64>().unwrap_or(f64::MAX) < 1000.0 || prefix == "P" {
            return (text, prefix);
        }
        scaled /= 1000.0;
    }
    unreachable!("the loop returns at its last prefix")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rates() {
        let cases = [
            (0.0, "0"),
            (f64::NAN, "0"),
            (-3.0, "0"),
            (0.5, "0.5"),
            (9.96, "10"),
            (950.0, "950"),
            (999.6, "1.0k"),
            (12_345.0, "12k"),
            (1_234_567.0, "1.2M"),
            (10e9, "10G"),
        ];
        for (value, want) in cases {
            assert_eq!(si(value), want, "{value}");
        }
        assert_eq!(si_spaced(12.3e6), "12 M");
        assert_eq!(si_spaced(800.0), "800 ");
    }

    fn snapshot() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "services": [{
                "name": "web", "vip": "10.66.99.1", "port": 80, "protocol": "tcp",
                "traffic": { "packets_per_second": 2000.0, "bits_per_second": 1.6e7 },
                "new_field": 1,
                "backends": [
                    { "address": "10.66.0.11", "weight": 1, "drained": false, "health": "up",
                      "last_error": null, "checks": [],
                      "traffic": { "packets_per_second": 1520.0, "bits_per_second": 9.1e6 } },
                    { "address": "10.66.0.12", "weight": 2, "drained": true, "health": "down",
                      "last_error": "http: GET http://10.66.0.12:80/: connect: connection refused (os error 111) after 500ms, and more text to be cut",
                      "traffic": { "packets_per_second": null, "bits_per_second": 0.0 } }
                ]
            }, {
                "name": "dns", "vip": "10.66.99.2", "port": 0, "protocol": "udp", "backends": []
            }],
            "counters": [["tx", 5]],
            "events": [],
            "reload_error": "fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address"
        }))
        .unwrap()
    }

    #[test]
    fn renders_a_table_in_100_columns() {
        let text = render(&snapshot(), Some(TABLE_WIDTH));
        print!("{text}");
        let want = "\
SERVICE/BACKEND  WEIGHT  HEALTH  DRAINED   PPS  BIT RATE  LAST ERROR
web  10.66.99.1:80/tcp                    2.0k   16 Mb/s
  10.66.0.11          1  up      no       1.5k  9.1 Mb/s
  10.66.0.12          2  down    yes         0     0 b/s  http: GET http://10.66.0.12:80/: connect:
                                                          connection refused (os error 111) after
                                                          500ms, and more text to be cut
dns  10.66.99.2/udp                          0     0 b/s
  (no backends)

last reload refused, the running configuration stays: fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address
";
        assert_eq!(text, want);
        let wide = render(&snapshot(), None);
        assert!(wide.contains(
            "0 b/s  http: GET http://10.66.0.12:80/: connect: connection refused (os error 111) \
             after 500ms, and more text to be cut\n"
        ));
    }

    #[test]
    fn a_long_service_label_widens_the_first_column() {
        let mut snapshot = snapshot();
        snapshot.services[1].name = "resolver-for-the-internal-zones".into();
        let text = render(&snapshot, Some(TABLE_WIDTH));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE/BACKEND         WEIGHT  HEALTH  DRAINED   PPS  BIT RATE  LAST ERROR"
        );
        assert_eq!(
            lines[7],
            "resolver-for-the-internal-zones  10.66.99.2/udp     0     0 b/s"
        );
        assert!(
            lines[3].ends_with("0 b/s  http: GET http://10.66.0.12:80/:"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("  connect: connection refused (os"),
            "{text}"
        );
    }

    #[test]
    fn ipv6_vips_are_bracketed_and_the_mode_follows() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "services": [{
                "name": "web6", "vip": "2001:db8:100::1", "port": 80, "protocol": "tcp",
                "forwarding": "gue",
                "backends": [
                    { "address": "2001:db8:200::10", "weight": 1, "drained": false,
                      "health": "up" }
                ]
            }, {
                "name": "all6", "vip": "2001:db8:100::2", "port": 0, "protocol": "udp",
                "forwarding": "l2-dsr", "backends": []
            }]
        }))
        .unwrap();
        let text = render(&snapshot, Some(TABLE_WIDTH));
        let want = "\
SERVICE/BACKEND     WEIGHT  HEALTH  DRAINED  PPS  BIT RATE  LAST ERROR
web6  [2001:db8:100::1]:80/tcp  gue            0     0 b/s
  2001:db8:200::10       1  up      no         0     0 b/s
all6  2001:db8:100::2/udp  l2-dsr              0     0 b/s
  (no backends)
";
        assert_eq!(text, want, "{text}");
    }

    #[test]
    fn renders_no_services() {
        let snapshot = Snapshot {
            services: vec![],
            reload_error: None,
        };
        assert_eq!(render(&snapshot, Some(TABLE_WIDTH)), "no services\n");
    }
}
