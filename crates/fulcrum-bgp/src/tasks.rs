//! The sockets and timers around each [`Session`]: one tokio task per peer turns reads,
//! connection results and timer expiries into [`Event`]s and carries out the [`Action`]s.
//! A reader task per connection decodes messages; the listener hands accepted connections
//! to the peer they come from.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream, tcp::OwnedWriteHalf},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    PeerStatus,
    events::{Action, Event, Route, Timer},
    fsm::{Session, SessionConfig, State},
    packet,
};

/// What the [`crate::Speaker`] tells a peer's task.
#[derive(Debug)]
pub(crate) enum Command {
    Routes(Vec<Route>),
    /// Stop (see [`Event::Stop`]) and say when the last byte is written.
    Stop(Option<u8>, oneshot::Sender<()>),
    /// A connection the peer opened to us.
    Incoming(TcpStream),
}

/// Where the listener finds the task of a connecting peer.
pub(crate) type Registry = Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<Command>>>>;

/// Everything a peer's task needs besides its commands.
pub(crate) struct PeerTask {
    pub(crate) address: SocketAddr,
    pub(crate) md5_key: Option<Vec<u8>>,
    pub(crate) session: SessionConfig,
    pub(crate) status: Arc<watch::Sender<Vec<PeerStatus>>>,
}

/// An event from a connection's reader or connector, tagged with the connection it is about.
struct Tagged(u64, Event, Option<TcpStream>);

struct Connection {
    id: u64,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub(crate) fn spawn_peer(
    task: PeerTask,
    commands: mpsc::UnboundedReceiver<Command>,
) -> JoinHandle<()> {
    let span = info_span!("bgp_peer", peer = %task.address.ip());
    tokio::spawn(run_peer(task, commands).instrument(span))
}

async fn run_peer(task: PeerTask, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut session = Session::new(task.session.clone());
    let (events_tx, mut events) = mpsc::unbounded_channel::<Tagged>();
    let mut conn: Option<Connection> = None;
    let mut next_id = 0u64;
    let mut connecting: Option<u64> = None;
    let mut timers: HashMap<Timer, Instant> = HashMap::new();
    let mut since: Option<std::time::Instant> = None;
    let mut queue = vec![Event::Start];
    let mut stopped: Option<oneshot::Sender<()>> = None;
    loop {
        while let Some(event) = queue.pop() {
            let before = session.state();
            for action in session.handle(event) {
                match action {
                    Action::Connect => {
                        next_id += 1;
                        connecting = Some(next_id);
                        spawn_connect(next_id, task.address, task.md5_key.clone(), &events_tx);
                    }
                    Action::Send(message) => {
                        let Some(c) = conn.as_mut() else { continue };
                        if let Err(e) = c.writer.write_all(&packet::encode(&message)).await {
                            debug!(error = %e, "write failed");
                            conn = None;
                            queue.insert(0, Event::TcpDown);
                        }
                    }
                    Action::StartTimer(timer, after) => {
                        timers.insert(timer, Instant::now() + after);
                    }
                    Action::StopTimer(timer) => {
                        timers.remove(&timer);
                    }
                    Action::Close => {
                        if let Some(mut c) = conn.take() {
                            let _ = c.writer.shutdown().await;
                        }
                    }
                }
            }
            let after = session.state();
            if after != before {
                info!(from = before.name(), to = after.name(), "session state");
                since = match after {
                    State::Established => Some(std::time::Instant::now()),
                    _ => None,
                };
            }
            publish(&task, &session, since);
        }
        if let Some(done) = stopped.take() {
            let _ = done.send(());
            return;
        }
        let deadline = timers.values().min().copied();
        tokio::select! {
            command = commands.recv() => match command {
                // The speaker is gone: close silently and end.
                None => {
                    queue.push(Event::Stop(None));
                    stopped = Some(oneshot::channel().0);
                }
                Some(Command::Routes(routes)) => queue.push(Event::Routes(routes)),
                Some(Command::Stop(cease, done)) => {
                    queue.push(Event::Stop(cease));
                    stopped = Some(done);
                }
                Some(Command::Incoming(stream)) => {
                    if session.accepts_connection() {
                        connecting = None;
                        next_id += 1;
                        if let Some(event) = attach(next_id, stream, &events_tx, &mut conn) {
                            queue.push(event);
                        }
                    } else {
                        debug!("connection from the peer refused: a session is already open");
                    }
                }
            },
            Some(Tagged(id, event, stream)) = events.recv() => {
                match stream {
                    // A connection attempt finished.
                    Some(stream) if connecting == Some(id) && session.accepts_connection() => {
                        connecting = None;
                        if let Some(event) = attach(id, stream, &events_tx, &mut conn) {
                            queue.push(event);
                        }
                    }
                    Some(_) => {}
                    None if connecting == Some(id) => {
                        // The ConnectRetry timer, still running, tries again.
                        connecting = None;
                    }
                    None if conn.as_ref().is_some_and(|c| c.id == id) => {
                        if event == Event::TcpDown {
                            conn = None;
                        }
                        queue.push(event);
                    }
                    None => {}
                }
            }
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                let fired: Vec<Timer> = timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
                for timer in fired {
                    timers.remove(&timer);
                    queue.push(Event::TimerFired(timer));
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn publish(task: &PeerTask, session: &Session, since: Option<std::time::Instant>) {
    let address = task.address.ip();
    task.status.send_if_modified(|peers| {
        let Some(p) = peers.iter_mut().find(|p| p.address == address) else {
            return false;
        };
        let new = PeerStatus {
            address,
            asn: p.asn,
            state: session.state(),
            established_since: since,
            last_error: session.last_error().map(str::to_owned),
            announced: session.announced(),
            families: match session.state() {
                State::Established => session.families(),
                _ => Vec::new(),
            },
            not_announced: session.not_announced(),
        };
        let changed = *p != new;
        *p = new;
        changed
    });
}

/// Starts reading `stream`; returns the TcpUp event, or TcpDown when it cannot be used.
fn attach(
    id: u64,
    stream: TcpStream,
    events: &mpsc::UnboundedSender<Tagged>,
    conn: &mut Option<Connection>,
) -> Option<Event> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok()?.ip().to_canonical();
    let (mut read, writer) = stream.into_split();
    let events = events.clone();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(8192);
        loop {
            match packet::decode(&buf) {
                Ok(Some((message, used))) => {
                    buf.drain(..used);
                    let _ = events.send(Tagged(id, Event::Received(message), None));
                    continue;
                }
                Ok(None) => {}
                Err(packet::DecodeError(n)) => {
                    let _ = events.send(Tagged(id, Event::Malformed(n), None));
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = events.send(Tagged(id, Event::TcpDown, None));
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    *conn = Some(Connection { id, writer, reader });
    let link_local = match local {
        IpAddr::V6(a) if !a.is_unicast_link_local() => crate::ifaddr::link_local_beside(a),
        _ => None,
    };
    Some(Event::TcpUp { local, link_local })
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn spawn_connect(
    id: u64,
    to: SocketAddr,
    md5_key: Option<Vec<u8>>,
    events: &mpsc::UnboundedSender<Tagged>,
) {
    let events = events.clone();
    tokio::spawn(async move {
        let attempt = async {
            let socket = match to {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(key) = &md5_key {
                crate::md5::set_key(socket.as_raw_fd(), to.ip(), key)?;
            }
            socket.connect(to).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => {
                let _ = events.send(Tagged(id, Event::TcpDown, Some(stream)));
            }
            Ok(Err(e)) => {
                debug!(error = %e, "connect failed");
                let _ = events.send(Tagged(id, Event::TcpDown, None));
            }
            Err(_) => {
                let _ = events.send(Tagged(id, Event::TcpDown, None));
            }
        }
    });
}

/// Binds the passive side; keys of peers with MD5 are set on it by the caller. An IPv6
/// wildcard (`[::]`) accepts IPv4 peers too, whatever `net.ipv6.bindv6only` says.
pub(crate) fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = TcpSocket::new_v6()?;
            crate::md5::set_v6only(socket.as_raw_fd(), false)?;
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(64)
}

/// Accepts connections and hands each to its peer's task; others are closed.
pub(crate) async fn accept_loop(listener: Arc<TcpListener>, registry: Registry) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let peer = registry
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&from.ip().to_canonical()).cloned());
                match peer {
                    Some(tx) => {
                        let _ = tx.send(Command::Incoming(stream));
                    }
                    None => debug!(%from, "connection from an unknown peer closed"),
                }
            }
            Err(e) => {
                warn!(error = %e, "accepting BGP connections");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
