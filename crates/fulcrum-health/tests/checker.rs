//! The scheduler against real servers on 127.0.0.1, with 50 ms intervals.
mod common;

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use common::*;
use fulcrum_health::{
    BackendId, CheckStatus, Checker, CheckerConfig, CheckerError, HealthEvent, Probe, Rule, Target,
};
use tokio::sync::mpsc::UnboundedReceiver;

const INTERVAL: Duration = Duration::from_millis(50);

fn backend(service: &str, last: u8) -> BackendId {
    BackendId {
        service: service.into(),
        address: [127, 0, 0, last].into(),
    }
}

fn tcp_target(id: BackendId, port: u16) -> Target {
    Target {
        backend: id,
        checks: vec![spec(Probe::Tcp, port)],
        rule: Rule::All,
        via: None,
    }
}

async fn next_event(rx: &mut UnboundedReceiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5s")
        .expect("channel open")
}

#[tokio::test]
async fn stopped_server_goes_down_then_comes_back() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let id = backend("web", 1);
    checker
        .set_targets(vec![tcp_target(id.clone(), server.addr.port())])
        .expect("valid");
    assert!(
        !checker.snapshot()[0].healthy,
        "untested backends start down"
    );

    let up = next_event(&mut rx).await;
    assert_eq!(
        (up.backend.clone(), up.healthy),
        (id.clone(), true),
        "{up:?}"
    );

    let addr = server.stop().await;
    let stopped = Instant::now();
    let down = next_event(&mut rx).await;
    assert!(!down.healthy, "{down:?}");
    assert_eq!(
        down.reason,
        "tcp :".to_owned()
            + &addr.port().to_string()
            + ": connect refused; 0 of 1 checks up, need 1"
    );
    // fall = 2 failures, at least one interval apart.
    assert!(stopped.elapsed() >= INTERVAL, "{:?}", stopped.elapsed());
    let snap = &checker.snapshot()[0];
    assert_eq!(snap.checks[0].status, CheckStatus::Down);
    assert_eq!(
        snap.checks[0].last_error.as_deref(),
        Some("connect refused")
    );
    assert!(snap.checks[0].last_latency.is_some());

    let server = TcpServer::start(&addr.to_string()).await;
    let restarted = Instant::now();
    let up = next_event(&mut rx).await;
    assert!(up.healthy, "{up:?}");
    assert!(restarted.elapsed() >= INTERVAL, "rise = 2");
    assert!(server.accepted.load(Ordering::SeqCst) >= 2);
    assert!(rx.try_recv().is_err(), "one event per transition");
}

#[tokio::test]
async fn reload_keeps_unchanged_checks() {
    let a = TcpServer::start("127.0.0.1:0").await;
    let b = TcpServer::start("127.0.0.2:0").await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let (ida, idb) = (backend("web", 1), backend("web", 2));
    checker
        .set_targets(vec![tcp_target(ida.clone(), a.addr.port())])
        .expect("valid");
    assert!(next_event(&mut rx).await.healthy);

    // Same probe with other timing and thresholds, plus a new backend.
    let mut slower = tcp_target(ida.clone(), a.addr.port());
    slower.checks[0].interval = Duration::from_millis(60);
    slower.checks[0].rise = 5;
    checker
        .set_targets(vec![slower, tcp_target(idb.clone(), b.addr.port())])
        .expect("valid");
    let snap = checker.snapshot();
    assert_eq!(snap.len(), 2);
    assert!(snap[0].healthy, "kept its state: {snap:?}");
    assert!(snap[0].checks[0].successes >= 2);
    assert!(!snap[1].healthy, "new backend starts down");
    let up = next_event(&mut rx).await;
    assert_eq!((up.backend, up.healthy), (idb.clone(), true));

    // A changed probe (another port, closed) starts over; the backend stays healthy until
    // the new check has failed `fall` times.
    let closed = closed_port().await;
    checker
        .set_targets(vec![
            tcp_target(ida.clone(), closed),
            tcp_target(idb.clone(), b.addr.port()),
        ])
        .expect("valid");
    assert_eq!(checker.snapshot()[0].checks[0].status, CheckStatus::Unknown);
    let down = next_event(&mut rx).await;
    assert_eq!((down.backend, down.healthy), (ida.clone(), false));

    // Removing a backend stops its probes.
    checker
        .set_targets(vec![tcp_target(ida, closed)])
        .expect("valid");
    tokio::time::sleep(INTERVAL).await;
    let before = b.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(b.accepted.load(Ordering::SeqCst), before);
    assert_eq!(checker.snapshot().len(), 1);
}

#[tokio::test]
async fn reload_of_the_rule_can_flip_the_verdict() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let closed = closed_port().await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let id = backend("web", 1);
    let target = |rule| Target {
        backend: id.clone(),
        checks: vec![
            spec(Probe::Tcp, server.addr.port()),
            spec(Probe::Tcp, closed),
        ],
        rule,
        via: None,
    };
    checker.set_targets(vec![target(Rule::All)]).expect("valid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while checker.snapshot()[0].checks[0].status != CheckStatus::Up {
        assert!(Instant::now() < deadline, "{:?}", checker.snapshot());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!checker.snapshot()[0].healthy);
    checker
        .set_targets(vec![target(Rule::AtLeast(1))])
        .expect("valid");
    let up = next_event(&mut rx).await;
    assert!(
        up.healthy && up.reason.starts_with("reconfigured; 1 of 2"),
        "{up:?}"
    );
}

#[tokio::test]
async fn drop_stops_probing() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    checker
        .set_targets(vec![tcp_target(backend("web", 1), server.addr.port())])
        .expect("valid");
    assert!(next_event(&mut rx).await.healthy);
    drop(checker);
    tokio::time::sleep(INTERVAL).await;
    let before = server.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), before);
    assert!(
        rx.recv().await.is_none(),
        "the channel closes with the checker"
    );
}

#[tokio::test]
async fn no_checks_is_healthy_at_once() {
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let target = Target {
        backend: backend("udp", 9),
        checks: vec![],
        rule: Rule::All,
        via: None,
    };
    checker.set_targets(vec![target]).expect("valid");
    assert!(checker.snapshot()[0].healthy);
    tokio::time::sleep(INTERVAL).await;
    assert!(rx.try_recv().is_err(), "no transition, no event");
}

#[tokio::test]
async fn invalid_targets_change_nothing() {
    let (checker, _rx) = Checker::new(CheckerConfig {
        source: Some(std::net::Ipv6Addr::LOCALHOST.into()),
    })
    .expect("runtime");
    let id = backend("web", 1);
    let err = |targets| {
        checker
            .set_targets(targets)
            .expect_err("invalid")
            .to_string()
    };

    assert_eq!(
        err(vec![tcp_target(id.clone(), 80)]),
        "web/127.0.0.1: cannot be probed from source ::1"
    );
    let v6 = BackendId {
        service: "web".into(),
        address: std::net::Ipv6Addr::LOCALHOST.into(),
    };
    assert_eq!(
        err(vec![tcp_target(v6.clone(), 80), tcp_target(v6.clone(), 80)]),
        "backend web/::1 is listed twice"
    );
    let mut strict = tcp_target(v6.clone(), 80);
    strict.rule = Rule::AtLeast(2);
    assert_eq!(
        err(vec![strict]),
        "web/::1: rule needs 2 checks up but must be between 1 and 1"
    );
    let mut zero = tcp_target(v6.clone(), 80);
    zero.checks[0].rise = 0;
    let e = checker.set_targets(vec![zero]).expect_err("rise 0");
    assert!(matches!(e, CheckerError::Check { .. }), "{e}");
    assert_eq!(
        std::error::Error::source(&e).map(ToString::to_string),
        Some("rise must be greater than zero".into())
    );
    assert!(checker.snapshot().is_empty());
}

#[test]
fn needs_a_runtime() {
    assert!(matches!(
        Checker::new(CheckerConfig::default()),
        Err(CheckerError::NoRuntime)
    ));
}

/// Defect 9: 300 services on the same 4 backends probe each backend once per interval, and
/// every service still gets its events and its snapshot.
#[tokio::test]
async fn identical_checks_are_probed_once() {
    const SERVICES: usize = 300;
    let mut servers = Vec::new();
    for last in 1..=4 {
        servers.push(TcpServer::start(&format!("127.0.0.{last}:0")).await);
    }
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let targets = (0..SERVICES)
        .flat_map(|s| {
            servers.iter().enumerate().map(move |(i, server)| {
                tcp_target(backend(&format!("svc{s}"), i as u8 + 1), server.addr.port())
            })
        })
        .collect();
    checker.set_targets(targets).expect("valid");
    let mut up = HashSet::new();
    while up.len() < SERVICES * servers.len() {
        let e = next_event(&mut rx).await;
        assert!(e.healthy, "{e:?}");
        assert!(up.insert(e.backend.clone()), "one event per backend: {e:?}");
    }
    let snap = checker.snapshot();
    assert_eq!(snap.len(), SERVICES * servers.len());
    assert!(snap.iter().all(|b| b.healthy));

    const INTERVALS: u32 = 10;
    let before: Vec<usize> = servers
        .iter()
        .map(|s| s.accepted.load(Ordering::SeqCst))
        .collect();
    tokio::time::sleep(INTERVAL * INTERVALS).await;
    for (server, before) in servers.iter().zip(before) {
        let probes = server.accepted.load(Ordering::SeqCst) - before;
        // One per interval, give or take the edges; unshared checks would make it 3,000.
        assert!(
            (1..=INTERVALS as usize + 2).contains(&probes),
            "{} accepted {probes} probes in {INTERVALS} intervals",
            server.addr
        );
    }
}

/// A service that changes its check leaves the shared one; the others keep it untouched.
#[tokio::test]
async fn leaving_a_shared_check_keeps_it_for_the_others() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let (a, b) = (backend("a", 1), backend("b", 1));
    let port = server.addr.port();
    checker
        .set_targets(vec![
            tcp_target(a.clone(), port),
            tcp_target(b.clone(), port),
        ])
        .expect("valid");
    for _ in 0..2 {
        assert!(next_event(&mut rx).await.healthy);
    }
    let mut slower = tcp_target(b.clone(), port);
    slower.checks[0].interval = INTERVAL * 2;
    checker
        .set_targets(vec![tcp_target(a.clone(), port), slower])
        .expect("valid");
    let snap = checker.snapshot();
    assert!(
        snap.iter().all(|s| s.healthy),
        "both kept their state: {snap:?}"
    );
    assert!(snap.iter().all(|s| s.checks[0].successes >= 2), "{snap:?}");
    let addr = server.stop().await;
    let mut down = HashSet::new();
    while down.len() < 2 {
        let e = next_event(&mut rx).await;
        assert!(
            !e.healthy && down.insert(e.backend.clone()),
            "{e:?} ({addr})"
        );
    }
    assert_eq!(down, HashSet::from([a, b]));
}

/// Restart adoption: a backend that was serving starts healthy and needs `fall` failures in a
/// row to go down; one that was not starts down as usual.
#[tokio::test]
async fn adopted_backends_start_healthy() {
    let closed = closed_port().await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let (serving, fresh) = (backend("web", 1), backend("web", 2));
    let mut target = tcp_target(serving.clone(), closed);
    target.checks[0].fall = 3;
    checker
        .set_targets_adopting(
            vec![target, tcp_target(fresh.clone(), closed)],
            &HashSet::from([serving.clone()]),
        )
        .expect("valid");
    let snap = checker.snapshot();
    assert!(snap[0].healthy, "{snap:?}");
    assert_eq!(snap[0].checks[0].status, CheckStatus::Up);
    assert!(!snap[1].healthy, "{snap:?}");
    let down = next_event(&mut rx).await;
    assert_eq!((down.backend, down.healthy), (serving, false));
    let snap = checker.snapshot();
    assert!(snap[0].checks[0].failures >= 3, "{snap:?}");
    assert!(rx.try_recv().is_err(), "the fresh backend was never up");
}
