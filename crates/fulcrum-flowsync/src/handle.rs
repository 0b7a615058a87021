//! [`FlowSync`]: what the daemon holds. It shares records, sends full sets, and hands out
//! what peers sent; the sockets, timers and protocol state live in its tasks.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fulcrum::FlowRecord;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    auth::Key,
    envelope::{Opener, Sealer},
    status::{FlowSyncStatus, PeerStatus},
    tasks,
    transport::{Multicast, Transport, TransportError},
};

/// How flow sharing runs; the daemon builds it from `flow_sharing:`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where records are received (and sent from).
    pub listen: SocketAddr,
    /// Unicast peers, by the address they listen on.
    pub peers: Vec<SocketAddr>,
    /// A multicast group, in addition or instead.
    pub multicast: Option<Multicast>,
    /// The shared secret.
    pub key: Key,
    /// New records are held at most this long to fill a datagram.
    pub batch_delay: Duration,
    /// Records per second sent at most.
    pub max_rate: u32,
    /// How long the start-up sync waits for peers at most.
    pub sync_timeout: Duration,
    /// Datagrams whose timestamp is further than this from our clock are stale; the clocks
    /// of the balancers must agree within it.
    pub max_age: Duration,
    /// Names this balancer in its datagrams; see [`sender_id`].
    pub sender_id: u64,
}

impl Settings {
    /// `max_age` unless told otherwise: generous for clock skew, short for replays.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
}

/// A sender id for a balancer listening on `listen`: stable across restarts (the sequence
/// number, not the id, tells a restart from a replay) and distinct per balancer.
pub fn sender_id(listen: SocketAddr) -> u64 {
    // FNV-1a over the address's text: stable across versions and platforms.
    listen
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// What peers sent, for the daemon to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Records to import.
    Records {
        /// The peer's source address.
        from: SocketAddr,
        /// The records, authenticated and fresh.
        records: Vec<FlowRecord>,
    },
    /// A peer starts and asks for every flow: answer with [`FlowSync::send_full`] to it.
    DumpRequested {
        /// Who asked; the answer goes there.
        from: SocketAddr,
    },
    /// A peer's full send ended.
    SyncDone {
        /// The peer.
        from: SocketAddr,
        /// Records its full send had.
        records: u64,
    },
}

/// Where a full send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every unicast peer and the group (a refresh).
    All,
    /// One peer (a dump answer).
    Peer(SocketAddr),
}

pub(crate) enum Outgoing {
    Share(Vec<FlowRecord>),
    Full {
        records: Vec<FlowRecord>,
        to: Target,
    },
    Request {
        peers: Vec<SocketAddr>,
        group: bool,
    },
}

/// Why flow sharing could not start.
#[derive(Debug, thiserror::Error)]
pub enum FlowSyncError {
    /// The sockets.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Commands queued to the sending task at most; beyond it new records are dropped (and
/// counted) rather than held in memory without bound.
const QUEUE: usize = 4096;

/// A running flow sharing. Dropping it stops its tasks.
#[derive(Debug)]
pub struct FlowSync {
    outgoing: mpsc::Sender<Outgoing>,
    ready: watch::Receiver<bool>,
    status: Arc<watch::Sender<FlowSyncStatus>>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl FlowSync {
    /// Binds the sockets, sends the start-up sync requests and starts the tasks. Returns
    /// the handle and the receiver of what peers send. Needs a tokio runtime.
    pub fn start(settings: Settings) -> Result<(Self, mpsc::Receiver<Event>), FlowSyncError> {
        let transport = Transport::bind(settings.listen, settings.multicast.as_ref())?;
        let local = transport
            .local_addr()
            .map_err(|source| TransportError::Bind {
                address: settings.listen,
                source,
            })?;
        let status = Arc::new(watch::Sender::new(FlowSyncStatus {
            listen: Some(local),
            multicast_group: transport.group,
            peers: (settings.peers.iter())
                .map(|&address| PeerStatus {
                    address,
                    received_datagrams: 0,
                    synced: false,
                })
                .collect(),
            ..FlowSyncStatus::default()
        }));
        let (ready_tx, ready) = watch::channel(false);
        let (outgoing, outgoing_rx) = mpsc::channel(QUEUE);
        let (events_tx, events) = mpsc::channel(1024);
        let peers = (settings.multicast.is_none())
            .then(|| settings.peers.iter().copied().collect::<HashSet<_>>());
        let opener = Opener::new(settings.key.clone(), peers, settings.max_age);
        let sealer = Sealer::new(settings.key.clone(), settings.sender_id, unix_now());
        let transport = Arc::new(transport);
        let send = tasks::Sender {
            transport: transport.clone(),
            sealer,
            peers: settings.peers.clone(),
            batch_delay: settings.batch_delay,
            max_rate: settings.max_rate,
            status: status.clone(),
        };
        let receive = tasks::Receiver {
            transport,
            opener,
            peers: settings.peers.clone(),
            multicast: settings.multicast.is_some(),
            sync_timeout: settings.sync_timeout,
            status: status.clone(),
            ready: ready_tx,
            events: events_tx,
            outgoing: outgoing.clone(),
        };
        let tasks = vec![
            tokio::spawn(send.run(outgoing_rx)),
            tokio::spawn(receive.run()),
        ];
        Ok((
            Self {
                outgoing,
                ready,
                status,
                local,
                tasks,
            },
            events,
        ))
    }

    /// A handle that sends, for whoever produces records (it may live on another thread).
    pub fn sender(&self) -> FlowSender {
        FlowSender {
            outgoing: self.outgoing.clone(),
            status: self.status.clone(),
        }
    }

    /// Shares new records; see [`FlowSender::share`].
    pub fn share(&self, records: Vec<FlowRecord>) {
        self.sender().share(records);
    }

    /// Sends a full set; see [`FlowSender::send_full`].
    pub async fn send_full(&self, records: Vec<FlowRecord>, to: Target) {
        self.sender().send_full(records, to).await;
    }

    /// True once the start-up sync ended; see [`crate::sync`].
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Counters and peers, for the API and metrics.
    pub fn status(&self) -> watch::Receiver<FlowSyncStatus> {
        self.status.subscribe()
    }

    /// Stops the tasks and waits until they and their sockets are gone, so that the same
    /// address can be bound again at once (dropping only asks them to stop).
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        tasks.iter().for_each(JoinHandle::abort);
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The address bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Sends records through a running [`FlowSync`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct FlowSender {
    outgoing: mpsc::Sender<Outgoing>,
    status: Arc<watch::Sender<FlowSyncStatus>>,
}

impl FlowSender {
    /// Shares new records with every peer, within `batch_delay`. Never waits: when the
    /// queue is full the records are dropped and counted (`share_dropped`); the next
    /// refresh carries them.
    pub fn share(&self, records: Vec<FlowRecord>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        if self.outgoing.try_send(Outgoing::Share(records)).is_err() {
            self.status.send_modify(|s| s.share_dropped += n);
        }
    }

    /// Sends every record in `records` to `to`, then a sync-done message with their count,
    /// at most `max_rate` records per second. Waits only for room in the queue.
    pub async fn send_full(&self, records: Vec<FlowRecord>, to: Target) {
        let _ = self.outgoing.send(Outgoing::Full { records, to }).await;
    }

    /// [`FlowSender::send_full`] from a thread outside the runtime (the data plane's owner).
    pub fn send_full_blocking(&self, records: Vec<FlowRecord>, to: Target) {
        let _ = self.outgoing.blocking_send(Outgoing::Full { records, to });
    }
}

impl Drop for FlowSync {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
