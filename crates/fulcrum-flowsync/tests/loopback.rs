//! Two flow syncs on loopback: records go across, the start-up sync ends on the dump, and
//! forged, replayed, stale and strangers' datagrams are counted and never imported.

mod common;

use std::{net::UdpSocket, time::Duration};

use common::*;
use fulcrum_flowsync::{Event, FlowSync, Target, envelope::Sealer, sender_id, wire::Body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cross_and_bad_datagrams_are_refused_and_counted() {
    let (a_addr, b_addr) = (free_port(), free_port());
    // The "attacker" socket is a configured peer of both, so its datagrams get past the
    // sender check and reach the MAC and replay checks; it also sees what A sends.
    let mallory = UdpSocket::bind("127.0.0.1:0").unwrap();
    mallory
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let m_addr = mallory.local_addr().unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();

    let (b, mut b_events) = FlowSync::start(settings(b_addr, vec![a_addr, m_addr])).unwrap();
    let mut a_settings = settings(a_addr, vec![b_addr, m_addr]);
    a_settings.sync_timeout = Duration::from_secs(60);
    let (a, mut a_events) = FlowSync::start(a_settings).unwrap();

    // A's start-up request reaches B, which answers with its dump; A is then waiting only
    // for mallory, which never answers, so A is not ready yet.
    let from = loop {
        if let Event::DumpRequested { from } = next(&mut b_events).await {
            break from;
        }
    };
    assert_eq!(from, a_addr);
    b.send_full(vec![record(1000, "10.0.0.11")], Target::Peer(from))
        .await;
    assert_eq!(
        next_not_request(&mut a_events).await,
        Event::Records {
            from: b_addr,
            records: vec![record(1000, "10.0.0.11")]
        }
    );
    assert_eq!(
        next_not_request(&mut a_events).await,
        Event::SyncDone {
            from: b_addr,
            records: 1
        }
    );
    assert!(!*a.ready().borrow(), "mallory has not answered");
    let a_status = a.status();
    until("B marked synced", || {
        a_status
            .borrow()
            .peers
            .iter()
            .any(|p| p.address == b_addr && p.synced)
    })
    .await;

    // A new flow on A reaches B within the batch delay.
    a.share(vec![record(2000, "10.0.0.12")]);
    let shared = loop {
        if let Event::Records { records, .. } = next(&mut b_events).await {
            break records;
        }
    };
    assert_eq!(shared, vec![record(2000, "10.0.0.12")]);

    // Mallory captured that datagram (A sends to it too) and replays it to B.
    let mut captured = vec![0u8; 2048];
    let captured = loop {
        let n = mallory.recv(&mut captured).unwrap();
        if n > 32 + 32 && captured[5] == 1 && captured[6..8] == [0, 1] {
            break captured[..n].to_vec();
        }
    };
    mallory.send_to(&captured, b_addr).unwrap();
    // Forged: right layout, wrong key.
    let now = unix_now();
    let mut forger = Sealer::new(key(8), sender_id(a_addr), now);
    let evil = Body::Records(vec![record(3000, "10.6.6.6")]);
    mallory.send_to(forger.seal(&evil, now), b_addr).unwrap();
    // Stale: the right key, but a timestamp a minute old.
    let old = now - Duration::from_secs(60);
    let mut stale = Sealer::new(key(7), sender_id(m_addr), old);
    mallory.send_to(stale.seal(&evil, old), b_addr).unwrap();
    // Malformed, and a stranger that is not a configured peer.
    mallory.send_to(b"hello", b_addr).unwrap();
    let mut fresh = Sealer::new(key(7), sender_id(m_addr), now);
    stranger.send_to(fresh.seal(&evil, now), b_addr).unwrap();

    let b_status = b.status();
    until("five refusals", || b_status.borrow().rejected.total() == 5).await;
    let rejected = b_status.borrow().rejected;
    assert_eq!(
        (
            rejected.replayed,
            rejected.bad_mac,
            rejected.stale,
            rejected.malformed,
            rejected.unknown_sender
        ),
        (1, 1, 1, 1, 1)
    );
    // Nothing of that was imported: the next event B sees is A's next real record.
    a.share(vec![record(4000, "10.0.0.13")]);
    loop {
        match next(&mut b_events).await {
            Event::Records { records, .. } => {
                assert_eq!(records, vec![record(4000, "10.0.0.13")]);
                break;
            }
            other => assert!(!matches!(other, Event::Records { .. }), "{other:?}"),
        }
    }
    let b_now = b_status.borrow().clone();
    assert_eq!(b_now.received_records, 2, "{b_now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_ends_the_sync_at_the_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = settings(free_port(), vec![silent.local_addr().unwrap()]);
    s.sync_timeout = Duration::from_millis(300);
    let (a, _events) = FlowSync::start(s).unwrap();
    let mut ready = a.ready();
    assert!(!*ready.borrow());
    tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r))
        .await
        .expect("ready within 5s")
        .unwrap();
    assert!(a.status().borrow().synced);
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

/// The next event other than a dump request (B asks A for its flows too).
async fn next_not_request(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    loop {
        match next(events).await {
            Event::DumpRequested { .. } => continue,
            other => return other,
        }
    }
}
