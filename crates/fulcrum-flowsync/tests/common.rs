//! Helpers shared by the socket tests.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use fulcrum::{FlowRecord, Protocol};
use fulcrum_flowsync::{Event, Key, Settings, sender_id};
use tokio::sync::mpsc;

pub fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("32 bytes")
}

/// A loopback port nobody holds right now.
pub fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

pub fn settings(listen: SocketAddr, peers: Vec<SocketAddr>) -> Settings {
    Settings {
        listen,
        peers,
        multicast: None,
        key: key(7),
        batch_delay: Duration::from_millis(20),
        max_rate: 100_000,
        sync_timeout: Duration::from_secs(10),
        max_age: Settings::DEFAULT_MAX_AGE,
        sender_id: sender_id(listen),
    }
}

pub fn record(client_port: u16, backend: &str) -> FlowRecord {
    FlowRecord {
        protocol: Protocol::Tcp,
        client: SocketAddr::new("10.0.1.2".parse().unwrap(), client_port),
        vip: "10.0.100.1:80".parse().unwrap(),
        service_port: 80,
        backend: backend.parse().unwrap(),
    }
}

/// The next event, within five seconds.
pub async fn next(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5s")
        .expect("the flow sync is running")
}

/// Waits (bounded) until `f` holds.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
