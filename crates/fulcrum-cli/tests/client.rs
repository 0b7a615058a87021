//! `fulcrum status`, `drain`, `undrain` and `reload` as a user runs them: the real binary
//! against a fake API on loopback that answers canned JSON and records what it was asked,
//! and once against the daemon's real API router. No root needed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Command, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");

/// One request the fake API received.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake API answers.
struct Answer {
    status: u16,
    body: String,
    chunked: bool,
}

fn json(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: body.into(),
        chunked: false,
    }
}

/// A fake API on 127.0.0.1: answers every request with `answer` and records it.
struct FakeApi {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApi {
    fn start(answer: impl Fn(&Request) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = read_request(&stream) {
                    recorded.lock().expect("lock").push(request.clone());
                    respond(stream, answer(&request));
                }
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

fn respond(mut stream: TcpStream, answer: Answer) {
    let reason = match answer.status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Whatever",
    };
    let mut text = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n",
        answer.status
    );
    if answer.chunked {
        text.push_str("transfer-encoding: chunked\r\n\r\n");
        for chunk in answer.body.as_bytes().chunks(7) {
            text.push_str(&format!("{:x}\r\n", chunk.len()));
            text.push_str(std::str::from_utf8(chunk).expect("ASCII body"));
            text.push_str("\r\n");
        }
        text.push_str("0\r\n\r\n");
    } else {
        text.push_str(&format!(
            "content-length: {}\r\n\r\n{}",
            answer.body.len(),
            answer.body
        ));
    }
    let _ = stream.write_all(text.as_bytes());
}

/// Runs `fulcrum` with `args` and only the `FULCRUM_*` variables in `env`.
fn fulcrum(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(FULCRUM);
    command
        .args(args)
        .env_remove("FULCRUM_API")
        .env_remove("FULCRUM_TOKEN")
        .env_remove("FULCRUM_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run fulcrum")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Succeeded, with nothing on stderr.
fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "expected success, got {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Failed, and stderr is exactly one line `fulcrum: ...` containing each of `want`.
fn assert_one_line_error(out: &Output, want: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got {:?}; stdout: {}",
        out.status,
        stdout(out)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("fulcrum: "), "{stderr}");
    for want in want {
        assert!(lines[0].contains(want), "'{want}' not in: {stderr}");
    }
    stderr
}

const SERVICES: &str = r#"{
  "services": [
    { "name": "web", "vip": "10.66.99.1", "port": 80, "protocol": "tcp",
      "traffic": { "packets": 9, "bytes": 900, "new_flows": 3,
                   "packets_per_second": 2500.0, "bits_per_second": 20000000.0 },
      "backends": [
        { "address": "10.66.0.11", "weight": 1, "drained": false, "health": "up",
          "last_error": null,
          "checks": [ { "kind": "http", "up": true, "latency_seconds": 0.002, "last_error": null } ],
          "traffic": { "packets": 5, "bytes": 500, "new_flows": 2,
                       "packets_per_second": 1520.0, "bits_per_second": 12300000.0 } },
        { "address": "10.66.0.12", "weight": 2, "drained": true, "health": "down",
          "last_error": "http: connect to 10.66.0.12:80: Connection refused (os error 111), and then a long explanation that cannot fit",
          "checks": [],
          "traffic": { "packets": 0, "bytes": 0, "new_flows": 0,
                       "packets_per_second": 0.0, "bits_per_second": 0.0 } },
        { "address": "10.66.0.13", "weight": 1, "drained": false, "health": "unknown",
          "last_error": null, "checks": [],
          "traffic": { "packets": 0, "bytes": 0, "new_flows": 0,
                       "packets_per_second": 0.0, "bits_per_second": 0.0 } }
      ] }
  ],
  "counters": [["tx", 9], ["pass_not_vip", 4]],
  "events": [ { "time": "2024-01-01T00:00:00Z", "service": "web", "backend": "10.66.0.12",
                "message": "down" } ],
  "reload_error": null
}"#;

#[test]
fn status_prints_a_table_of_services_and_backends() {
    let api = FakeApi::start(|_| json(200, SERVICES));
    let out = fulcrum(&["status", "--api", &api.url], &[]);
    assert_success(&out);
    // A line per service and under it one per backend; the last error wrapped to fit.
    let want = "\
SERVICE/BACKEND  WEIGHT  HEALTH   DRAINED   PPS  BIT RATE  LAST ERROR
web  10.66.99.1:80/tcp                     2.5k   20 Mb/s
  10.66.0.11          1  up       no       1.5k   12 Mb/s
  10.66.0.12          2  down     yes         0     0 b/s  http: connect to 10.66.0.12:80:
                                                           Connection refused (os error 111), and
                                                           then a long explanation that cannot fit
  10.66.0.13          1  unknown  no          0     0 b/s
";
    assert_eq!(stdout(&out), want);
    assert!(want.lines().all(|l| l.chars().count() <= 100));
    let requests = api.requests();
    // The services, the BGP peers (which this stand-in does not have), flow sharing
    // (answered with no `enabled`: no lines), then top talkers (no talkers: no lines).
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/v1/services");
    assert_eq!(requests[1].path, "/api/v1/bgp");
    assert_eq!(requests[2].path, "/api/v1/flow-sharing");
    assert_eq!(requests[3].path, "/api/v1/top-talkers");
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[0].header("connection"), Some("close"));

    let out = fulcrum(&["status", "--api", &api.url, "--wide"], &[]);
    assert_success(&out);
    assert!(stdout(&out).contains(
        "  0 b/s  http: connect to 10.66.0.12:80: Connection refused (os error 111), \
         and then a long explanation that cannot fit\n"
    ));
}

#[test]
fn status_reads_a_chunked_answer_from_the_api_in_fulcrum_api() {
    let body = SERVICES.replace(
        r#""reload_error": null"#,
        r#""reload_error": "fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address""#,
    );
    let api = FakeApi::start(move |_| Answer {
        status: 200,
        body: body.clone(),
        chunked: true,
    });
    let out = fulcrum(&["status"], &[("FULCRUM_API", &api.url)]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("10.66.0.13"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("last reload refused")
                && l.contains("services[0].vip: 'x' is not an IPv4 address")),
        "{text}"
    );
    assert_eq!(
        api.requests().len(),
        4,
        "services, then BGP peers, flow sharing and top talkers"
    );
}

#[test]
fn status_says_when_the_answer_is_not_the_fulcrum_api() {
    let api = FakeApi::start(|_| json(200, "<html>hello</html>"));
    let out = fulcrum(&["status", "--api", &api.url], &[]);
    assert_one_line_error(&out, &[&api.url, "--api"]);
}

#[test]
fn drain_posts_to_the_backend_with_the_token_from_the_flag() {
    let api = FakeApi::start(|_| json(200, r#"{"ok":true}"#));
    // The flag wins over the environment.
    let out = fulcrum(
        &[
            "drain",
            "web",
            "10.66.0.11",
            "--api",
            &api.url,
            "--token",
            "s3cret",
        ],
        &[("FULCRUM_TOKEN", "not-this-one")],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("drained 10.66.0.11"),
        "{}",
        stdout(&out)
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].path,
        "/api/v1/services/web/backends/10.66.0.11/drain"
    );
    assert_eq!(requests[0].header("authorization"), Some("Bearer s3cret"));
}

#[test]
fn drain_and_undrain_take_the_token_from_fulcrum_token() {
    let api = FakeApi::start(|_| json(200, r#"{"ok":true}"#));
    let env = [
        ("FULCRUM_TOKEN", "s3cret"),
        ("FULCRUM_API", api.url.as_str()),
    ];
    assert_success(&fulcrum(&["drain", "web", "10.66.0.11"], &env));
    let out = fulcrum(&["undrain", "web", "10.66.0.11"], &env);
    assert_success(&out);
    assert!(
        stdout(&out).contains("undrained 10.66.0.11"),
        "{}",
        stdout(&out)
    );
    let requests = api.requests();
    let seen: Vec<(&str, &str, Option<&str>)> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.header("authorization"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "POST",
                "/api/v1/services/web/backends/10.66.0.11/drain",
                Some("Bearer s3cret")
            ),
            (
                "POST",
                "/api/v1/services/web/backends/10.66.0.11/undrain",
                Some("Bearer s3cret")
            ),
        ]
    );
}

#[test]
fn drain_takes_the_token_from_a_file_and_encodes_the_path() {
    let api = FakeApi::start(|_| json(200, r#"{"ok":true}"#));
    let path = std::env::temp_dir().join(format!("fulcrum-cli-token-{}", std::process::id()));
    std::fs::write(&path, "s3cret\n").expect("write token file");
    let out = fulcrum(
        &[
            "drain",
            "web front",
            "10.66.0.11",
            "--api",
            &api.url,
            "--token-file",
            path.to_str().expect("UTF-8 path"),
        ],
        &[],
    );
    std::fs::remove_file(&path).ok();
    assert_success(&out);
    let requests = api.requests();
    assert_eq!(
        requests[0].path,
        "/api/v1/services/web%20front/backends/10.66.0.11/drain"
    );
    assert_eq!(requests[0].header("authorization"), Some("Bearer s3cret"));
}

#[test]
fn a_401_says_a_token_is_needed() {
    let api = FakeApi::start(|_| {
        json(
            401,
            r#"{"error":"a valid 'Authorization: Bearer <token>' header is required"}"#,
        )
    });
    let out = fulcrum(&["drain", "web", "10.66.0.11", "--api", &api.url], &[]);
    assert_one_line_error(&out, &["needs a token", "--token", "FULCRUM_TOKEN"]);
    assert_eq!(api.requests()[0].header("authorization"), None);

    let out = fulcrum(
        &["reload", "--api", &api.url],
        &[("FULCRUM_TOKEN", "wrong")],
    );
    assert_one_line_error(&out, &["refused the token", "api.token_file"]);
}

#[test]
fn a_404_gives_the_servers_message() {
    let api = FakeApi::start(|_| json(404, r#"{"error":"no service 'api'"}"#));
    let out = fulcrum(
        &[
            "undrain",
            "api",
            "10.66.0.11",
            "--api",
            &api.url,
            "--token",
            "t",
        ],
        &[],
    );
    assert_one_line_error(&out, &["undrain api 10.66.0.11: no service 'api'"]);
}

#[test]
fn an_unreachable_api_is_one_line_naming_the_url() {
    // A port nothing listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["status", "--api", url.as_str()][..],
        &["reload", "--api", url.as_str(), "--token", "t"],
    ] {
        let out = fulcrum(args, &[]);
        assert_one_line_error(&out, &["cannot reach", &url, "--api"]);
    }
    let out = fulcrum(&["status", "--api", "https://127.0.0.1:9180"], &[]);
    assert_one_line_error(&out, &["https is not supported"]);
}

#[test]
fn reload_prints_the_servers_error_when_refused() {
    let api = FakeApi::start(|_| {
        json(
            422,
            r#"{"error":"fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address\nfulcrum.yaml:9:7: services[0].bogus: unknown field"}"#,
        )
    });
    let out = fulcrum(&["reload", "--api", &api.url, "--token", "s3cret"], &[]);
    assert_one_line_error(
        &out,
        &[
            "reload refused",
            "fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address; \
             fulcrum.yaml:9:7: services[0].bogus: unknown field",
        ],
    );
    let requests = api.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/api/v1/reload");
    assert_eq!(requests[0].header("authorization"), Some("Bearer s3cret"));

    let api = FakeApi::start(|_| json(200, r#"{"ok":true}"#));
    let out = fulcrum(&["reload", "--api", &api.url, "--token", "s3cret"], &[]);
    assert_success(&out);
    assert_eq!(stdout(&out), "reloaded the configuration\n");
}

/// The daemon's own router over a stand-in, so that the CLI and the API cannot drift apart.
mod real_api {
    use fulcrum_daemon::{
        api::{Control, ControlError, Snapshot, router},
        status::{BackendStatus, Health, ServiceStatus, Status, TrafficStatus},
    };

    use super::*;

    #[derive(Clone, Default)]
    struct StandIn {
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Control for StandIn {
        fn snapshot(&self) -> Snapshot {
            let backend = |last: u8, health, drained| BackendStatus {
                address: Ipv4Addr::new(10, 66, 0, last).into(),
                weight: 1,
                drained,
                health,
                last_error: (health == Health::Down).then(|| "tcp: timed out".to_string()),
                checks: vec![],
                traffic: TrafficStatus::default(),
                data_plane_error: None,
                leaving: false,
            };
            Snapshot {
                status: Status {
                    services: vec![ServiceStatus {
                        name: "web".into(),
                        vip: Ipv4Addr::new(10, 66, 99, 1).into(),
                        port: 80,
                        protocol: "tcp".into(),
                        forwarding: "l2-dsr".into(),
                        icmp_echo: true,
                        traffic: TrafficStatus::default(),
                        backends: vec![
                            backend(11, Health::Up, false),
                            backend(12, Health::Down, true),
                        ],
                    }],
                    counters: vec![("tx".into(), 1)],
                    reloading: false,
                    health_local_failures: 0,
                },
                events: vec![],
                reload_error: None,
                config: None,
            }
        }

        fn set_drain(
            &self,
            service: &str,
            backend: IpAddr,
            drained: bool,
        ) -> Result<(), ControlError> {
            if service != "web" {
                return Err(ControlError::NotFound(format!("no service '{service}'")));
            }
            self.calls
                .lock()
                .expect("lock")
                .push(format!("{service} {backend} {drained}"));
            Ok(())
        }

        fn reload(&self) -> Result<(), ControlError> {
            Err(ControlError::Rejected("fulcrum.yaml:1:1: bad".into()))
        }
    }

    fn serve(control: StandIn) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, router(control, Some("s3cret".into())))
                    .await
                    .expect("serve");
            });
        });
        addr
    }

    #[test]
    fn every_command_works_against_the_daemons_router() {
        let control = StandIn::default();
        let url = format!("http://{}", serve(control.clone()));

        let out = fulcrum(&["status", "--api", &url], &[]);
        assert_success(&out);
        let text = stdout(&out);
        assert!(text.contains("web"), "{text}");
        assert!(text.contains("10.66.99.1:80/tcp"), "{text}");
        assert!(text.contains("tcp: timed out"), "{text}");

        let env = [("FULCRUM_API", url.as_str())];
        let out = fulcrum(&["drain", "web", "10.66.0.12"], &env);
        assert_one_line_error(&out, &["needs a token"]);
        let env = [("FULCRUM_API", url.as_str()), ("FULCRUM_TOKEN", "s3cret")];
        assert_success(&fulcrum(&["drain", "web", "10.66.0.12"], &env));
        assert_success(&fulcrum(&["undrain", "web", "10.66.0.12"], &env));
        assert_eq!(
            *control.calls.lock().expect("lock"),
            ["web 10.66.0.12 true", "web 10.66.0.12 false"]
        );
        let out = fulcrum(&["drain", "api", "10.66.0.12"], &env);
        assert_one_line_error(&out, &["no service 'api'"]);
        let out = fulcrum(&["drain", "web", "10.66.0.300"], &env);
        assert_one_line_error(&out, &["'10.66.0.300' is not an IP address"]);
        let out = fulcrum(&["reload"], &env);
        assert_one_line_error(&out, &["reload refused", "fulcrum.yaml:1:1: bad"]);
    }
}
