//! The owner's part of flow sharing: naming new flows and sharing them, importing peers'
//! records (held at start until the backends are healthy), and full sends.

use std::time::Instant;

use tracing::{error, info};

use crate::{daemon::chain, owner::Owner};

impl Owner {
    pub(crate) fn share_flows(&mut self, events: &[fulcrum::FlowEvent]) {
        let Some(sender) = &self.flow_sender else {
            return;
        };
        let records = self.lb.flow_records(events);
        let n = records.len() as u64;
        sender.share(records);
        self.imports.send_modify(|t| t.shared += n);
    }

    pub(crate) fn import_flows(&mut self, records: &[fulcrum::FlowRecord]) {
        if let Some(held) = &mut self.held_imports
            && held.hold(records)
        {
            let n = held.len();
            self.imports.send_modify(|t| t.held = n as u64);
            self.release_held_imports();
            return;
        }
        let report = self.lb.import_flows(records);
        self.imports.send_modify(|t| t.add(&report));
    }

    /// Imports the held records once every configured backend is healthy or the deadline
    /// passed; from then on records are imported as they come.
    pub(crate) fn release_held_imports(&mut self) {
        let Some(held) = &self.held_imports else {
            return;
        };
        let all_healthy = (self.config.services.iter()).all(|s| {
            s.backends
                .iter()
                .all(|b| self.is_healthy(&(s.name.clone(), b.address)))
        });
        if !all_healthy && !held.expired(Instant::now()) {
            return;
        }
        let Some(held) = self.held_imports.take() else {
            return;
        };
        let records = held.into_records();
        let report = self.lb.import_flows(&records);
        info!(
            records = records.len(),
            imported = report.imported,
            unknown_backend = report.unknown_backend,
            "flow sharing: imported the peers' flows held at start"
        );
        self.imports.send_modify(|t| {
            t.add(&report);
            t.held = 0;
            t.holding = false;
        });
    }

    pub(crate) fn dump_flows(&mut self, to: fulcrum_flowsync::Target) {
        let Some(sender) = &self.flow_sender else {
            return;
        };
        match self.lb.scan_flows() {
            Ok(records) => sender.send_full_blocking(records, to),
            Err(e) => error!(error = %chain(&e), "flow sharing: scanning the flow table failed"),
        }
    }
}
