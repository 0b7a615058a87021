//! Each probe against a real server on 127.0.0.1.
mod common;

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::atomic::Ordering,
    time::Duration,
};

use common::*;
use fulcrum_health::{CheckSpec, Probe, ProbeError, Rcode, probe};

async fn run(spec: &CheckSpec) -> Result<Duration, String> {
    probe(LOCALHOST, spec, None)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tcp_connects_or_is_refused() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let latency = run(&spec(Probe::Tcp, server.addr.port()))
        .await
        .expect("listening");
    assert!(latency < Duration::from_millis(300));
    let closed = closed_port().await;
    assert_eq!(
        run(&spec(Probe::Tcp, closed)).await,
        Err("connect refused".into())
    );
}

#[tokio::test]
async fn http_status_and_body() {
    let server = HttpServer::start("all good here", false).await;
    let port = server.addr.port();
    let ok = spec(Probe::Http(http("/health", 200, Some("good"))), port);
    run(&ok).await.expect("200 with the body");
    let wrong_body = spec(Probe::Http(http("/", 200, Some("bad"))), port);
    assert_eq!(run(&wrong_body).await, Err("body lacks \"bad\"".into()));

    server.status.store(503, Ordering::SeqCst);
    assert_eq!(run(&ok).await, Err("status 503 (want 200)".into()));
    let want_503 = spec(Probe::Http(http("/", 503, None)), port);
    run(&want_503).await.expect("503 expected");
}

#[tokio::test]
async fn http_chunked_body() {
    let server = HttpServer::start("the quick brown fox", true).await;
    let port = server.addr.port();
    run(&spec(
        Probe::Http(http("/", 200, Some("quick brown"))),
        port,
    ))
    .await
    .expect("substring across the chunk boundary");
    let wrong = spec(Probe::Http(http("/", 200, Some("lazy dog"))), port);
    assert_eq!(run(&wrong).await, Err("body lacks \"lazy dog\"".into()));
}

#[tokio::test]
async fn http_timeout_and_refused() {
    let silent = silent_tcp().await;
    let check = spec(Probe::Http(http("/", 200, None)), silent.port());
    let started = std::time::Instant::now();
    assert_eq!(run(&check).await, Err("timeout after 300ms".into()));
    assert!(started.elapsed() < Duration::from_secs(2));
    let closed = spec(Probe::Http(http("/", 200, None)), closed_port().await);
    assert_eq!(run(&closed).await, Err("connect refused".into()));
}

#[tokio::test]
async fn https_insecure_accepts_self_signed() {
    let server = HttpServer::start_tls("tls ok").await;
    let mut check = http("/", 200, Some("tls ok"));
    check.host = Some("localhost".into());
    let spec = spec(
        Probe::Https {
            http: check,
            insecure: true,
        },
        server.addr.port(),
    );
    run(&spec).await.expect("insecure mode skips verification");
}

#[tokio::test]
async fn https_verifying_refuses_self_signed() {
    let server = HttpServer::start_tls("tls ok").await;
    for host in [None, Some("localhost".to_owned())] {
        let mut check = http("/", 200, None);
        check.host = host;
        let spec = spec(
            Probe::Https {
                http: check,
                insecure: false,
            },
            server.addr.port(),
        );
        let err = probe(LOCALHOST, &spec, None)
            .await
            .expect_err("self-signed");
        assert!(
            matches!(&err, ProbeError::Tls(m) if m.contains("certificate")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn https_status_is_checked() {
    let server = HttpServer::start_tls("x").await;
    server.status.store(500, Ordering::SeqCst);
    let spec = spec(
        Probe::Https {
            http: http("/", 200, None),
            insecure: true,
        },
        server.addr.port(),
    );
    assert_eq!(run(&spec).await, Err("status 500 (want 200)".into()));
}

#[tokio::test]
async fn dns_rcode() {
    let noerror = dns_server(Some(0), false).await.port();
    let nxdomain = dns_server(Some(3), false).await.port();
    run(&spec(dns(Rcode::NOERROR), noerror))
        .await
        .expect("NOERROR");
    assert_eq!(
        run(&spec(dns(Rcode::NOERROR), nxdomain)).await,
        Err("rcode NXDOMAIN (want NOERROR)".into())
    );
    run(&spec(dns(Rcode::NXDOMAIN), nxdomain))
        .await
        .expect("NXDOMAIN expected");
}

#[tokio::test]
async fn dns_id_timeout_and_refused() {
    let wrong = dns_server(Some(0), true).await.port();
    let err = run(&spec(dns(Rcode::NOERROR), wrong))
        .await
        .expect_err("wrong id");
    assert!(err.starts_with("response id "), "{err}");
    let silent = dns_server(None, false).await.port();
    assert_eq!(
        run(&spec(dns(Rcode::NOERROR), silent)).await,
        Err("timeout after 300ms".into())
    );
    let closed = closed_udp_port().await;
    assert_eq!(
        run(&spec(dns(Rcode::NOERROR), closed)).await,
        Err("connect refused".into())
    );
}

async fn closed_udp_port() -> u16 {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    s.local_addr().expect("addr").port()
}

#[tokio::test]
async fn source_address_is_used() {
    let server = TcpServer::start("127.0.0.1:0").await;
    let source: IpAddr = [127, 0, 0, 2].into();
    probe(
        LOCALHOST,
        &spec(Probe::Tcp, server.addr.port()),
        Some(source),
    )
    .await
    .expect("probe from 127.0.0.2");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let peer = server.last_peer.lock().expect("lock").map(|p| p.ip());
    assert_eq!(peer, Some(source));

    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    let err = probe(LOCALHOST, &spec(Probe::Tcp, server.addr.port()), Some(v6)).await;
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("source ::1 cannot reach 127.0.0.1".into())
    );
}
