//! The BGP part of `fulcrum status`: one line per peer under the services table.

use serde::Deserialize;

/// What `GET /api/v1/bgp` returns, as far as the CLI shows it.
#[derive(Debug, Deserialize)]
pub(crate) struct Bgp {
    enabled: bool,
    #[serde(default)]
    asn: Option<u32>,
    #[serde(default = "yes")]
    announce_gate: bool,
    #[serde(default)]
    peers: Vec<Peer>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct Peer {
    address: String,
    asn: u32,
    state: String,
    #[serde(default)]
    uptime_seconds: Option<u64>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    announced: Vec<String>,
}

/// The peers table, or nothing when BGP is not configured (or the daemon predates it).
pub(crate) fn render(body: &[u8]) -> String {
    let Ok(bgp) = serde_json::from_slice::<Bgp>(body) else {
        return String::new();
    };
    if !bgp.enabled {
        return String::new();
    }
    let mut out = format!("\nBGP (AS {})", bgp.asn.unwrap_or(0));
    if !bgp.announce_gate {
        out.push_str(": announcing held back until flow sharing has synced");
    }
    out.push('\n');
    let rows: Vec<[String; 5]> = (bgp.peers.iter())
        .map(|p| {
            [
                format!("  {}", p.address),
                p.asn.to_string(),
                p.state.clone(),
                p.uptime_seconds.map_or_else(|| "-".to_owned(), uptime),
                match (&p.last_error, p.announced.is_empty()) {
                    (_, false) => format!("announced {}", p.announced.join(", ")),
                    (Some(e), true) => e.replace(['\n', '\r'], " "),
                    (None, true) => String::new(),
                },
            ]
        })
        .collect();
    let header = ["PEER", "ASN", "STATE", "UPTIME", "ROUTES / LAST ERROR"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = (row.iter().zip(widths))
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`: the two largest units.
fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{}s", s % 60),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_peers_and_nothing_without_bgp() {
        assert_eq!(super::render(br#"{"enabled": false}"#), "");
        assert_eq!(super::render(b"not json"), "");
        let text = super::render(
            br#"{"enabled": true, "asn": 65001, "announce_gate": true, "peers": [
                {"address": "10.0.2.1", "asn": 65000, "state": "Established",
                 "uptime_seconds": 61, "last_error": null, "announced": ["10.0.100.1/32"]},
                {"address": "10.0.2.2", "asn": 65000, "state": "Connect",
                 "uptime_seconds": null, "last_error": "connection closed by the peer",
                 "announced": []}]}"#,
        );
        assert_eq!(
            text,
            "\nBGP (AS 65001)\n\
             PEER        ASN    STATE        UPTIME  ROUTES / LAST ERROR\n\
             \x20 10.0.2.1  65000  Established  1m1s    announced 10.0.100.1/32\n\
             \x20 10.0.2.2  65000  Connect      -       connection closed by the peer\n"
        );
    }
}
