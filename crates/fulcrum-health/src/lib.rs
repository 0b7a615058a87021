//! Health checking for Fulcrum's backends.
//!
//! Three layers, so that the rules can be tested without sockets and the I/O without rules:
//!
//! * [`state`]: pure rise/fall counting per check and a verdict per backend combining its
//!   checks with a [`Rule`]; results in, [`Transition`]s out.
//! * [`probe`](mod@probe): one `tcp`, `http`, `https` or `dns` probe, bounded by a timeout, returning the
//!   latency or a short [`ProbeError`] reason.
//! * [`Checker`]: runs every check on tokio at its interval, once for all the backends that
//!   have identical checks, feeds the state, sends [`HealthEvent`]s, serves
//!   [`snapshot`](Checker::snapshot)s, and takes a new set of targets without losing the state
//!   of checks that did not change. Probes that fail for a local reason
//!   ([`ProbeError::is_local`]) are counted but never held against a backend.
//!
//! The check types ([`CheckSpec`] and friends) are plain data: the configuration layer
//! converts into them and may call [`CheckSpec::validate`] to report errors early.
#![warn(missing_docs)]

mod checker;
pub mod probe;
mod spec;
pub mod state;

pub use checker::{
    BackendId, BackendSnapshot, CheckSnapshot, Checker, CheckerConfig, CheckerError, HealthEvent,
    Target,
};
pub use probe::{ProbeError, Via, probe, probe_via};
pub use spec::{
    BODY_LIMIT, CheckSpec, DnsCheck, HttpCheck, Probe, QueryType, Rcode, Rule, SpecError,
};
pub use state::{BackendState, CheckState, CheckStatus, Transition};
