//! Two flow syncs in two network namespaces joined by a veth pair, sharing through a
//! multicast group: the start-up sync ends at the first dump, and records cross.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use fulcrum_flowsync::{Event, FlowSync, Multicast, Target};
use fulcrum_lab::netns::{NetNs, unique_prefix};

struct Lab {
    a: NetNs,
    b: NetNs,
}

fn lab() -> Lab {
    let prefix = unique_prefix("mc");
    let a = NetNs::create(&format!("{prefix}a")).unwrap();
    let b = NetNs::create(&format!("{prefix}b")).unwrap();
    a.veth("eth0", &b, "eth0").unwrap();
    for (ns, addr) in [(&a, "10.77.0.1/24"), (&b, "10.77.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"]).unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    Lab { a, b }
}

fn multicast_settings(listen: &str) -> fulcrum_flowsync::Settings {
    let listen: SocketAddr = listen.parse().unwrap();
    let mut s = settings(listen, vec![]);
    s.multicast = Some(Multicast {
        group: "239.77.0.1:7946".parse().unwrap(),
        interface: "eth0".into(),
    });
    s.sync_timeout = Duration::from_secs(60);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_through_the_group_and_the_first_dump_ends_the_sync() {
    let lab = lab();
    let (b, mut b_events) = lab
        .b
        .run_in(|| FlowSync::start(multicast_settings("10.77.0.2:7946")))
        .unwrap()
        .unwrap();
    let (a, mut a_events) = lab
        .a
        .run_in(|| FlowSync::start(multicast_settings("10.77.0.1:7946")))
        .unwrap()
        .unwrap();

    // A's request reaches B through the group; B answers A directly.
    let from = loop {
        if let Event::DumpRequested { from } = next(&mut b_events).await {
            break from;
        }
    };
    assert_eq!(from, "10.77.0.1:7946".parse().unwrap());
    b.send_full(vec![record(1000, "10.0.0.11")], Target::Peer(from))
        .await;
    let mut dumped = Vec::new();
    loop {
        match next(&mut a_events).await {
            Event::Records { records, .. } => dumped.extend(records),
            Event::SyncDone { records, .. } => {
                assert_eq!(records, 1);
                break;
            }
            Event::DumpRequested { .. } => {}
        }
    }
    assert_eq!(dumped, vec![record(1000, "10.0.0.11")]);
    let mut ready = a.ready();
    tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r))
        .await
        .expect("A ready after B's dump")
        .unwrap();

    // A shares a new flow: it goes to the group, and B gets it.
    a.share(vec![record(2000, "10.0.0.12")]);
    let got = loop {
        if let Event::Records { from, records } = next(&mut b_events).await {
            break (from, records);
        }
    };
    assert_eq!(
        got,
        (
            "10.77.0.1:7946".parse().unwrap(),
            vec![record(2000, "10.0.0.12")]
        )
    );
    // B's own group datagrams are not looped back to B.
    b.share(vec![record(3000, "10.0.0.13")]);
    loop {
        if let Event::Records { records, .. } = next(&mut a_events).await {
            assert_eq!(records, vec![record(3000, "10.0.0.13")]);
            break;
        }
    }
    assert_eq!(b.status().borrow().rejected.total(), 0);
    assert_eq!(b.status().borrow().received_records, 1);
    drop((a, b));
    drop(lab);
}
