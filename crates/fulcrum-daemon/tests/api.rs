//! The API as a script or the CLI uses it: real HTTP on loopback, over a stand-in for the
//! daemon that records what it was asked to do.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{Arc, Mutex},
};

use fulcrum_daemon::api::{Control, ControlError, Snapshot, router};
use fulcrum_lab::traffic::http_call;

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Control for Recorder {
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }

    fn set_drain(
        &self,
        service: &str,
        backend: Ipv4Addr,
        drained: bool,
    ) -> Result<(), ControlError> {
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
            axum::serve(listener, router(control, Some("s3cret".into())))
                .await
                .expect("serve");
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
        (code, body.contains("'10.66.0.x' is not an IPv4 address")),
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
