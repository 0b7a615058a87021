//! Flow sharing in the daemon: the tasks between the data plane's owner and
//! [`fulcrum_flowsync`], and the status the API reads.
//!
//! New flows: the ring reader sends raw events to the owner, which names them by address
//! ([`fulcrum::Balancer::flow_records`]) and shares them. Peers' records go to the owner as
//! [`Command::ImportFlows`]. A peer's dump request and the refresh timer make the owner scan
//! the flow table and send it whole ([`Command::DumpFlows`]).

use std::{sync::mpsc, time::Duration};

use fulcrum::{FlowEvents, ImportReport};
use fulcrum_flowsync::{Event, FlowSync, FlowSyncStatus, Key, Multicast, Settings, Target};
use serde::Serialize;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc as tmpsc, watch},
    task::JoinHandle,
};
use tracing::{error, info};

use crate::{daemon::DaemonError, owner::Command};

/// What the owner counted of imported records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportTotals {
    /// Records written to the flow table.
    pub imported: u64,
    /// Records the table already held with that backend.
    pub unchanged: u64,
    /// Records of services not configured here: dropped.
    pub unknown_service: u64,
    /// Records whose backend is not configured or not usable here: dropped, so the data
    /// plane chooses a backend afresh when the flow's next packet arrives.
    pub unknown_backend: u64,
    /// Records the table refused (a map write failed).
    pub failed: u64,
    /// New flows the data plane reported and this balancer shared.
    pub shared: u64,
}

impl ImportTotals {
    pub(crate) fn add(&mut self, r: &ImportReport) {
        self.imported += r.imported as u64;
        self.unchanged += r.unchanged as u64;
        self.unknown_service += r.unknown_service as u64;
        self.unknown_backend += r.unknown_backend as u64;
        self.failed += r.failed as u64;
    }
}

/// `GET /api/v1/flow-sharing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowSharingStatus {
    /// Whether `flow_sharing` is configured.
    pub enabled: bool,
    /// Whether VIPs may be announced: false while a starting balancer waits for its
    /// peers' flows.
    pub announce_gate_open: bool,
    /// The protocol's counters and peers (absent when off).
    #[serde(flatten)]
    pub sync: Option<FlowSyncStatus>,
    /// What the data plane took of the records received.
    pub imports: ImportTotals,
}

/// The watches the API reads flow sharing from, never through the owner.
#[derive(Clone, Debug)]
pub struct FlowSharingView {
    pub(crate) sync: Option<watch::Receiver<FlowSyncStatus>>,
    pub(crate) imports: watch::Receiver<ImportTotals>,
    pub(crate) gate: watch::Receiver<bool>,
}

impl FlowSharingView {
    /// The status as it stands.
    pub fn status(&self) -> FlowSharingStatus {
        FlowSharingStatus {
            enabled: self.sync.is_some(),
            announce_gate_open: *self.gate.borrow(),
            sync: self.sync.as_ref().map(|s| s.borrow().clone()),
            imports: *self.imports.borrow(),
        }
    }
}

/// Starts flow sharing from the configuration: reads the key, binds the sockets and
/// sends the start-up sync requests.
pub(crate) fn start(
    config: &fulcrum_config::FlowSharing,
) -> Result<(FlowSync, tmpsc::Receiver<Event>), DaemonError> {
    let key = Key::from_file(&config.key_file)?;
    let settings = Settings {
        listen: config.listen,
        peers: config.peers.clone(),
        multicast: config.multicast.as_ref().map(|m| Multicast {
            group: m.group,
            interface: m.interface.clone(),
        }),
        key,
        batch_delay: config.batch_delay,
        max_rate: config.max_rate,
        sync_timeout: config.sync_timeout,
        max_age: Settings::DEFAULT_MAX_AGE,
        sender_id: fulcrum_flowsync::sender_id(config.listen),
    };
    let started = FlowSync::start(settings)?;
    info!(listen = %started.0.local_addr(), peers = config.peers.len(),
          multicast = config.multicast.is_some(), "flow sharing started; asking peers for their flows");
    Ok(started)
}

/// The gate the BGP speaker reads: open at once unless flow sharing is on and the data
/// plane was not adopted, then open when the start-up sync ends.
pub(crate) fn drive_gate(
    gate: watch::Sender<bool>,
    sync: Option<&FlowSync>,
    adopted: bool,
) -> Option<JoinHandle<()>> {
    let sync = sync?;
    if adopted {
        info!("adopted the pinned data plane, which kept its flows: announcing without waiting");
        return None;
    }
    let _ = gate.send_replace(false);
    let mut ready = sync.ready();
    Some(tokio::spawn(async move {
        if ready.wait_for(|r| *r).await.is_ok() {
            info!("flow sharing: peers' flows learned (or sync_timeout passed); announcing");
            let _ = gate.send_replace(true);
        }
    }))
}

/// Reads the data plane's ring of new flows and passes the raw events to the owner.
pub(crate) fn read_ring(
    events: FlowEvents,
    commands: mpsc::Sender<Command>,
) -> Result<JoinHandle<()>, DaemonError> {
    // SAFETY: `FlowEvents` owns the ring's map fd, which stays open and the same for as
    // long as it lives, and the `AsyncFd` owns the `FlowEvents`.
    let mut fd = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| DaemonError::FlowRing(e.into_parts().1))?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(e) => {
                    error!(error = %e, "flow sharing: the flow event ring cannot be polled");
                    return;
                }
            };
            let mut out = Vec::new();
            guard.get_inner_mut().drain(&mut out);
            // Clear, then read once more: what arrived in between raised no new edge.
            guard.clear_ready();
            guard.get_inner_mut().drain(&mut out);
            if !out.is_empty() && commands.send(Command::FlowEvents(out)).is_err() {
                return;
            }
        }
    }))
}

/// Turns what peers send, and the refresh timer, into owner commands.
pub(crate) fn relay_incoming(
    mut events: tmpsc::Receiver<Event>,
    commands: mpsc::Sender<Command>,
    refresh_interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut refresh = tokio::time::interval(refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let command = tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(Event::Records { records, .. }) => Command::ImportFlows(records),
                    Some(Event::DumpRequested { from }) => Command::DumpFlows(Target::Peer(from)),
                    Some(Event::SyncDone { from, records }) => {
                        info!(peer = %from, records, "flow sharing: a peer's full send ended");
                        continue;
                    }
                },
                _ = refresh.tick() => Command::DumpFlows(Target::All),
            };
            if commands.send(command).is_err() {
                return;
            }
        }
    })
}
