//! The two tasks behind a [`crate::FlowSync`]: one sends (batching, rate bound, full sends),
//! one receives (opening datagrams, counting refusals, the start-up sync). Only these touch
//! sockets and timers; the protocol parts they call are pure.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use fulcrum::FlowRecord;
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep, sleep_until},
};
use tracing::{debug, info, warn};

use crate::{
    envelope::{Opener, Sealer},
    handle::{Event, Outgoing, Target, unix_now},
    rate::TokenBucket,
    status::FlowSyncStatus,
    sync::{Actions, StartupSync},
    transport::Transport,
    wire::{Body, MAX_RECORDS},
};

pub(crate) struct Sender {
    pub transport: Arc<Transport>,
    pub sealer: Sealer,
    pub peers: Vec<SocketAddr>,
    pub batch_delay: Duration,
    pub max_rate: u32,
    pub status: Arc<watch::Sender<FlowSyncStatus>>,
}

struct FullSend {
    records: Vec<FlowRecord>,
    sent: usize,
    to: Target,
}

impl Sender {
    pub async fn run(mut self, mut commands: mpsc::Receiver<Outgoing>) {
        let mut bucket = TokenBucket::new(self.max_rate, Instant::now().into_std());
        let mut batch: Vec<FlowRecord> = Vec::new();
        let mut flush_at: Option<Instant> = None;
        let mut fulls: VecDeque<FullSend> = VecDeque::new();
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None => return,
                    Some(Outgoing::Share(records)) => {
                        batch.extend(records);
                        flush_at.get_or_insert_with(|| Instant::now() + self.batch_delay);
                        while batch.len() >= MAX_RECORDS {
                            let chunk: Vec<_> = batch.drain(..MAX_RECORDS).collect();
                            self.send_records(chunk, Target::All, &mut bucket).await;
                        }
                    }
                    Some(Outgoing::Full { records, to }) => {
                        fulls.push_back(FullSend { records, sent: 0, to });
                    }
                    Some(Outgoing::Request { peers, group }) => {
                        let datagram = self.sealer.seal(&Body::SyncRequest, unix_now()).to_vec();
                        let group = group.then_some(self.transport.group).flatten();
                        for to in peers.into_iter().chain(group) {
                            self.send_to(&datagram, to).await;
                        }
                    }
                },
                _ = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    let chunk = std::mem::take(&mut batch);
                    self.send_records(chunk, Target::All, &mut bucket).await;
                }
                _ = std::future::ready(()), if !fulls.is_empty() => {
                    self.send_full_chunk(&mut fulls, &mut bucket).await;
                }
            }
        }
    }

    /// One datagram of the oldest full send, or its sync-done message once all went.
    async fn send_full_chunk(&mut self, fulls: &mut VecDeque<FullSend>, bucket: &mut TokenBucket) {
        let Some(full) = fulls.front_mut() else {
            return;
        };
        let to = full.to;
        if full.sent < full.records.len() {
            let end = (full.sent + MAX_RECORDS).min(full.records.len());
            let chunk = full.records[full.sent..end].to_vec();
            full.sent = end;
            self.send_records(chunk, to, bucket).await;
            return;
        }
        let records = full.records.len() as u64;
        fulls.pop_front();
        let datagram = self
            .sealer
            .seal(&Body::SyncDone { records }, unix_now())
            .to_vec();
        for dest in self.targets(to) {
            self.send_to(&datagram, dest).await;
        }
        self.status.send_modify(|s| s.full_sends += 1);
    }

    async fn send_records(
        &mut self,
        records: Vec<FlowRecord>,
        to: Target,
        bucket: &mut TokenBucket,
    ) {
        if records.is_empty() {
            return;
        }
        let wait = bucket.take(records.len(), Instant::now().into_std());
        if !wait.is_zero() {
            sleep(wait).await;
        }
        let n = records.len() as u64;
        let datagram = self
            .sealer
            .seal(&Body::Records(records), unix_now())
            .to_vec();
        for dest in self.targets(to) {
            self.send_to(&datagram, dest).await;
        }
        self.status.send_modify(|s| s.sent_records += n);
    }

    fn targets(&self, to: Target) -> Vec<SocketAddr> {
        match to {
            Target::Peer(peer) => vec![peer],
            Target::All => self
                .peers
                .iter()
                .copied()
                .chain(self.transport.group)
                .collect(),
        }
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) {
        match self.transport.socket.send_to(datagram, to).await {
            Ok(_) => self.status.send_modify(|s| s.sent_datagrams += 1),
            Err(e) => {
                debug!(peer = %to, error = %e, "flow sharing: send failed");
                self.status.send_modify(|s| s.send_errors += 1);
            }
        }
    }
}

pub(crate) struct Receiver {
    pub transport: Arc<Transport>,
    pub opener: Opener,
    pub peers: Vec<SocketAddr>,
    pub multicast: bool,
    pub sync_timeout: Duration,
    pub status: Arc<watch::Sender<FlowSyncStatus>>,
    pub ready: watch::Sender<bool>,
    pub events: mpsc::Sender<Event>,
    pub outgoing: mpsc::Sender<Outgoing>,
}

impl Receiver {
    pub async fn run(mut self) {
        let (mut sync, first) = StartupSync::start(
            &self.peers,
            self.multicast,
            Instant::now().into_std(),
            self.sync_timeout,
        );
        self.act(first).await;
        let mut unicast_buf = vec![0u8; 65536];
        let mut group_buf = vec![0u8; 65536];
        let transport = self.transport.clone();
        loop {
            let wakeup = sync.next_wakeup().map(Instant::from_std);
            tokio::select! {
                received = transport.socket.recv_from(&mut unicast_buf) => match received {
                    Ok((n, from)) => self.handle(&unicast_buf[..n], from, &mut sync).await,
                    Err(e) => warn!(error = %e, "flow sharing: receive failed"),
                },
                received = recv_group(transport.group_socket.as_ref(), &mut group_buf) => {
                    match received {
                        Ok((n, from)) => self.handle(&group_buf[..n], from, &mut sync).await,
                        Err(e) => warn!(error = %e, "flow sharing: group receive failed"),
                    }
                }
                _ = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {
                    let actions = sync.on_tick(Instant::now().into_std());
                    self.act(actions).await;
                }
            }
        }
    }

    async fn handle(&mut self, datagram: &[u8], from: SocketAddr, sync: &mut StartupSync) {
        let (_, body) = match self.opener.open(datagram, from, unix_now()) {
            Ok(opened) => opened,
            Err(reason) => {
                debug!(peer = %from, ?reason, "flow sharing: datagram refused");
                self.status.send_modify(|s| s.rejected.count(reason));
                return;
            }
        };
        self.status.send_modify(|s| {
            s.received_datagrams += 1;
            if let Body::Records(records) = &body {
                s.received_records += records.len() as u64;
            }
            if let Some(peer) = s.peers.iter_mut().find(|p| p.address == from) {
                peer.received_datagrams += 1;
            }
        });
        let event = match body {
            Body::Records(records) => Event::Records { from, records },
            Body::SyncRequest => Event::DumpRequested { from },
            Body::SyncDone { records } => {
                self.status.send_modify(|s| {
                    if let Some(peer) = s.peers.iter_mut().find(|p| p.address == from) {
                        peer.synced = true;
                    }
                });
                let actions = sync.on_done(from);
                self.act(actions).await;
                Event::SyncDone { from, records }
            }
        };
        let _ = self.events.send(event).await;
    }

    async fn act(&mut self, actions: Actions) {
        if !actions.request.is_empty() || actions.request_group {
            let _ = self
                .outgoing
                .send(Outgoing::Request {
                    peers: actions.request,
                    group: actions.request_group,
                })
                .await;
        }
        if actions.became_ready {
            info!("flow sharing: start-up sync done");
            self.status.send_modify(|s| s.synced = true);
            let _ = self.ready.send(true);
        }
    }
}

async fn recv_group(
    socket: Option<&tokio::net::UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
