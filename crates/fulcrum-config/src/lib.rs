//! The configuration file of `fulcrum run`: one YAML file, parsed into a typed model that has
//! been fully checked before anything is applied, and compared with the running one on reload.
//!
//! An invalid file yields no configuration at all, only [`Problem`]s, each one line naming
//! the file, line, column and field and saying what would be valid:
//!
//! ```text
//! /etc/fulcrum.yaml:14:22: services[0].health[0].timeout: 2s must be shorter than interval (1s)
//! ```
//!
//! `examples/fulcrum.yaml` at the repository root documents every field.
//!
//! ```
//! let config = fulcrum_config::parse(
//!     "interfaces: [eth0]\nservices:\n  - name: web\n    vip: 10.66.99.1\n    port: 80\n    \
//!      backends:\n      - address: 10.66.0.11\n",
//!     "fulcrum.yaml",
//! )
//! .expect("valid");
//! assert_eq!(config.services[0].backends[0].weight, 1);
//! ```
#![warn(missing_docs)]

mod diff;
mod error;
mod flow_sharing;
mod flow_table;
mod model;
mod place;
mod top_talkers;
mod validate;

#[cfg(test)]
mod flow_sharing_tests;
#[cfg(test)]
mod flow_table_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

use serde_saphyr::Spanned;

use crate::validate::RawConfig;

pub use diff::{ConfigDiff, DrainChange, Reweight, ServiceDiff, diff};
pub use error::{ConfigError, Position, Problem};
pub use flow_sharing::{FlowMulticast, FlowSharing};
pub use flow_table::FlowTable;
pub use model::{
    Announce, Announcement, Api, Backend, Bgp, BgpPeer, CheckKind, Config, DnsCheck, DnsType,
    Forwarding, HealthCheck, HealthRule, HttpCheck, Protocol, Rcode, Scheduler, Service, Tunnel,
    TunnelSource, XdpMode,
};
pub use place::Places;
pub use top_talkers::TopTalkers;

/// Reads and checks the configuration file at `path`; problems name the file as given. A
/// file that is not UTF-8 is a [`Problem`] with its position, like any other, so that start
/// and reload report it alike.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse(text, &origin),
        Err(e) => Err(ConfigError::Invalid(vec![error::not_utf8(
            &bytes, &e, &origin,
        )])),
    }
}

/// Checks configuration `text`; `origin` names it in problems (the file name, or something
/// like `<reload request>` for text that came from elsewhere).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // Only `true`/`false` are booleans: YAML 1.1's `yes`, `no`, `on` and `off` surprise.
    let options = serde_saphyr::options! { strict_booleans: true, with_snippet: false };
    let mut path = None;
    let raw = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, Spanned<RawConfig>>(de).map_err(|e| {
            path = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|e| ConfigError::Invalid(vec![error::from_yaml(&e, path.as_ref(), text, origin)]))?;
    validate::validate(raw, origin).map_err(ConfigError::Invalid)
}
