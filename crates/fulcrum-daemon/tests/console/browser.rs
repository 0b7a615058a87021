//! Headless Chromium driven over the DevTools protocol: launch, commands, page queries.

use std::{
    fs,
    net::{Ipv4Addr, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long any one wait in these tests may take; the page refreshes every second.
const PATIENCE: Duration = Duration::from_secs(30);

/// Headless Chromium in its own process group and profile, driven over the DevTools protocol
/// on loopback; killed, group and all, and its profile removed on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
}

impl Browser {
    pub fn launch() -> Self {
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
    pub fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub fn eval(&mut self, expression: &str) -> Value {
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
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
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
    pub fn screen(&mut self, width: u32, height: u32, mobile: bool) {
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
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            "the console renders the API's answer",
            "document.body && document.body.dataset.state === 'ok' && \
             Number(document.body.dataset.refreshes) >= 1",
        );
    }

    /// What a person reads on the screen in the element `selector` (rendered text: nothing
    /// hidden, CSS capitalisation applied), or null when there is no such visible element.
    pub fn text(&mut self, selector: &str) -> Option<String> {
        let selector = serde_json::to_string(selector).expect("selector");
        let value = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); \
             return e && e.checkVisibility() ? e.innerText : null; }})()"
        ));
        value.as_str().map(str::to_string)
    }

    pub fn attr(&mut self, selector: &str, name: &str) -> Option<String> {
        let (selector, name) = (json!(selector), json!(name));
        self.eval(&format!(
            "document.querySelector({selector})?.getAttribute({name}) ?? null"
        ))
        .as_str()
        .map(str::to_string)
    }

    /// With `FULCRUM_CONSOLE_SCREENSHOTS=DIR`, saves what the screen shows as `DIR/NAME.png`
    /// (for a person reviewing the console; the assertions never look at it).
    pub fn screenshot(&mut self, name: &str) {
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
    pub fn widest(&mut self) -> f64 {
        const WIDEST: &str = "(() => { let right = document.documentElement.scrollWidth; \
            for (const e of document.querySelectorAll('body *')) { \
              const r = e.getBoundingClientRect(); \
              if (r.width > 0) right = Math.max(right, r.right + window.scrollX); } \
            return Math.ceil(right); })()";
        self.eval(WIDEST).as_f64().expect("a width")
    }

    pub fn body_text(&mut self) -> String {
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
