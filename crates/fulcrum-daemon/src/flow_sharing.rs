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
    /// A starting balancer holds peers' records until its backends are healthy (or
    /// `sync_timeout` passed), since only healthy backends are in its data plane.
    pub holding: bool,
    /// Records held so far.
    pub held: u64,
}

/// Records held at start; see [`ImportTotals::holding`].
pub(crate) struct HeldImports {
    records: Vec<fulcrum::FlowRecord>,
    until: std::time::Instant,
}

/// Records held at most; beyond it they are imported as they come.
const MAX_HELD: usize = 1 << 22;

impl HeldImports {
    pub(crate) fn new(until: std::time::Instant) -> Self {
        Self {
            records: Vec::new(),
            until,
        }
    }

    /// Holds `records`; false when full (import them now).
    pub(crate) fn hold(&mut self, records: &[fulcrum::FlowRecord]) -> bool {
        if self.records.len() + records.len() > MAX_HELD {
            return false;
        }
        self.records.extend_from_slice(records);
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn expired(&self, now: std::time::Instant) -> bool {
        now >= self.until
    }

    pub(crate) fn into_records(self) -> Vec<fulcrum::FlowRecord> {
        self.records
    }
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
    /// Fed by [`supervise`], so it survives a restart of flow sharing.
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

/// Flow sharing set up before the owner thread runs (so the first sync requests go out
/// at once, and peers' answers wait in the owner's queue), its tasks not spawned yet.
pub(crate) struct Prepared {
    first: Option<(
        FlowSync,
        tmpsc::Receiver<Event>,
        fulcrum_config::FlowSharing,
    )>,
    ring: Option<FlowEvents>,
    status: watch::Sender<FlowSyncStatus>,
    restarts: tmpsc::UnboundedReceiver<fulcrum_config::FlowSharing>,
    gate_task: Option<JoinHandle<()>>,
}

/// Starts flow sharing when configured, gives the owner what it needs (the sender, the
/// held imports of a fresh start, the reload channel) and drives the announce gate.
pub(crate) fn prepare(
    owner: &mut crate::owner::Owner,
    gate: watch::Sender<bool>,
    gate_rx: watch::Receiver<bool>,
) -> Result<(Prepared, FlowSharingView), DaemonError> {
    let config = owner.config.flow_sharing.clone();
    let first = match config {
        Some(config) => {
            let (sync, events) = start(&config)?;
            Some((sync, events, config))
        }
        None => None,
    };
    owner.flow_sender = first.as_ref().map(|(sync, ..)| sync.sender());
    if let Some((.., config)) = &first
        && !owner.adopted_data_plane
    {
        let until = std::time::Instant::now() + config.sync_timeout;
        owner.held_imports = Some(HeldImports::new(until));
        owner.imports.send_modify(|i| i.holding = true);
    }
    let gate_task = drive_gate(
        gate,
        first.as_ref().map(|(sync, ..)| sync),
        owner.imports.subscribe(),
    );
    let (restart, restarts) = tmpsc::unbounded_channel();
    owner.flow_restart = Some(restart);
    let status = watch::Sender::new(FlowSyncStatus::default());
    let view = FlowSharingView {
        sync: first.as_ref().map(|_| status.subscribe()),
        imports: owner.imports.subscribe(),
        gate: gate_rx,
    };
    let prepared = Prepared {
        first,
        ring: owner.flow_events.take(),
        status,
        restarts,
        gate_task,
    };
    Ok((prepared, view))
}

impl Prepared {
    /// Spawns the tasks; abort them at shutdown.
    pub(crate) fn run(
        self,
        commands: &mpsc::Sender<Command>,
    ) -> Result<Vec<JoinHandle<()>>, DaemonError> {
        let mut tasks: Vec<_> = self.gate_task.into_iter().collect();
        if let Some((sync, events, config)) = self.first {
            tasks.push(supervise(
                (sync, events),
                config,
                commands.clone(),
                self.status,
                self.restarts,
            ));
        }
        if let Some(ring) = self.ring {
            tasks.push(read_ring(ring, commands.clone())?);
        }
        Ok(tasks)
    }
}

/// Starts flow sharing from the configuration: reads the key, binds the sockets and
/// sends the start-up sync requests.
fn start(
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
/// plane was not adopted; then open when the start-up sync ended and the owner imported
/// what it held (`imports.holding` false).
fn drive_gate(
    gate: watch::Sender<bool>,
    sync: Option<&FlowSync>,
    mut imports: watch::Receiver<ImportTotals>,
) -> Option<JoinHandle<()>> {
    let mut ready = sync?.ready();
    if !imports.borrow().holding {
        info!("adopted the pinned data plane, which kept its flows: announcing without waiting");
        return None;
    }
    let _ = gate.send_replace(false);
    Some(tokio::spawn(async move {
        if ready.wait_for(|r| *r).await.is_ok() && imports.wait_for(|i| !i.holding).await.is_ok() {
            info!("flow sharing: peers' flows learned (or sync_timeout passed); announcing");
            let _ = gate.send_replace(true);
        }
    }))
}

/// Reads the data plane's ring of new flows and passes the raw events to the owner.
fn read_ring(
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

/// Why a reload cannot apply this `flow_sharing` change, if it cannot: turning it on or
/// off needs the data plane's ring of new flows, which is sized when the data plane is
/// loaded; and a key file that cannot be used is found before anything changes.
pub(crate) fn reload_problem(
    old: Option<&fulcrum_config::FlowSharing>,
    new: Option<&fulcrum_config::FlowSharing>,
) -> Option<String> {
    match (old, new) {
        (Some(_), Some(new)) => Key::from_file(&new.key_file).err().map(|e| e.to_string()),
        (None, Some(_)) => Some(
            "flow_sharing: turning flow sharing on takes effect at restart only (the data \
             plane's ring of new flows is sized when it is loaded); reload refused"
                .into(),
        ),
        _ => Some(
            "flow_sharing: turning flow sharing off takes effect at restart only; reload \
             refused"
                .into(),
        ),
    }
}

/// Runs flow sharing for the daemon's life: relays what peers send, publishes the status,
/// and restarts it with the settings a reload sends (dropping the old sockets first, so
/// the same `listen` can be bound again). A restart that fails is logged and the old
/// settings are started again.
fn supervise(
    first: (FlowSync, tmpsc::Receiver<Event>),
    mut config: fulcrum_config::FlowSharing,
    commands: mpsc::Sender<Command>,
    status_out: watch::Sender<FlowSyncStatus>,
    mut restarts: tmpsc::UnboundedReceiver<fulcrum_config::FlowSharing>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (mut sync, mut events) = first;
        loop {
            let relay = relay_incoming(events, commands.clone(), config.refresh_interval);
            let mut status = sync.status();
            let new = loop {
                status_out.send_replace(status.borrow_and_update().clone());
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    new = restarts.recv() => break new,
                }
            };
            relay.abort();
            sync.stop().await;
            let Some(new) = new else {
                return;
            };
            let started = match start(&new) {
                Ok(started) => {
                    config = new;
                    started
                }
                Err(e) => {
                    error!(error = %crate::daemon::chain(&e), "flow sharing: restart with the reloaded settings failed; restarting the previous ones");
                    match start(&config) {
                        Ok(started) => started,
                        Err(e) => {
                            error!(error = %crate::daemon::chain(&e), "flow sharing: stopped");
                            return;
                        }
                    }
                }
            };
            (sync, events) = started;
            if commands.send(Command::FlowSender(sync.sender())).is_err() {
                return;
            }
        }
    })
}

/// Turns what peers send, and the refresh timer, into owner commands.
fn relay_incoming(
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
