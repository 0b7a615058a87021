//! The REST API, `/metrics` and the console, over whatever controls the balancer.
//!
//! Reads are open; mutating calls need `Authorization: Bearer <token>` and get 401 (with
//! `WWW-Authenticate: Bearer realm="fulcrum"`) and change nothing without it.

use std::{net::IpAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;

use crate::{metrics, status::Status};

/// A change the daemon made or saw, for the console's "recent changes".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    pub service: String,
    pub backend: Option<IpAddr>,
    pub message: String,
}

/// What `GET /api/v1/services` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub status: Status,
    /// Newest first.
    pub events: Vec<Event>,
    /// Why the last reload was refused, while the running configuration stays.
    pub reload_error: Option<String>,
    /// The configuration in force, for readers that act on it (the BGP task).
    #[serde(skip)]
    pub config: Option<Arc<fulcrum_config::Config>>,
}

/// Why a control call failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such service or backend (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be applied, e.g. an invalid configuration (422).
    #[error("{0}")]
    Rejected(String),
    /// The data plane refused (500).
    #[error("{0}")]
    Internal(String),
}

/// What the API drives: the daemon, or a stand-in in tests.
pub trait Control: Send + Sync + 'static {
    /// The current state, events included.
    fn snapshot(&self) -> Snapshot;
    /// Drains (`true`) or undrains a backend of a service, named by its configured name or
    /// by its id (`10.0.0.1:80/tcp`, `[2001:db8::1]:80/tcp`).
    fn set_drain(&self, service: &str, backend: IpAddr, drained: bool) -> Result<(), ControlError>;
    /// Reads the configuration file again and applies the difference.
    fn reload(&self) -> Result<(), ControlError>;
    /// Flow sharing's status, read from its own watches; `None` where there is none (a
    /// stand-in control in tests).
    fn flow_sharing(&self) -> Option<crate::flow_sharing::FlowSharingStatus> {
        None
    }
    /// The BGP speaker's peers and routes; empty when BGP is not configured.
    fn bgp(&self) -> crate::bgp::BgpStatus {
        crate::bgp::BgpStatus::default()
    }
    /// The busiest client prefixes per service; empty (sample 0) where there are none.
    fn top_talkers(&self) -> crate::talkers::TopTalkersStatus {
        crate::talkers::TopTalkersStatus::default()
    }
}

struct Shared<C> {
    control: C,
    token: Option<TokenDigest>,
}

/// The configured token, kept only as its SHA-256: comparing fixed-size digests takes the
/// same time whatever the token's length, so a client learns nothing about it.
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// Constant time in the digests; hashing `given` depends only on what the client sent.
    fn matches(&self, given: &str) -> bool {
        let given = Self::of(given.as_bytes());
        self.0
            .iter()
            .zip(given.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The router. With no token configured, mutating calls are refused (401): an open
/// drain endpoint is not a default anyone wants.
pub fn router<C: Control>(control: C, token: Option<String>) -> Router {
    let token = token.map(|t| TokenDigest::of(t.as_bytes()));
    let shared = Arc::new(Shared { control, token });
    Router::new()
        .route("/", get(console))
        .route("/metrics", get(metrics_text::<C>))
        .route("/api/v1/services", get(services::<C>))
        .route(
            "/api/v1/services/{name}/backends/{address}/drain",
            post(drain::<C>),
        )
        .route(
            "/api/v1/services/{name}/backends/{address}/undrain",
            post(undrain::<C>),
        )
        .route("/api/v1/reload", post(reload::<C>))
        .route("/api/v1/flow-sharing", get(flow_sharing::<C>))
        .route("/api/v1/bgp", get(bgp::<C>))
        .route("/api/v1/top-talkers", get(top_talkers::<C>))
        .with_state(shared)
}

async fn console() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        crate::console::CONSOLE_HTML,
    )
        .into_response()
}

async fn metrics_text<C: Control>(State(shared): State<Arc<Shared<C>>>) -> Response {
    let mut text = metrics::render(&shared.control.snapshot().status);
    if let Some(flows) = shared.control.flow_sharing() {
        text.push_str(&crate::flow_metrics::render(&flows));
    }
    text.push_str(&metrics::render_bgp(&shared.control.bgp()));
    text.push_str(&crate::talkers::render(&shared.control.top_talkers()));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn flow_sharing<C: Control>(State(shared): State<Arc<Shared<C>>>) -> Response {
    match shared.control.flow_sharing() {
        Some(status) => Json(status).into_response(),
        None => error(StatusCode::NOT_FOUND, "no flow sharing here".into()),
    }
}

async fn services<C: Control>(State(shared): State<Arc<Shared<C>>>) -> Json<Snapshot> {
    Json(shared.control.snapshot())
}

async fn bgp<C: Control>(State(shared): State<Arc<Shared<C>>>) -> Json<crate::bgp::BgpStatus> {
    Json(shared.control.bgp())
}

async fn top_talkers<C: Control>(
    State(shared): State<Arc<Shared<C>>>,
) -> Json<crate::talkers::TopTalkersStatus> {
    Json(shared.control.top_talkers())
}

async fn drain<C: Control>(
    State(shared): State<Arc<Shared<C>>>,
    headers: HeaderMap,
    Path((name, address)): Path<(String, String)>,
) -> Response {
    set_drain(&shared, &headers, &name, &address, true)
}

async fn undrain<C: Control>(
    State(shared): State<Arc<Shared<C>>>,
    headers: HeaderMap,
    Path((name, address)): Path<(String, String)>,
) -> Response {
    set_drain(&shared, &headers, &name, &address, false)
}

fn set_drain<C: Control>(
    shared: &Shared<C>,
    headers: &HeaderMap,
    name: &str,
    address: &str,
    drained: bool,
) -> Response {
    if let Some(denied) = refuse_without_token(shared, headers) {
        return denied;
    }
    // An IPv6 backend may come bracketed, as it is shown beside a port.
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let Ok(backend) = bare.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'{address}' is not an IP address"),
        );
    };
    match shared.control.set_drain(name, backend, drained) {
        Ok(()) => ok(),
        Err(e) => control_error(e),
    }
}

async fn reload<C: Control>(State(shared): State<Arc<Shared<C>>>, headers: HeaderMap) -> Response {
    if let Some(denied) = refuse_without_token(&shared, &headers) {
        return denied;
    }
    match shared.control.reload() {
        Ok(()) => ok(),
        Err(e) => control_error(e),
    }
}

/// The 401 answer, unless the request carries the configured token.
fn refuse_without_token<C>(shared: &Shared<C>, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match (&shared.token, given) {
        (Some(want), Some(given)) if want.matches(given) => None,
        _ => {
            let mut denied = error(
                StatusCode::UNAUTHORIZED,
                "a valid 'Authorization: Bearer <token>' header is required".into(),
            );
            denied.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fulcrum\""),
            );
            Some(denied)
        }
    }
}

/// The credentials of a `Bearer` authorization; the scheme is case-insensitive (RFC 9110
/// section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

fn ok() -> Response {
    Json(serde_json::json!({ "ok": true })).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn control_error(e: ControlError) -> Response {
    let status = match e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}
