//! Real servers and clients for labs: tiny HTTP/1.1 and UDP servers that say who they
//! are and whom they saw, and clients that ask them.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::netns::NetNs;

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// What a lab server answers: its name and the client address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The server's name, e.g. `backend-2`.
    pub server: String,
    /// The peer address the server saw (the client's own address under DSR).
    pub peer: String,
}

impl Answer {
    fn parse(body: &str) -> anyhow::Result<Self> {
        let mut words = body.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(server), Some("saw"), Some(peer)) => Ok(Self {
                server: server.into(),
                peer: peer.into(),
            }),
            _ => bail!("unexpected answer {body:?}"),
        }
    }
}

/// A server running in threads of this process, stopped on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Requests or datagrams answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP/1.1 server with keep-alive in `ns`, on `addr`; every response body is
/// `NAME saw PEER_IP`.
pub fn http_server(ns: &NetNs, name: &str, addr: SocketAddr) -> anyhow::Result<Server> {
    let listener = ns
        .run_in(|| TcpListener::bind(addr))?
        .with_context(|| format!("binding {addr} in {}", ns.name()))?;
    listener.set_nonblocking(true)?;
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (stop2, served2, name) = (stop.clone(), served.clone(), name.to_string());
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let (name, served, stop) = (name.clone(), served2.clone(), stop2.clone());
                    std::thread::spawn(move || serve_http(stream, peer, &name, &served, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(Server {
        stop,
        served,
        thread: Some(thread),
    })
}

fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    name: &str,
    served: &AtomicU64,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // HTTP/1.0 without keep-alive, or `Connection: close`: the server closes after answering.
    let mut close = false;
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.starts_with("GET ") || line.starts_with("POST ") => {
                close = line.trim_end().ends_with("HTTP/1.0");
            }
            Ok(_) if line.to_ascii_lowercase().starts_with("connection:") => {
                close = line.to_ascii_lowercase().contains("close");
            }
            Ok(_) if line == "\r\n" => {
                let body = format!("{name} saw {}\n", peer.ip());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if writer.write_all(response.as_bytes()).is_err() {
                    return;
                }
                served.fetch_add(1, Ordering::Relaxed);
                if close {
                    return;
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A UDP server in `ns` bound to `addr` (bind the VIP so replies come from it); answers
/// every datagram with `NAME saw PEER_IP`.
pub fn udp_server(ns: &NetNs, name: &str, addr: SocketAddr) -> anyhow::Result<Server> {
    let socket = ns
        .run_in(|| UdpSocket::bind(addr))?
        .with_context(|| format!("binding udp {addr} in {}", ns.name()))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (stop2, served2, name) = (stop.clone(), served.clone(), name.to_string());
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let body = format!("{name} saw {}\n", peer.ip());
                if socket.send_to(body.as_bytes(), peer).is_ok() {
                    served2.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    Ok(Server {
        stop,
        served,
        thread: Some(thread),
    })
}

/// A client connection kept open across requests (HTTP keep-alive).
pub struct HttpConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl HttpConnection {
    /// Connects from `ns` to `addr`.
    pub fn open(ns: &NetNs, addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = ns
            .run_in(|| TcpStream::connect_timeout(&addr, IO_TIMEOUT))?
            .with_context(|| format!("connecting to {addr} from {}", ns.name()))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// The client's port: with the addresses, what the balancer hashes.
    pub fn local_port(&self) -> u16 {
        self.writer.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends `GET /` and reads the answer.
    pub fn get(&mut self) -> anyhow::Result<Answer> {
        self.writer
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
            .context("sending the request")?;
        let mut length = None;
        let mut status = String::new();
        self.reader
            .read_line(&mut status)
            .context("reading the status line")?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("unexpected status line {status:?}");
        }
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .context("reading headers")?
                == 0
            {
                bail!("connection closed in the headers");
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.context("no Content-Length")?];
        self.reader
            .read_exact(&mut body)
            .context("reading the body")?;
        Answer::parse(&String::from_utf8_lossy(&body))
    }
}

/// One request on a fresh connection.
pub fn http_get(ns: &NetNs, addr: SocketAddr) -> anyhow::Result<Answer> {
    HttpConnection::open(ns, addr)?.get()
}

/// One datagram from a fresh socket and its answer, with the socket's source port (the
/// kernel may hand out a port again once its socket is closed).
pub fn udp_ask(ns: &NetNs, addr: SocketAddr) -> anyhow::Result<(Answer, u16)> {
    let socket = ns
        .run_in(|| UdpSocket::bind("0.0.0.0:0"))?
        .context("binding a client UDP socket")?;
    let port = socket.local_addr()?.port();
    Ok((udp_ask_with(&socket, addr)?, port))
}

/// One datagram from client port `port` (a fixed 5-tuple, so the same flow can be sent
/// again later) and the answer.
pub fn udp_ask_from(ns: &NetNs, port: u16, addr: SocketAddr) -> anyhow::Result<Answer> {
    let socket = ns
        .run_in(|| UdpSocket::bind(("0.0.0.0", port)))?
        .with_context(|| format!("binding client UDP port {port}"))?;
    udp_ask_with(&socket, addr)
}

/// Sends one datagram from `socket` to `addr` and parses the answer.
fn udp_ask_with(socket: &UdpSocket, addr: SocketAddr) -> anyhow::Result<Answer> {
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.connect(addr)?;
    socket.send(b"who?")?;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).with_context(|| {
        format!(
            "no UDP answer from {addr} to port {}",
            socket.local_addr().map_or(0, |a| a.port())
        )
    })?;
    Answer::parse(&String::from_utf8_lossy(&buf[..n]))
}

/// One HTTP/1.1 request with an empty body on a fresh connection (`Connection: close`),
/// optionally with a bearer token: the status code and the body.
pub fn http_call(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n{auth}\r\n"
    )
    .context("sending the request")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .context("reading the answer")?;
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
