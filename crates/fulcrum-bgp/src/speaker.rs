//! The handle the daemon holds: starts a task per peer and the listener, fans desired
//! routes out to the peers, reconfigures them, and stops them one way or the other.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    events::Route,
    fsm::{GrConfig, SessionConfig, State},
    packet::{Prefix, error},
    tasks::{self, Command, PeerTask, Registry},
};

/// The speaker's configuration: ours, and each peer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our ASN.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Graceful restart as advertised; `None` leaves it out.
    pub graceful_restart: Option<GrConfig>,
    /// Where peers connect to us (`0.0.0.0:179`); `None` only connects, leaving port 179
    /// to another BGP daemon on the host.
    pub listen: Option<SocketAddr>,
    /// Time between connection attempts to a peer.
    pub connect_retry: Duration,
    /// The peers.
    pub peers: Vec<PeerConfig>,
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Address and TCP port we connect to.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its ASN.
    pub asn: u32,
    /// Hold time we offer, seconds (0 or 3..=65535).
    pub hold_time: u16,
    /// Only accept its connections.
    pub passive: bool,
    /// TCP MD5 key.
    pub md5_key: Option<Vec<u8>>,
    /// NEXT_HOP of IPv4 routes; the connection's local address when `None` and IPv4.
    pub next_hop: Option<IpAddr>,
    /// Next hop of IPv6 routes; the connection's local address when `None` and IPv6.
    pub next_hop_ipv6: Option<Ipv6Addr>,
}

/// A peer as the API, metrics and console show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its address.
    pub address: IpAddr,
    /// Its ASN.
    pub asn: u32,
    /// Session state.
    pub state: State,
    /// When the session reached Established; `None` unless it is.
    pub established_since: Option<std::time::Instant>,
    /// Why the session last went down or was refused.
    pub last_error: Option<String>,
    /// Prefixes the peer has from us.
    pub announced: Vec<Prefix>,
    /// Address families negotiated (`ipv4-unicast`, `ipv6-unicast`); empty unless
    /// Established.
    pub families: Vec<&'static str>,
    /// Desired prefixes this peer does not get, and why (a family it did not offer, no
    /// next hop of the route's family).
    pub not_announced: Vec<(Prefix, String)>,
}

/// Why the speaker could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// An MD5 key could not be set (kernel without TCP_MD5SIG, or a key too long).
    #[error("setting the TCP MD5 key for {peer}")]
    Md5 {
        /// The peer.
        peer: IpAddr,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}

struct Peer {
    config: PeerConfig,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

/// A running speaker. Dropping it closes every session without a NOTIFICATION, like
/// [`Speaker::handover`] without waiting.
pub struct Speaker {
    config: SpeakerConfig,
    peers: Vec<Peer>,
    routes: Vec<Route>,
    status: Arc<watch::Sender<Vec<PeerStatus>>>,
    registry: Registry,
    listener: Arc<Mutex<Option<Arc<TcpListener>>>>,
    listen_task: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Starts the sessions and the listener; must run inside a tokio runtime. The
    /// listener keeps trying to bind when its port is taken (a previous daemon handing
    /// over), and active peers are connected to meanwhile.
    pub fn start(config: SpeakerConfig) -> Result<Self, SpeakerError> {
        let status = Arc::new(watch::Sender::new(Vec::new()));
        let registry: Registry = Arc::default();
        let listener: Arc<Mutex<Option<Arc<TcpListener>>>> = Arc::default();
        let listen_task = spawn_listener(&config, &registry, &listener);
        let mut speaker = Self {
            config: config.clone(),
            peers: Vec::new(),
            routes: Vec::new(),
            status,
            registry,
            listener,
            listen_task,
        };
        for peer in config.peers {
            speaker.add_peer(peer)?;
        }
        speaker.publish_order();
        Ok(speaker)
    }

    /// The peers' states, updated on every change.
    pub fn status(&self) -> watch::Receiver<Vec<PeerStatus>> {
        self.status.subscribe()
    }

    /// The routes to announce from now on (all of them); each peer is sent the difference.
    pub fn set_routes(&mut self, mut routes: Vec<Route>) {
        routes.sort();
        routes.dedup_by(|a, b| a.prefix == b.prefix);
        if routes == self.routes {
            return;
        }
        self.routes = routes;
        for peer in &self.peers {
            let _ = peer.commands.send(Command::Routes(self.routes.clone()));
        }
    }

    /// Applies a new configuration: removed peers get Cease (peer de-configured), changed
    /// ones are reset (Cease, administrative reset) and reconnect, added ones start. A
    /// change of our ASN, router ID or graceful restart resets every peer.
    pub async fn reconfigure(&mut self, config: SpeakerConfig) -> Result<(), SpeakerError> {
        let global_changed = (config.asn, config.router_id, config.graceful_restart)
            != (
                self.config.asn,
                self.config.router_id,
                self.config.graceful_restart,
            );
        let mut kept = Vec::new();
        for peer in std::mem::take(&mut self.peers) {
            let new = config
                .peers
                .iter()
                .find(|p| p.address == peer.config.address);
            match new {
                Some(new) if *new == peer.config && !global_changed => kept.push(peer),
                Some(_) => stop_peer(peer, &self.registry, Some(error::ADMIN_RESET)).await,
                None => stop_peer(peer, &self.registry, Some(error::PEER_DECONFIGURED)).await,
            }
        }
        self.peers = kept;
        if config.listen != self.config.listen {
            self.stop_listening();
            self.listen_task = spawn_listener(&config, &self.registry, &self.listener);
        }
        self.config = config.clone();
        if let Some(listener) = self.listener.lock().ok().and_then(|l| l.clone()) {
            set_listener_keys(&listener, &config.peers);
        }
        self.status.send_modify(|s| {
            s.retain(|p| config.peers.iter().any(|c| c.address == p.address));
        });
        for peer in config.peers {
            if !self.peers.iter().any(|p| p.config.address == peer.address) {
                self.add_peer(peer)?;
            }
        }
        self.publish_order();
        Ok(())
    }

    /// Withdraws every route, sends NOTIFICATION Cease (administrative shutdown) and
    /// closes every session.
    pub async fn shutdown(mut self) {
        self.stop_all(Some(error::ADMIN_SHUTDOWN)).await;
    }

    /// Closes every session without a NOTIFICATION, so that peers keep our routes for
    /// the graceful restart time while the next daemon takes over.
    pub async fn handover(mut self) {
        self.stop_all(None).await;
    }

    fn stop_listening(&mut self) {
        if let Some(task) = self.listen_task.take() {
            task.abort();
        }
        if let Ok(mut slot) = self.listener.lock() {
            *slot = None;
        }
    }

    async fn stop_all(&mut self, cease: Option<u8>) {
        self.stop_listening();
        for peer in std::mem::take(&mut self.peers) {
            stop_peer(peer, &self.registry, cease).await;
        }
    }

    fn add_peer(&mut self, peer: PeerConfig) -> Result<(), SpeakerError> {
        if let Some(key) = &peer.md5_key
            && key.len() > crate::md5::MAX_KEY
        {
            return Err(SpeakerError::Md5 {
                peer: peer.address,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "longer than 80 bytes",
                ),
            });
        }
        let session = SessionConfig {
            local_asn: self.config.asn,
            router_id: self.config.router_id,
            peer_asn: peer.asn,
            hold_time: peer.hold_time,
            graceful_restart: self.config.graceful_restart,
            next_hop: peer.next_hop,
            next_hop_ipv6: peer.next_hop_ipv6,
            passive: peer.passive,
            connect_retry: self.config.connect_retry,
        };
        self.status.send_modify(|s| {
            s.push(PeerStatus {
                address: peer.address,
                asn: peer.asn,
                state: State::Idle,
                established_since: None,
                last_error: None,
                announced: Vec::new(),
                families: Vec::new(),
                not_announced: Vec::new(),
            })
        });
        let (commands, inbox) = mpsc::unbounded_channel();
        let _ = commands.send(Command::Routes(self.routes.clone()));
        if let Ok(mut r) = self.registry.lock() {
            r.insert(peer.address, commands.clone());
        }
        let task = tasks::spawn_peer(
            PeerTask {
                address: SocketAddr::new(peer.address, peer.port),
                md5_key: peer.md5_key.clone(),
                session,
                status: self.status.clone(),
            },
            inbox,
        );
        self.peers.push(Peer {
            config: peer,
            commands,
            task,
        });
        Ok(())
    }

    /// Keeps the status list in configuration order.
    fn publish_order(&self) {
        let order: HashMap<IpAddr, usize> = (self.config.peers.iter().enumerate())
            .map(|(i, p)| (p.address, i))
            .collect();
        self.status.send_modify(|s| {
            s.sort_by_key(|p| order.get(&p.address).copied().unwrap_or(usize::MAX))
        });
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop_listening();
        for peer in &self.peers {
            peer.task.abort();
        }
    }
}

async fn stop_peer(peer: Peer, registry: &Registry, cease: Option<u8>) {
    if let Ok(mut r) = registry.lock() {
        r.remove(&peer.config.address);
    }
    let (done, stopped) = oneshot::channel();
    if peer.commands.send(Command::Stop(cease, done)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
    }
    peer.task.abort();
}

fn set_listener_keys(listener: &TcpListener, peers: &[PeerConfig]) {
    for peer in peers {
        if let Some(key) = &peer.md5_key
            && let Err(e) = crate::md5::set_key(listener.as_raw_fd(), peer.address, key)
        {
            warn!(peer = %peer.address, error = %e, "TCP MD5 key on the listener");
        }
    }
}

/// The listener task, unless the configuration leaves listening to another daemon.
fn spawn_listener(
    config: &SpeakerConfig,
    registry: &Registry,
    slot: &Arc<Mutex<Option<Arc<TcpListener>>>>,
) -> Option<JoinHandle<()>> {
    let at = config.listen?;
    Some(tokio::spawn(listen(
        at,
        config.peers.clone(),
        registry.clone(),
        slot.clone(),
    )))
}

async fn listen(
    at: SocketAddr,
    peers: Vec<PeerConfig>,
    registry: Registry,
    slot: Arc<Mutex<Option<Arc<TcpListener>>>>,
) {
    let mut warned = false;
    let listener = loop {
        match tasks::bind(at) {
            Ok(l) => break Arc::new(l),
            Err(e) => {
                if !warned {
                    warn!(%at, error = %e, "cannot listen for BGP peers yet; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    info!(%at, "listening for BGP peers");
    set_listener_keys(&listener, &peers);
    if let Ok(mut s) = slot.lock() {
        *s = Some(listener.clone());
    }
    tasks::accept_loop(listener, registry).await;
}
