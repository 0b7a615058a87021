//! The API as a script or the CLI uses it: real HTTP on loopback, over a stand-in for the
//! daemon that records what it was asked to do.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fulcrum_daemon::{
    api::{Control, ControlError, Snapshot, router},
    http::{HttpLimits, HttpStats},
};
use fulcrum_lab::traffic::http_call;

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Control for Recorder {
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }

    fn set_drain(&self, service: &str, backend: IpAddr, drained: bool) -> Result<(), ControlError> {
        if service != "web" {
            return Err(ControlError::NotFound(format!("no service '{service}'")));
        }
        self.calls
            .lock()
            .expect("lock")
            .push(format!("drain {service} {backend} {drained}"));
        Ok(())
    }

    fn reload(&self) -> Result<(), ControlError> {
        self.calls.lock().expect("lock").push("reload".into());
        Err(ControlError::Rejected(
            "fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address".into(),
        ))
    }
}

fn serve(control: Recorder) -> SocketAddr {
    serve_within(control, HttpLimits::default(), Arc::default())
}

fn serve_within(control: Recorder, limits: HttpLimits, stats: Arc<HttpStats>) -> SocketAddr {
    serve_app(router(control, Some("s3cret".into())), limits, stats)
}

fn serve_app(app: axum::Router, limits: HttpLimits, stats: Arc<HttpStats>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            fulcrum_daemon::http::serve(listener, app, limits, stats, std::future::pending()).await;
        });
    });
    addr
}

/// Status code and body of one request.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = TcpStream::connect(addr).expect("connect");
    http_call(stream, method, path, token).expect("API call")
}

#[test]
fn mutating_calls_need_the_token_and_change_nothing_without_it() {
    let recorder = Recorder::default();
    let addr = serve(recorder.clone());
    let drain = "/api/v1/services/web/backends/10.66.0.11/drain";
    assert_eq!(request(addr, "POST", drain, None).0, 401);
    assert_eq!(request(addr, "POST", drain, Some("wrong")).0, 401);
    assert_eq!(request(addr, "POST", "/api/v1/reload", None).0, 401);
    assert!(
        recorder.calls.lock().expect("lock").is_empty(),
        "nothing was changed"
    );

    assert_eq!(request(addr, "POST", drain, Some("s3cret")).0, 200);
    let undrain = "/api/v1/services/web/backends/10.66.0.11/undrain";
    assert_eq!(request(addr, "POST", undrain, Some("s3cret")).0, 200);
    assert_eq!(
        *recorder.calls.lock().expect("lock"),
        vec!["drain web 10.66.0.11 true", "drain web 10.66.0.11 false"]
    );
}

#[test]
fn an_ipv6_backend_is_named_bare_or_in_brackets() {
    let recorder = Recorder::default();
    let addr = serve(recorder.clone());
    for path in [
        "/api/v1/services/web/backends/2001:db8::11/drain",
        "/api/v1/services/web/backends/%5B2001:db8:0::11%5D/undrain",
    ] {
        let (code, body) = request(addr, "POST", path, Some("s3cret"));
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        *recorder.calls.lock().expect("lock"),
        vec![
            "drain web 2001:db8::11 true",
            "drain web 2001:db8::11 false"
        ]
    );
    let (code, body) = request(
        addr,
        "POST",
        "/api/v1/services/web/backends/2001:db8::g/drain",
        Some("s3cret"),
    );
    assert_eq!(
        (code, body.contains("'2001:db8::g' is not an IP address")),
        (400, true),
        "{body}"
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let addr = serve(Recorder::default());
    let (code, body) = request(
        addr,
        "POST",
        "/api/v1/services/db/backends/10.66.0.11/drain",
        Some("s3cret"),
    );
    assert_eq!(
        (code, body.contains("no service 'db'")),
        (404, true),
        "{body}"
    );
    let (code, body) = request(
        addr,
        "POST",
        "/api/v1/services/web/backends/10.66.0.x/drain",
        Some("s3cret"),
    );
    assert_eq!(
        (code, body.contains("'10.66.0.x' is not an IP address")),
        (400, true),
        "{body}"
    );
    let (code, body) = request(addr, "POST", "/api/v1/reload", Some("s3cret"));
    assert_eq!(
        (code, body.contains("services[0].vip")),
        (422, true),
        "{body}"
    );
}

#[test]
fn reads_are_open() {
    let addr = serve(Recorder::default());
    let (code, body) = request(addr, "GET", "/api/v1/services", None);
    assert_eq!(code, 200);
    assert!(
        body.contains("\"services\":[]") && body.contains("\"events\":[]"),
        "{body}"
    );
    let (code, body) = request(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE fulcrum_packets_total counter"),
        "{body}"
    );
    let (code, body) = request(addr, "GET", "/", None);
    assert_eq!(code, 200);
    assert!(
        body.contains("<html")
            || body.contains("<!DOCTYPE html>")
            || body.contains("<!doctype html>"),
        "{body}"
    );
}

/// The whole answer to a request with `headers`.
fn raw(addr: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("answer");
    text
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let recorder = Recorder::default();
    let addr = serve(recorder.clone());
    let drain = "/api/v1/services/web/backends/10.66.0.11/drain";
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = raw(
            addr,
            "POST",
            drain,
            &format!("Authorization: {scheme} s3cret\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }
    let answer = raw(addr, "POST", drain, "Authorization: Basic s3cret\r\n");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(recorder.calls.lock().expect("lock").len(), 3);
}

#[test]
fn every_401_says_how_to_authenticate() {
    let addr = serve(Recorder::default());
    let drain = "/api/v1/services/web/backends/10.66.0.11/drain";
    for (path, auth) in [
        (drain, ""),
        (drain, "Authorization: Bearer wrong\r\n"),
        // A prefix and an extension of the token: the length is no shortcut.
        (drain, "Authorization: Bearer s3cre\r\n"),
        (drain, "Authorization: Bearer s3cret!\r\n"),
        ("/api/v1/reload", "Authorization: Bearer\r\n"),
    ] {
        let answer = raw(addr, "POST", path, auth);
        let (head, _) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 401"), "{auth}: {answer}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nwww-authenticate: bearer realm=\"fulcrum\""),
            "{auth}: {head}"
        );
    }
}

/// Sockets this process holds whose local port is `port`: the server's side of its
/// connections (the clients live in this process too, on other local ports).
fn server_sockets(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Some(inode) = fields.get(9)
            {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| inodes.contains(target.to_string_lossy().as_ref()))
        .count()
}

fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Defect 4, API side: 1,100 idle connections hold at most the cap's worth of descriptors,
/// connections that send no header are closed after the header timeout, and the API answers
/// once they are gone.
#[test]
fn idle_connections_are_capped_and_timed_out() {
    raise_descriptor_limit();
    let limits = HttpLimits {
        header_read_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let stats = Arc::new(HttpStats::default());
    let addr = serve_within(Recorder::default(), limits, stats.clone());
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    let mut idle = Vec::new();
    let mut most = 0;
    for i in 0..1_100 {
        idle.push(TcpStream::connect(addr).expect("connect"));
        if i % 20 == 0 {
            most = most.max(server_sockets(addr.port()));
        }
    }
    wait_for("every connection accepted", &|| {
        stats.accepted() + stats.refused() >= 1_100
    });
    most = most.max(server_sockets(addr.port()));
    // The listener, at most the cap, and one being refused.
    assert!(
        most <= limits.max_connections + 2,
        "{most} server sockets for a cap of {}",
        limits.max_connections
    );
    eprintln!(
        "1,100 idle connections: at most {most} server sockets, {} served, {} refused",
        stats.accepted(),
        stats.refused()
    );
    assert!(stats.refused() > 0, "the cap was reached");

    wait_for("idle connections to time out", &|| stats.open() == 0);
    assert_eq!(server_sockets(addr.port()), 1, "only the listener is left");
    let closed = idle
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            match s.read(&mut [0; 64]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .filter(|&closed| closed)
        .count();
    assert_eq!(
        closed,
        idle.len(),
        "the server closed every idle connection"
    );
    assert_eq!(request(addr, "GET", "/api/v1/services", None).0, 200);
}

/// A request whose body never comes holds its connection no longer than the idle timeout
/// (the header timeout is over once the headers are in).
#[test]
fn a_stalled_body_is_timed_out() {
    let limits = HttpLimits {
        idle_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let stats = Arc::new(HttpStats::default());
    let echo =
        axum::Router::new().route("/echo", axum::routing::post(|body: String| async { body }));
    let addr = serve_app(echo, limits, stats.clone());
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = Vec::new();
    let closed = stream.read_to_end(&mut answer);
    assert!(closed.is_ok() && answer.is_empty(), "{closed:?} {answer:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.open() != 0 {
        assert!(Instant::now() < deadline, "the connection stays open");
        std::thread::sleep(Duration::from_millis(10));
    }
}
