//! The stand-in daemon: a tiny HTTP server on loopback serving the console and a fixed status.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use fulcrum_daemon::console::CONSOLE_HTML;

use crate::fixture::fixture;

/// How the stand-in daemon answers `GET /api/v1/services`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    /// `500 Internal Server Error`.
    Error = 1,
    /// Closes the connection without answering.
    Hangup = 2,
}

/// The daemon's HTTP side as the console uses it: `/` and `/api/v1/services`, nothing else.
pub struct FakeDaemon {
    port: u16,
    pub state: Arc<FakeState>,
    thread: Option<JoinHandle<()>>,
}

/// What the test changes while the page runs, and what it counts.
pub struct FakeState {
    mode: AtomicU8,
    pub reload_refused: AtomicBool,
    pub all_up: AtomicBool,
    pub api_requests: AtomicUsize,
    stop: AtomicBool,
}

impl FakeDaemon {
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(FakeState {
            mode: AtomicU8::new(Mode::Ok as u8),
            reload_refused: AtomicBool::new(true),
            all_up: AtomicBool::new(false),
            api_requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let state = state.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if state.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    // Chromium preconnects sockets it may never use: one thread each.
                    thread::spawn(move || serve(stream, &state));
                }
            })
        };
        Self {
            port,
            state,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, state: &FakeState) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (
        request_line.next().unwrap_or(""),
        request_line.next().unwrap_or(""),
    );
    let (status, content_type, body) = match (method, path) {
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            CONSOLE_HTML.to_string(),
        ),
        ("GET", "/api/v1/services") => {
            let generation = state.api_requests.fetch_add(1, Ordering::SeqCst) + 1;
            match state.mode.load(Ordering::SeqCst) {
                m if m == Mode::Ok as u8 => {
                    let refused = state.reload_refused.load(Ordering::SeqCst);
                    let all_up = state.all_up.load(Ordering::SeqCst);
                    let body = fixture(generation, refused, all_up);
                    ("200 OK", "application/json", body)
                }
                m if m == Mode::Error as u8 => (
                    "500 Internal Server Error",
                    "text/plain",
                    "boom".to_string(),
                ),
                _ => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        ("GET", "/api/v1/top-talkers") => (
            "200 OK",
            "application/json",
            crate::fixture::TOP_TALKERS.to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
