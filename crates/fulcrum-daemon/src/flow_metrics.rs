//! `fulcrum_flow_sharing_*`: flow sharing in the Prometheus exposition.

use crate::{flow_sharing::FlowSharingStatus, metrics::Exposition};

/// The flow sharing families, to append to [`crate::metrics::render`]'s text.
pub fn render(status: &FlowSharingStatus) -> String {
    let mut out = Exposition::default();
    let gauge = |out: &mut Exposition, name: &str, help: &str, value: bool| {
        out.family(name, "gauge", help);
        out.sample(name, &[], f64::from(u8::from(value)));
    };
    gauge(
        &mut out,
        "fulcrum_flow_sharing_synced",
        "1 once the start-up sync ended (peers answered or sync_timeout passed).",
        status.sync.as_ref().is_some_and(|s| s.synced),
    );
    gauge(
        &mut out,
        "fulcrum_flow_sharing_announce_gate_open",
        "1 while VIPs may be announced; 0 while a starting balancer learns its peers' flows.",
        status.announce_gate_open,
    );
    let Some(sync) = &status.sync else {
        return out.finish();
    };
    let counters: [(&str, &str, u64); 8] = [
        (
            "sent_records_total",
            "Flow records sent.",
            sync.sent_records,
        ),
        (
            "sent_datagrams_total",
            "Datagrams sent, per destination.",
            sync.sent_datagrams,
        ),
        (
            "send_errors_total",
            "Datagrams the kernel refused to send.",
            sync.send_errors,
        ),
        (
            "share_dropped_total",
            "New records dropped because the send queue was full.",
            sync.share_dropped,
        ),
        (
            "full_sends_total",
            "Dumps and refreshes sent whole.",
            sync.full_sends,
        ),
        (
            "received_records_total",
            "Flow records accepted from peers.",
            sync.received_records,
        ),
        (
            "received_datagrams_total",
            "Datagrams accepted from peers.",
            sync.received_datagrams,
        ),
        (
            "shared_flows_total",
            "New flows the data plane reported and this balancer shared.",
            status.imports.shared,
        ),
    ];
    for (suffix, help, value) in counters {
        let name = format!("fulcrum_flow_sharing_{suffix}");
        out.family(&name, "counter", help);
        out.sample(&name, &[], value as f64);
    }
    let name = "fulcrum_flow_sharing_rejected_total";
    out.family(
        name,
        "counter",
        "Datagrams refused (never imported), by reason.",
    );
    let r = &sync.rejected;
    for (reason, value) in [
        ("malformed", r.malformed),
        ("bad_mac", r.bad_mac),
        ("stale", r.stale),
        ("replayed", r.replayed),
        ("unknown_sender", r.unknown_sender),
    ] {
        out.sample(name, &[("reason", reason)], value as f64);
    }
    let name = "fulcrum_flow_sharing_imported_total";
    out.family(
        name,
        "counter",
        "Received records by what the flow table did with them.",
    );
    let i = &status.imports;
    for (result, value) in [
        ("imported", i.imported),
        ("unchanged", i.unchanged),
        ("unknown_service", i.unknown_service),
        ("unknown_backend", i.unknown_backend),
        ("failed", i.failed),
    ] {
        out.sample(name, &[("result", result)], value as f64);
    }
    let name = "fulcrum_flow_sharing_peer_synced";
    out.family(
        name,
        "gauge",
        "1 once the peer answered the start-up sync with a full dump.",
    );
    for p in &sync.peers {
        out.sample(
            name,
            &[("peer", &p.address.to_string())],
            f64::from(u8::from(p.synced)),
        );
    }
    let name = "fulcrum_flow_sharing_peer_received_datagrams_total";
    out.family(name, "counter", "Datagrams accepted from the peer.");
    for p in &sync.peers {
        out.sample(
            name,
            &[("peer", &p.address.to_string())],
            p.received_datagrams as f64,
        );
    }
    out.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use fulcrum_flowsync::{FlowSyncStatus, PeerStatus};

    use super::*;
    use crate::flow_sharing::ImportTotals;

    /// Flow sharing with a peer, rejections and imports: what promtool checks with the
    /// rest (`metrics::tests`).
    pub(crate) fn status() -> FlowSharingStatus {
        let mut sync = FlowSyncStatus {
            synced: true,
            sent_records: 12,
            peers: vec![PeerStatus {
                address: "10.0.2.12:7946".parse().unwrap(),
                received_datagrams: 4,
                synced: true,
            }],
            ..FlowSyncStatus::default()
        };
        sync.rejected.bad_mac = 3;
        FlowSharingStatus {
            enabled: true,
            announce_gate_open: false,
            sync: Some(sync),
            imports: ImportTotals {
                imported: 5,
                unknown_backend: 2,
                ..ImportTotals::default()
            },
        }
    }

    #[test]
    fn renders_what_an_operator_greps_for() {
        let text = render(&status());
        for line in [
            "fulcrum_flow_sharing_synced 1",
            "fulcrum_flow_sharing_announce_gate_open 0",
            "fulcrum_flow_sharing_sent_records_total 12",
            "fulcrum_flow_sharing_rejected_total{reason=\"bad_mac\"} 3",
            "fulcrum_flow_sharing_imported_total{result=\"unknown_backend\"} 2",
            "fulcrum_flow_sharing_peer_synced{peer=\"10.0.2.12:7946\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
