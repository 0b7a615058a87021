//! `fulcrum run`: the daemon around the data plane: configuration, health checks, the
//! REST API, Prometheus metrics and the web console.
pub mod api;
pub mod console;
pub mod daemon;
pub mod http;
pub mod metrics;
pub mod status;
pub mod token;
