//! `fulcrum run`: the daemon around the data plane: configuration, health checks, the
//! REST API, Prometheus metrics and the web console.
mod adopt;
pub mod api;
pub mod bgp;
pub mod console;
pub mod daemon;
pub mod flow_metrics;
mod flow_owner;
pub mod flow_sharing;
mod handle;
mod host;
pub mod http;
pub mod metrics;
mod owner;
mod reload;
pub mod status;
pub mod talkers;
mod targets;
pub mod token;
mod view;

pub use daemon::{Shutdown, serve};
pub use handle::DaemonHandle;
