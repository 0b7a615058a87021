//! `flow_sharing:` as the operator writes it: the spec's example, defaults, and messages.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::*;

const BASE: &str = "interfaces: [eth0]\n";

fn with(section: &str) -> Result<Config, Vec<String>> {
    parse(&format!("{BASE}{section}"), "f.yaml")
        .map_err(|e| e.problems().iter().map(ToString::to_string).collect())
}

fn problem(section: &str) -> String {
    let problems = with(section).expect_err("rejected");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems[0].clone()
}

#[test]
fn the_spec_example_is_accepted_as_written() {
    let config = with(
        "flow_sharing:
  listen: 10.0.2.11:7946
  peers: [10.0.2.12:7946]
  multicast: { group: 239.77.0.1:7946, interface: eth0 }
  key_file: /etc/fulcrum/flow-key
  refresh_interval: 30s
  batch_delay: 100ms
  max_rate: 100000
  sync_timeout: 10s
",
    )
    .unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        config.flow_sharing,
        Some(FlowSharing {
            listen: addr("10.0.2.11:7946"),
            peers: vec![addr("10.0.2.12:7946")],
            multicast: Some(FlowMulticast {
                group: "239.77.0.1:7946".parse().unwrap(),
                interface: "eth0".into(),
            }),
            key_file: PathBuf::from("/etc/fulcrum/flow-key"),
            refresh_interval: Duration::from_secs(30),
            batch_delay: Duration::from_millis(100),
            max_rate: 100_000,
            sync_timeout: Duration::from_secs(10),
        })
    );
}

#[test]
fn defaults_fill_in_and_the_section_is_optional() {
    assert_eq!(with("").unwrap().flow_sharing, None);
    let f = with("flow_sharing: {listen: 10.0.2.11:7946, peers: [10.0.2.12:7946], key_file: k}\n")
        .unwrap()
        .flow_sharing
        .unwrap();
    assert_eq!(f.refresh_interval, FlowSharing::DEFAULT_REFRESH_INTERVAL);
    assert_eq!(f.batch_delay, Duration::from_millis(100));
    assert_eq!(f.max_rate, 100_000);
    assert_eq!(f.sync_timeout, Duration::from_secs(10));
    assert_eq!(f.multicast, None);
}

#[test]
fn problems_name_file_line_column_and_field() {
    assert_eq!(
        problem("flow_sharing:\n  peers: [10.0.2.12:7946]\n  key_file: k\n"),
        "f.yaml:3:3: flow_sharing.listen: missing; add it, like `listen: 10.0.2.11:7946`"
    );
    assert_eq!(
        problem("flow_sharing:\n  listen: 10.0.2.11\n  peers: [10.0.2.12:7946]\n  key_file: k\n"),
        "f.yaml:3:11: flow_sharing.listen: '10.0.2.11' is not an address and port; write one \
         like 10.0.2.11:7946"
    );
    assert_eq!(
        problem("flow_sharing:\n  listen: 10.0.2.11:7946\n  key_file: k\n"),
        "f.yaml:3:3: flow_sharing: no peers and no multicast group, so nobody to share with; \
         add `peers: [10.0.2.12:7946]` or `multicast: {group: 239.77.0.1:7946, interface: eth0}`"
    );
    assert_eq!(
        problem(
            "flow_sharing:\n  listen: 10.0.2.11:7946\n  peers: [10.0.2.12:7946, 10.0.2.11:7946]\n  \
             key_file: k\n"
        ),
        "f.yaml:4:27: flow_sharing.peers[1]: 10.0.2.11:7946 is this balancer's own listen \
         address; list the others"
    );
    assert_eq!(
        problem(
            "flow_sharing:\n  listen: 10.0.2.11:7946\n  multicast: {group: 10.0.0.1:7946, \
             interface: eth0}\n  key_file: k\n"
        ),
        "f.yaml:4:22: flow_sharing.multicast.group: '10.0.0.1:7946' is not an IPv4 multicast \
         group and port; use one in 224.0.0.0/4, like 239.77.0.1:7946"
    );
    assert_eq!(
        problem("flow_sharing:\n  listen: 10.0.2.11:7946\n  peers: [10.0.2.12:7946]\n"),
        "f.yaml:3:3: flow_sharing.key_file: missing; add it, like `key_file: \
         /etc/fulcrum/flow-key`"
    );
    assert_eq!(
        problem(
            "flow_sharing:\n  listen: 10.0.2.11:7946\n  peers: [10.0.2.12:7946]\n  key_file: k\n  \
             max_rate: 0\n"
        ),
        "f.yaml:6:13: flow_sharing.max_rate: 0 would send nothing; give records per second, \
         like 100000"
    );
    assert_eq!(
        problem(
            "flow_sharing:\n  listen: 10.0.2.11:7946\n  peers: [10.0.2.12:7946]\n  key_file: k\n  \
             batch_delay: 1m\n"
        ),
        "f.yaml:6:16: flow_sharing.batch_delay: '1m' must be shorter than refresh_interval (30s)"
    );
    let unknown = problem(
        "flow_sharing:\n  listen: 10.0.2.11:7946\n  peers: [10.0.2.12:7946]\n  key_file: k\n  \
         key: secret\n",
    );
    assert!(unknown.starts_with("f.yaml:6:3: flow_sharing"), "{unknown}");
}

#[test]
fn a_changed_section_shows_in_the_diff() {
    let a = with("flow_sharing: {listen: 10.0.2.11:7946, peers: [10.0.2.12:7946], key_file: k}\n")
        .unwrap();
    let b = with("flow_sharing: {listen: 10.0.2.11:7946, peers: [10.0.2.13:7946], key_file: k}\n")
        .unwrap();
    assert!(diff(&a, &b).flow_sharing_changed);
    assert!(diff(&a, &a).is_empty());
}
