//! The web console as a person sees it: the real page in real headless Chromium (Debian's
//! `chromium`, installed by scripts/setup.sh), fed a fixed status by a tiny HTTP server on
//! loopback that stands in for the daemon.
//!
//! Chromium is driven over the DevTools protocol (a websocket on loopback): `--dump-dom` runs
//! the page's fetches fine, but a headless window is never narrower than 500 px, so a phone is
//! emulated with `Emulation.setDeviceMetricsOverride` instead, and what is checked is what the
//! page renders (`innerText`, computed styles, layout boxes), not only its markup.
//!
//! Set `FULCRUM_CHROMIUM` to use another Chromium binary.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fulcrum_daemon::{
    api::{Event, Snapshot},
    console::CONSOLE_HTML,
    status::{BackendStatus, CheckStatus, Health, ServiceStatus, Status, TrafficStatus},
};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long any one wait in these tests may take; the page refreshes every second.
const PATIENCE: Duration = Duration::from_secs(30);

/// An unbreakable 150-character word in a last error: it must wrap, not widen a phone's page.
const LONG_URL: &str = "http://10.66.0.12:80/healthz/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Why the last reload was refused, as the API reports it.
const RELOAD_ERROR: &str =
    "/etc/fulcrum/fulcrum.yaml:9: services[0].port: 70000 is not a port (0 to 65535)";

/// The IPv6 service's VIP and its one backend, tunnelled with GUE.
const V6_VIP: &str = "2001:db8:100::1";
const V6_BACKEND: &str = "2001:db8:200::10";

/// Markup in a message from the API, which the page must show as text.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> reloaded by <b>ops</b>";

fn traffic(pps: f64, new_flows: u64) -> TrafficStatus {
    TrafficStatus {
        packets: 1_000_000,
        bytes: 800_000_000,
        new_flows,
        packets_per_second: pps,
        bits_per_second: pps * 8.0 * 800.0,
    }
}

fn backend(
    address: [u8; 4],
    health: Health,
    drained: bool,
    last_error: Option<&str>,
) -> BackendStatus {
    let up = health == Health::Up;
    BackendStatus {
        address: IpAddr::from(address),
        weight: if address[3] == 13 { 2 } else { 1 },
        drained,
        health,
        last_error: last_error.map(str::to_string),
        checks: match health {
            Health::Unknown => Vec::new(),
            _ => vec![CheckStatus {
                kind: "http".into(),
                up,
                latency_seconds: Some(if up { 0.0021 } else { 0.5 }),
                last_error: last_error.map(str::to_string),
            }],
        },
        traffic: traffic(if up { 1234.0 } else { 0.0 }, 4321),
        data_plane_error: None,
        leaving: false,
    }
}

/// What `GET /api/v1/services` answers, made of the daemon's own types. The `generation` (1
/// for the first answer) moves the web service's rate so a refresh shows.
/// The stand-in daemon's answer; `all_up`: every backend up and none drained.
fn fixture(generation: usize, reload_refused: bool, all_up: bool) -> String {
    let backend = |address: [u8; 4], health: Health, drained: bool, error: Option<&str>| {
        if all_up {
            backend(address, Health::Up, false, None)
        } else {
            backend(address, health, drained, error)
        }
    };
    let mut status = Status {
        services: vec![
            ServiceStatus {
                name: "web".into(),
                vip: Ipv4Addr::new(10, 66, 99, 1).into(),
                port: 80,
                protocol: "tcp".into(),
                forwarding: "l2-dsr".into(),
                icmp_echo: true,
                traffic: traffic(1000.0 * generation as f64, 98_765),
                backends: vec![
                    backend([10, 66, 0, 11], Health::Up, false, None),
                    backend(
                        [10, 66, 0, 12],
                        Health::Down,
                        false,
                        Some(&format!("connect refused: GET {LONG_URL}")),
                    ),
                    backend([10, 66, 0, 13], Health::Unknown, false, None),
                ],
            },
            ServiceStatus {
                name: "dns".into(),
                vip: Ipv4Addr::new(10, 66, 99, 2).into(),
                port: 53,
                protocol: "udp".into(),
                forwarding: "l2-dsr".into(),
                icmp_echo: true,
                traffic: traffic(0.0, 0),
                backends: vec![
                    backend([10, 66, 0, 21], Health::Up, false, None),
                    backend([10, 66, 0, 22], Health::Up, true, None),
                ],
            },
            ServiceStatus {
                name: "web6".into(),
                vip: V6_VIP.parse().expect("vip"),
                port: 443,
                protocol: "tcp".into(),
                forwarding: "gue".into(),
                icmp_echo: false,
                traffic: traffic(0.0, 0),
                backends: vec![BackendStatus {
                    address: V6_BACKEND.parse().expect("address"),
                    ..backend([0, 0, 0, 0], Health::Up, false, None)
                }],
            },
        ],
        counters: vec![("tx".into(), 123_456), ("pass_not_vip".into(), 7)],
        reloading: false,
        health_local_failures: 0,
    };
    if !all_up {
        let dns = &mut status.services[1].backends;
        dns[0].data_plane_error = Some(UNREACHABLE.into());
        dns[1].leaving = true;
    }
    let event = |time: &str, service: &str, backend: Option<[u8; 4]>, message: &str| Event {
        time: time.into(),
        service: service.into(),
        backend: backend.map(IpAddr::from),
        message: message.into(),
    };
    let snapshot = Snapshot {
        status,
        events: vec![
            event(
                "2026-01-02T03:04:05Z",
                "web",
                Some([10, 66, 0, 12]),
                "became unhealthy: connect refused",
            ),
            event(
                "2026-01-02T03:00:00Z",
                "dns",
                Some([10, 66, 0, 22]),
                "drained",
            ),
            event("2026-01-02T02:59:00Z", "web", None, HOSTILE),
        ],
        reload_error: reload_refused.then(|| RELOAD_ERROR.to_string()),
        config: None,
    };
    serde_json::to_string(&snapshot).expect("snapshot serializes")
}

/// How the stand-in daemon answers `GET /api/v1/services`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Mode {
    Ok = 0,
    /// `500 Internal Server Error`.
    Error = 1,
    /// Closes the connection without answering.
    Hangup = 2,
}

/// The daemon's HTTP side as the console uses it: `/` and `/api/v1/services`, nothing else.
struct FakeDaemon {
    port: u16,
    state: Arc<FakeState>,
    thread: Option<JoinHandle<()>>,
}

/// What the test changes while the page runs, and what it counts.
struct FakeState {
    mode: AtomicU8,
    reload_refused: AtomicBool,
    all_up: AtomicBool,
    api_requests: AtomicUsize,
    stop: AtomicBool,
}

impl FakeDaemon {
    fn start() -> Self {
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn set_mode(&self, mode: Mode) {
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
        _ => ("404 Not Found", "text/plain", "not found".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Headless Chromium in its own process group and profile, driven over the DevTools protocol
/// on loopback; killed, group and all, and its profile removed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
}

impl Browser {
    fn launch() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let profile = std::env::temp_dir().join(format!(
            "fulcrum-console-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&profile).expect("create the profile directory");
        let log = fs::File::create(profile.join("chromium.log")).expect("create the log");
        let binary = std::env::var("FULCRUM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--mute-audio",
                // Nothing but loopback: every name but 127.0.0.1 fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): install Debian's chromium (scripts/setup.sh)")
            });

        // With port 0 Chromium picks one and writes it, with the browser's path, here.
        let active_port = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + PATIENCE;
        let (port, path) = loop {
            if let Ok(text) = fs::read_to_string(&active_port) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (
                        port.trim().parse::<u16>().expect("DevTools port"),
                        path.trim().to_string(),
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "Chromium wrote no DevToolsActivePort in {PATIENCE:?}; its log:\n{}",
                fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(PATIENCE))
            .expect("write timeout");
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools websocket handshake");
        let mut browser = Self {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser
    }

    /// One DevTools command (to the page once attached); its result, or a panic with its error.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let text = match self.ws.read().map_err(|e| e.to_string())? {
                Message::Text(text) => text,
                _ => continue,
            };
            let reply: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            if reply["id"].as_u64() != Some(id) {
                continue; // an event, or a late answer
            }
            if let Some(error) = reply.get("error") {
                return Err(error.to_string());
            }
            return Ok(reply["result"].clone());
        }
        Err(format!("no answer in {PATIENCE:?}"))
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
    }

    fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until `expression` is truthy and returns its value.
    fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Evaluating while a page loads may fail: that is "not yet".
            match self.try_eval(expression) {
                Ok(Value::Null | Value::Bool(false)) | Err(_) => {}
                Ok(Value::String(s)) if s.is_empty() => {}
                Ok(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
                Ok(value) => return value,
            }
            if Instant::now() >= deadline {
                let seen = self.try_eval("document.body ? document.body.innerText : ''");
                panic!("{what}: not within {PATIENCE:?}; the page shows:\n{seen:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Emulates a screen: a phone (`mobile`, high density, honours the viewport meta) or a desktop.
    fn screen(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": if mobile { 3 } else { 1 },
                "mobile": mobile,
            }),
        );
    }

    /// Opens the console and waits for its first rendered answer.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            "the console renders the API's answer",
            "document.body && document.body.dataset.state === 'ok' && \
             Number(document.body.dataset.refreshes) >= 1",
        );
    }

    /// What a person reads on the screen in the element `selector` (rendered text: nothing
    /// hidden, CSS capitalisation applied), or null when there is no such visible element.
    fn text(&mut self, selector: &str) -> Option<String> {
        let selector = serde_json::to_string(selector).expect("selector");
        let value = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); \
             return e && e.checkVisibility() ? e.innerText : null; }})()"
        ));
        value.as_str().map(str::to_string)
    }

    fn attr(&mut self, selector: &str, name: &str) -> Option<String> {
        let (selector, name) = (json!(selector), json!(name));
        self.eval(&format!(
            "document.querySelector({selector})?.getAttribute({name}) ?? null"
        ))
        .as_str()
        .map(str::to_string)
    }

    /// With `FULCRUM_CONSOLE_SCREENSHOTS=DIR`, saves what the screen shows as `DIR/NAME.png`
    /// (for a person reviewing the console; the assertions never look at it).
    fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("FULCRUM_CONSOLE_SCREENSHOTS") else {
            return;
        };
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        fs::create_dir_all(&dir).expect("screenshot directory");
        fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// How far right anything on the page reaches, in CSS pixels: the document's scroll width
    /// or any element's box, whichever is wider (so nothing hides by being clipped).
    fn widest(&mut self) -> f64 {
        const WIDEST: &str = "(() => { let right = document.documentElement.scrollWidth; \
            for (const e of document.querySelectorAll('body *')) { \
              const r = e.getBoundingClientRect(); \
              if (r.width > 0) right = Math.max(right, r.right + window.scrollX); } \
            return Math.ceil(right); })()";
        self.eval(WIDEST).as_f64().expect("a width")
    }

    fn body_text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // The whole group (browser, zygote, renderers), before reaping the leader so that
        // its id cannot have been reused.
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "chromium log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        for _ in 0..10 {
            if fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Why a backend is left out of the data plane, as the daemon reports it.
const UNREACHABLE: &str = "backend 10.66.0.21 is reached through gateway 10.66.0.1";

fn backend_sel(address: &str, inner: &str) -> String {
    format!("[data-backend=\"{address}\"] {inner}")
}

/// The health a person reads on a backend, lower-cased (the page shows it in capitals).
fn health_text(browser: &mut Browser, address: &str) -> String {
    browser
        .text(&backend_sel(address, "[data-field=health]"))
        .unwrap_or_else(|| panic!("no visible health for {address}"))
        .trim()
        .trim_start_matches(['\u{2714}', '\u{2716}', '?'])
        .trim()
        .to_lowercase()
}

/// Everything a desktop user should see, then a refresh.
#[test]
fn console_shows_services_backends_health_drain_errors_and_changes() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(1280, 900, false);
    browser.open(&daemon.url());

    assert_eq!(browser.eval("document.title"), json!("Fulcrum"));
    assert!(
        browser.text("#error-banner").is_none(),
        "no error banner while the API answers"
    );
    let refreshed = browser.text("#refreshed").expect("a refresh line");
    assert!(refreshed.starts_with("Refreshed "), "{refreshed:?}");

    // Services in order, with their address and rates.
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('[data-service]')].map(s => s.dataset.service)"),
        json!(["web", "dns", "web6"])
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=name]")
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=name]")
            .as_deref(),
        Some("dns")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=endpoint]")
            .as_deref(),
        Some("10.66.99.1:80/tcp")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=endpoint]")
            .as_deref(),
        Some("10.66.99.2:53/udp")
    );
    // An IPv6 VIP is bracketed before its port; the forwarding mode and a VIP that does
    // not answer pings are said beside it.
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=endpoint]")
            .as_deref(),
        Some("[2001:db8:100::1]:443/tcp")
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=forwarding]")
            .as_deref(),
        Some("gue")
    );
    assert_eq!(
        browser
            .attr("[data-service=web6]", "data-forwarding")
            .as_deref(),
        Some("gue")
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=echo]")
            .as_deref(),
        Some("no echo")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=forwarding]")
            .as_deref(),
        Some("l2-dsr")
    );
    assert!(
        browser
            .text("[data-service=web] [data-field=echo]")
            .is_none(),
        "a VIP that answers pings has no badge"
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=serving]")
            .as_deref(),
        Some("1 of 1 serving")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=pps]")
            .as_deref(),
        Some("0 pps")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=bps]")
            .as_deref(),
        Some("0 bit/s")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=serving]")
            .as_deref(),
        Some("1 of 3 serving")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=serving]")
            .as_deref(),
        Some("0 of 2 serving"),
        "one is out of the data plane, the other drained and leaving"
    );

    // Each backend: its address and its health in words.
    for (address, health) in [
        ("10.66.0.11", "up"),
        ("10.66.0.12", "down"),
        ("10.66.0.13", "unknown"),
        ("10.66.0.21", "up"),
        ("10.66.0.22", "up"),
        (V6_BACKEND, "up"),
    ] {
        assert_eq!(
            browser
                .text(&backend_sel(address, "[data-field=address]"))
                .as_deref(),
            Some(address)
        );
        assert_eq!(health_text(&mut browser, address), health, "{address}");
        assert_eq!(
            browser
                .attr(&format!("[data-backend=\"{address}\"]"), "data-health")
                .as_deref(),
            Some(health)
        );
    }
    // ... and in colour too: three different badge colours.
    let colours = browser.eval(
        "['up', 'down', 'unknown'].map(h => getComputedStyle(\
         document.querySelector(`[data-field=health][data-health=${h}]`)).backgroundColor)",
    );
    let colours: Vec<&str> = colours
        .as_array()
        .expect("colours")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(colours.len(), 3);
    assert!(
        colours[0] != colours[1] && colours[1] != colours[2] && colours[0] != colours[2],
        "{colours:?}"
    );

    // Drained: marked on that backend and no other.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=drained]"))
            .as_deref(),
        Some("drained")
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('[data-field=drained]').length"),
        json!(1)
    );
    assert_eq!(
        browser
            .attr("[data-backend=\"10.66.0.22\"]", "data-drained")
            .as_deref(),
        Some("true")
    );

    // Weight, rates and new flows of a backend.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.13", "[data-field=weight]"))
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=pps]"))
            .as_deref(),
        Some("1.2 kpps")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=bps]"))
            .as_deref(),
        Some("7.9 Mbit/s")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=new-flows]"))
            .as_deref(),
        Some("4,321")
    );
    // On a desktop the column headers label the numbers.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "td.weight"))
            .as_deref(),
        Some("1")
    );
    let headers = browser
        .text("[data-service=web] thead")
        .expect("column headers");
    assert!(
        headers.contains("Weight") && headers.contains("New flows"),
        "{headers:?}"
    );

    // The last error, where it belongs.
    let error = browser
        .text(&backend_sel("10.66.0.12", "[data-field=last-error]"))
        .expect("error");
    assert_eq!(error, format!("connect refused: GET {LONG_URL}"));
    // Left out of the data plane, and leaving: both said on the backend's row.
    let left_out = browser
        .text(&backend_sel("10.66.0.21", "[data-field=data-plane-error]"))
        .expect("the data plane's reason");
    assert!(left_out.contains(UNREACHABLE), "{left_out:?}");
    assert!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=leaving]"))
            .is_some_and(|t| t == "leaving"),
        "a leaving backend is badged"
    );
    assert!(
        browser
            .text(&backend_sel("10.66.0.12", "[data-check=http]"))
            .expect("check")
            .contains("failing")
    );

    // Recent changes, newest first, with the API's markup shown as text and never run.
    assert_eq!(
        browser.eval("document.querySelectorAll('#events [data-event]').length"),
        json!(3)
    );
    let first = browser
        .text("#events [data-event]:first-child")
        .expect("a change");
    assert!(first.contains("web / 10.66.0.12"), "{first:?}");
    assert!(
        first.contains("became unhealthy: connect refused"),
        "{first:?}"
    );
    assert_eq!(
        browser
            .attr("#events [data-event]:first-child time", "datetime")
            .as_deref(),
        Some("2026-01-02T03:04:05Z")
    );
    let last = browser
        .text("#events [data-event]:last-child [data-field=message]")
        .expect("message");
    assert_eq!(last, HOSTILE);
    assert_eq!(
        browser.eval("document.querySelectorAll('img, b').length"),
        json!(0)
    );
    assert_eq!(browser.eval("document.title"), json!("Fulcrum"));

    // A refused reload is reported, with the API's reason.
    let refused = browser
        .text("#reload-error")
        .expect("the refused reload is shown");
    assert!(
        refused.starts_with("The last reload was refused"),
        "{refused:?}"
    );
    assert!(refused.ends_with(RELOAD_ERROR), "{refused:?}");

    // Counters sit behind a disclosure.
    assert_eq!(
        browser.attr("[data-counter=tx]", "data-counter").as_deref(),
        Some("tx")
    );
    assert!(
        browser.text("[data-counter=tx]").is_none(),
        "counters start folded"
    );
    browser.eval("document.querySelector('#counters-section summary').click()");
    assert_eq!(
        browser.text("[data-counter=tx]").as_deref(),
        Some("123,456")
    );

    // The whole screen, as a person reads it.
    browser.screenshot("desktop");
    assert!(browser.widest() <= 1280.0);
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );
    let screen = browser.body_text();
    for needle in [
        "web",
        "dns",
        "10.66.0.13",
        "UNKNOWN",
        "DOWN",
        "Recent changes",
        "drained",
    ] {
        assert!(
            screen.contains(needle),
            "{needle:?} not on screen:\n{screen}"
        );
    }

    // Live: the next answers (another rate) show up without a reload.
    let before = browser
        .text("[data-service=web] [data-field=pps]")
        .expect("web rate");
    let refreshes: u64 = browser
        .attr("body", "data-refreshes")
        .expect("refreshes")
        .parse()
        .expect("number");
    browser.wait_for(
        "a later answer is shown",
        &format!(
            "Number(document.body.dataset.refreshes) >= {} && \
             document.querySelector('[data-service=web] [data-field=pps]').innerText !== {}",
            refreshes + 2,
            json!(before)
        ),
    );
    assert!(daemon.state.api_requests.load(Ordering::SeqCst) >= 3);

    // The header counts backends, naming only the states that occur (it once printed
    // "null null" when nothing was unknown or drained).
    let totals = "document.querySelector('#totals').textContent";
    assert_eq!(
        browser.eval(totals),
        json!("4 up 1 down 1 unknown 1 drained")
    );
    daemon.state.all_up.store(true, Ordering::SeqCst);
    browser.wait_for(
        "every backend up in the header",
        &format!("{totals}.startsWith('6 up')"),
    );
    assert_eq!(browser.eval(totals), json!("6 up 0 down"));
}

/// On a 390 px phone every backend is a card, and nothing is wider than the screen.
#[test]
fn console_fits_a_phone_without_horizontal_scrolling() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(390, 844, true);
    browser.open(&daemon.url());
    browser.screenshot("phone");

    assert_eq!(
        browser.eval("document.documentElement.clientWidth"),
        json!(390)
    );
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );
    // Measured here too, element by element, so nothing hides by being clipped.
    let widest = browser.widest();
    assert!(
        widest <= 390.0,
        "the page is {widest} px wide on a 390 px screen"
    );

    // Cards, not a table: no column headers, each backend a block as wide as the screen allows.
    assert!(
        browser.text("[data-service=web] thead").is_none(),
        "column headers hidden on a phone"
    );
    assert_eq!(
        browser.eval(
            "getComputedStyle(document.querySelector('[data-backend=\"10.66.0.12\"]')).display"
        ),
        json!("grid")
    );
    // The same facts are readable.
    assert_eq!(health_text(&mut browser, "10.66.0.12"), "down");
    assert_eq!(health_text(&mut browser, "10.66.0.13"), "unknown");
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=drained]"))
            .as_deref(),
        Some("drained")
    );
    // Each number carries its label on a card (on a desktop the column header does).
    let weight = browser
        .text(&backend_sel("10.66.0.13", "td.weight"))
        .expect("weight");
    assert_eq!(
        weight.split_whitespace().collect::<Vec<_>>(),
        ["Weight", "2"]
    );
    let flows = browser
        .text(&backend_sel("10.66.0.13", "td.new-flows"))
        .expect("new flows");
    assert_eq!(
        flows.split_whitespace().collect::<Vec<_>>(),
        ["New", "flows", "4,321"]
    );
    let error = browser
        .text(&backend_sel("10.66.0.12", "[data-field=last-error]"))
        .expect("error");
    assert!(error.starts_with("connect refused"), "{error:?}");
    assert!(
        browser
            .body_text()
            .contains("became unhealthy: connect refused")
    );

    // Other screens, from a small phone to a desktop, and the widths where the layout changes.
    for (width, mobile) in [
        (320, true),
        (768, true),
        (899, true),
        (900, false),
        (1299, false),
        (1300, false),
    ] {
        browser.screen(width, 900, mobile);
        // A desktop's scroll bar takes its width from the page.
        let room = browser.eval("document.documentElement.clientWidth");
        let room = room.as_f64().expect("a width");
        assert!(
            room > f64::from(width) - 20.0 && room <= f64::from(width),
            "{room}"
        );
        let widest = browser.widest();
        assert!(
            widest <= room,
            "the page is {widest} px wide in {room} px on a {width} px screen"
        );
    }
    browser.screen(390, 844, true);

    // The measure is not vacuous: something too wide is caught.
    browser.eval(
        "document.querySelector('[data-service=web]').append(\
         Object.assign(document.createElement('div'), { style: 'width: 800px', textContent: 'x' }))",
    );
    let widest = browser.widest();
    assert!(
        widest > 390.0,
        "an 800 px element was not measured ({widest})"
    );
}

/// When the API stops answering the banner says so and the last data stays; it clears again.
#[test]
fn console_shows_an_error_banner_while_the_api_fails() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(390, 844, true);
    browser.open(&daemon.url());
    assert!(browser.text("#error-banner").is_none());

    daemon.set_mode(Mode::Error);
    let banner = browser.wait_for(
        "the banner reports HTTP 500",
        "(() => { const b = document.getElementById('error-banner'); \
          return b.checkVisibility() && b.innerText.includes('HTTP 500') ? b.innerText : null; })()",
    );
    let banner = banner.as_str().expect("banner text");
    assert!(
        banner.starts_with("Cannot get the status from the Fulcrum API"),
        "{banner:?}"
    );
    assert!(banner.contains("Showing data from"), "{banner:?}");
    browser.screenshot("phone-api-failing");
    assert_eq!(browser.attr("body", "data-state").as_deref(), Some("error"));
    assert!(
        browser
            .text("#refreshed")
            .expect("refresh line")
            .contains("stale")
    );
    // The last known state stays on screen.
    assert_eq!(health_text(&mut browser, "10.66.0.12"), "down");
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );

    daemon.set_mode(Mode::Hangup);
    browser.wait_for(
        "the banner reports a network error",
        "document.getElementById('error-banner').innerText.includes('network error')",
    );

    daemon.set_mode(Mode::Ok);
    browser.wait_for(
        "the banner goes away once the API answers",
        "document.body.dataset.state === 'ok' && \
         !document.getElementById('error-banner').checkVisibility()",
    );
    assert!(browser.text("#error-banner").is_none());
    assert!(
        !browser
            .text("#refreshed")
            .expect("refresh line")
            .contains("stale")
    );

    // Once a reload succeeds the notice about the refused one goes too.
    assert!(browser.text("#reload-error").is_some());
    daemon.state.reload_refused.store(false, Ordering::SeqCst);
    browser.wait_for(
        "the refused-reload notice goes away",
        "!document.getElementById('reload-error').checkVisibility()",
    );
}
