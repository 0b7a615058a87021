//! Real servers on 127.0.0.1 (or `::1`) ephemeral ports, each running until its test's
//! runtime ends.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use fulcrum_health::{CheckSpec, DnsCheck, HttpCheck, Probe, QueryType, Rcode};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

pub const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

pub fn spec(probe: Probe, port: u16) -> CheckSpec {
    CheckSpec {
        probe,
        port,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        rise: 2,
        fall: 2,
    }
}

pub fn http(path: &str, status: u16, body: Option<&str>) -> HttpCheck {
    HttpCheck {
        path: path.into(),
        host: None,
        expect_status: status,
        expect_body: body.map(Into::into),
    }
}

pub fn dns(rcode: Rcode) -> Probe {
    Probe::Dns(DnsCheck {
        query: "www.example.com".into(),
        query_type: QueryType::A,
        expect_rcode: rcode,
    })
}

/// A port nothing listens on (bound then released).
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// Accepts and closes connections, counting them and remembering the last peer.
pub struct TcpServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub last_peer: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpServer {
    pub async fn start(addr: &str) -> Self {
        let listener = bind_reusable(addr).await;
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let last_peer = Arc::new(Mutex::new(None));
        let (a, p) = (accepted.clone(), last_peer.clone());
        let task = tokio::spawn(async move {
            while let Ok((_conn, peer)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                *p.lock().expect("lock") = Some(peer);
            }
        });
        Self {
            addr,
            accepted,
            last_peer,
            task,
        }
    }

    /// Closes the listening socket: new connections are refused.
    pub async fn stop(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// Binds with SO_REUSEADDR so a stopped server can be restarted on its port, retrying briefly.
async fn bind_reusable(addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("address");
    for _ in 0..50 {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        if socket.bind(addr).is_ok() {
            return socket.listen(128).expect("listen");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr}");
}

/// Answers every request with the current status and a fixed body.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    /// The head of every request received, as sent.
    pub requests: Requests,
}

pub type Requests = Arc<Mutex<Vec<String>>>;

impl HttpServer {
    pub async fn start(body: &'static str, chunked: bool) -> Self {
        Self::start_on("127.0.0.1:0", body, chunked).await
    }

    /// The same on `bind`, such as `[::1]:0`.
    pub async fn start_on(bind: &str, body: &'static str, chunked: bool) -> Self {
        let listener = TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(200));
        let requests = Requests::default();
        let (s, r) = (status.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let code = s.load(Ordering::SeqCst);
                tokio::spawn(respond(conn, code, body, chunked, Some(r.clone())));
            }
        });
        Self {
            addr,
            status,
            requests,
        }
    }

    /// The same over TLS with a self-signed certificate for `localhost`, made now.
    pub async fn start_tls(body: &'static str) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(200));
        let s = status.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (acceptor, code) = (acceptor.clone(), s.load(Ordering::SeqCst));
                tokio::spawn(async move {
                    // A verifying client aborts the handshake: nothing to answer then.
                    if let Ok(tls) = acceptor.accept(conn).await {
                        respond(tls, code, body, false, None).await;
                    }
                });
            }
        });
        Self {
            addr,
            status,
            requests: Requests::default(),
        }
    }
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    code: u16,
    body: &str,
    chunked: bool,
    requests: Option<Requests>,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    if let Some(requests) = requests {
        let head = String::from_utf8_lossy(&req).into_owned();
        requests.lock().expect("lock").push(head);
    }
    let response = if chunked {
        let (a, b) = body.split_at(body.len() / 2);
        format!(
            "HTTP/1.1 {code} X\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
    } else {
        format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Accepts TCP connections and never answers.
pub async fn silent_tcp() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

/// Answers DNS queries with `rcode` (the question echoed, no records), optionally with a
/// wrong id; `None` never answers.
pub async fn dns_server(rcode: Option<u8>, wrong_id: bool) -> SocketAddr {
    dns_server_on("127.0.0.1:0", rcode, wrong_id).await
}

/// The same on `bind`, such as `[::1]:0`.
pub async fn dns_server_on(bind: &str, rcode: Option<u8>, wrong_id: bool) -> SocketAddr {
    let socket = UdpSocket::bind(bind).await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Some(rcode) = rcode else { continue };
            let mut answer = buf[..n].to_vec();
            if answer.len() < 12 {
                continue;
            }
            answer[2] |= 0x80; // QR
            answer[3] = 0x80 | rcode; // RA + RCODE
            if wrong_id {
                answer[0] ^= 0xff;
            }
            let _ = socket.send_to(&answer, peer).await;
        }
    });
    addr
}
