//! The flow sharing lines of `fulcrum status`, from `GET /api/v1/flow-sharing`.

use std::fmt::Write as _;

use serde_json::Value;

/// A few lines: sync state and gate, counters, refusals by reason, each peer.
pub fn render(flows: &Value) -> String {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let yes = |k: &str| flows.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut out = String::from("\nflow sharing");
    if let Some(listen) = flows.get("listen").and_then(Value::as_str) {
        let _ = write!(out, " on {listen}");
    }
    if let Some(group) = flows.get("multicast_group").and_then(Value::as_str) {
        let _ = write!(out, ", group {group}");
    }
    let _ = writeln!(
        out,
        ": {}, announcing {}",
        if yes("synced") { "synced" } else { "syncing" },
        if yes("announce_gate_open") {
            "allowed"
        } else {
            "held"
        },
    );
    let imports = flows.get("imports").unwrap_or(&Value::Null);
    let _ = writeln!(
        out,
        "  sent {} records, received {}, imported {} (unknown backend {}, unknown service {})",
        n(flows, "sent_records"),
        n(flows, "received_records"),
        n(imports, "imported"),
        n(imports, "unknown_backend"),
        n(imports, "unknown_service"),
    );
    let r = flows.get("rejected").unwrap_or(&Value::Null);
    let _ = writeln!(
        out,
        "  rejected: bad_mac {}, replayed {}, stale {}, malformed {}, unknown_sender {}",
        n(r, "bad_mac"),
        n(r, "replayed"),
        n(r, "stale"),
        n(r, "malformed"),
        n(r, "unknown_sender"),
    );
    for peer in flows
        .get("peers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "  peer {}: {} datagrams, {}",
            peer.get("address").and_then(Value::as_str).unwrap_or("?"),
            n(peer, "received_datagrams"),
            match peer.get("synced").and_then(Value::as_bool) {
                Some(true) => "answered the start-up sync",
                _ => "no start-up dump from it",
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_state_counts_and_peers() {
        let flows: Value = serde_json::from_str(
            r#"{"enabled":true,"announce_gate_open":false,"synced":false,
                "listen":"10.0.2.11:7946","multicast_group":null,"sent_records":3,
                "received_records":5,"rejected":{"bad_mac":2,"replayed":1,"stale":0,
                "malformed":0,"unknown_sender":0},
                "peers":[{"address":"10.0.2.12:7946","received_datagrams":4,"synced":true}],
                "imports":{"imported":4,"unknown_backend":1,"unknown_service":0}}"#,
        )
        .unwrap();
        let text = render(&flows);
        assert!(
            text.contains("flow sharing on 10.0.2.11:7946: syncing, announcing held"),
            "{text}"
        );
        assert!(text.contains("imported 4 (unknown backend 1"), "{text}");
        assert!(text.contains("bad_mac 2, replayed 1"), "{text}");
        assert!(
            text.contains("peer 10.0.2.12:7946: 4 datagrams, answered"),
            "{text}"
        );
    }
}
