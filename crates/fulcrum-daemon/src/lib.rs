//! `fulcrum run`: the daemon around the data plane. This crate holds what it shows: the
//! status model and the Prometheus exposition.
pub mod api;
pub mod console;
pub mod metrics;
pub mod status;
