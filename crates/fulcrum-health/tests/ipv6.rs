//! Every probe against real servers on `::1`, and the checker deciding an IPv6 backend's
//! health: IPv6 backends are checked like IPv4 ones.
mod common;

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::atomic::Ordering,
    time::Duration,
};

use common::*;
use fulcrum_health::{
    BackendId, Checker, CheckerConfig, HttpCheck, Probe, Rcode, Rule, Target, probe,
};

const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

async fn run(spec: &fulcrum_health::CheckSpec) -> Result<Duration, String> {
    probe(V6, spec, None).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn tcp_connects_to_an_ipv6_backend_or_is_refused() {
    let server = TcpServer::start("[::1]:0").await;
    run(&spec(Probe::Tcp, server.addr.port()))
        .await
        .expect("listening on ::1");
    // The server's task may not have run yet: wait for it to see the connection.
    for _ in 0..200 {
        if server.accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer = server.last_peer.lock().expect("lock").map(|p| p.ip());
    assert_eq!(peer, Some(V6), "the probe came over IPv6");
    let port = server.stop().await.port();
    assert_eq!(
        run(&spec(Probe::Tcp, port)).await,
        Err("connect refused".into())
    );
}

#[tokio::test]
async fn http_names_an_ipv6_backend_in_brackets_in_host() {
    let server = HttpServer::start_on("[::1]:0", "up and running", false).await;
    let port = server.addr.port();
    run(&spec(
        Probe::Http(http("/health", 200, Some("running"))),
        port,
    ))
    .await
    .expect("200 with the body over IPv6");
    let requests = server.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /health HTTP/1.1\r\n")
            && requests[0].contains(&format!("\r\nHost: [::1]:{port}\r\n")),
        "{:?}",
        requests[0]
    );
    server.status.store(503, Ordering::SeqCst);
    let named = HttpCheck {
        host: Some("www.example.com".into()),
        ..http("/", 200, None)
    };
    assert_eq!(
        run(&spec(Probe::Http(named), port)).await,
        Err("status 503 (want 200)".into())
    );
    let last = server.requests.lock().expect("lock").last().cloned();
    assert!(
        last.is_some_and(|r| r.contains("\r\nHost: www.example.com\r\n")),
        "a configured host is sent as given"
    );
}

#[tokio::test]
async fn dns_queries_an_ipv6_backend() {
    let noerror = dns_server_on("[::1]:0", Some(0), false).await.port();
    let refused = dns_server_on("[::1]:0", Some(5), false).await.port();
    run(&spec(dns(Rcode::NOERROR), noerror))
        .await
        .expect("NOERROR over IPv6");
    assert_eq!(
        run(&spec(dns(Rcode::NOERROR), refused)).await,
        Err("rcode REFUSED (want NOERROR)".into())
    );
}

#[tokio::test]
async fn the_checker_marks_an_ipv6_backend_up_then_down() {
    let server = TcpServer::start("[::1]:0").await;
    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let id = BackendId {
        service: "web6".into(),
        address: V6,
    };
    checker
        .set_targets(vec![Target {
            backend: id.clone(),
            checks: vec![spec(Probe::Tcp, server.addr.port())],
            rule: Rule::All,
            via: None,
        }])
        .expect("an IPv6 target is valid");
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5s")
            .expect("channel open")
    };
    let up: fulcrum_health::HealthEvent = next(&mut rx).await;
    assert_eq!((up.backend.clone(), up.healthy), (id.clone(), true));
    let port = server.stop().await.port();
    let down: fulcrum_health::HealthEvent = next(&mut rx).await;
    assert_eq!(
        (down.backend, down.healthy, down.reason),
        (
            id,
            false,
            format!("tcp :{port}: connect refused; 0 of 1 checks up, need 1")
        )
    );
    checker.stop();
}
