//! Where services and backends are written in the file, so that a problem found only while
//! applying a valid configuration (no route to a backend, a VIP that is this host's own)
//! still names file, line, column and field.

use crate::{
    error::{Position, Problem},
    model::Config,
};

/// Positions of the fields that applying can find fault with, by service and backend index.
/// Where a value is written is not part of what it means, so two `Places` always compare
/// equal: moving a service in the file changes nothing.
#[derive(Clone, Debug, Default)]
pub struct Places {
    pub(crate) origin: String,
    pub(crate) services: Vec<ServicePlaces>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ServicePlaces {
    pub(crate) vip: Option<Position>,
    pub(crate) backends: Vec<Option<Position>>,
}

impl PartialEq for Places {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Places {}

impl Config {
    /// A problem with `services[service].vip`, placed where the file says it.
    pub fn vip_problem(&self, service: usize, message: String) -> Problem {
        Problem {
            origin: self.places.origin.clone(),
            position: self.places.services.get(service).and_then(|s| s.vip),
            path: format!("services[{service}].vip"),
            message,
        }
    }

    /// A problem with `services[service].backends[backend].address`, placed where the file
    /// says it.
    pub fn backend_problem(&self, service: usize, backend: usize, message: String) -> Problem {
        Problem {
            origin: self.places.origin.clone(),
            position: (self.places.services.get(service))
                .and_then(|s| s.backends.get(backend).copied().flatten()),
            path: format!("services[{service}].backends[{backend}].address"),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    const TEXT: &str = "\
instance: edge-1
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.1
    allow_local_vip: true
    drain_period: 30s
    backends:
      - address: 10.0.1.1
      - {address: 10.0.1.2, weight: 2}
";

    #[test]
    fn problems_found_while_applying_name_file_line_and_field() {
        let config = crate::parse(TEXT, "f.yaml").expect("valid");
        assert_eq!(
            config.vip_problem(0, "is this host's".into()).to_string(),
            "f.yaml:5:10: services[0].vip: is this host's"
        );
        assert_eq!(
            config.backend_problem(0, 1, "no route".into()).to_string(),
            "f.yaml:10:19: services[0].backends[1].address: no route"
        );
        let moved = crate::parse(&format!("\n\n{TEXT}"), "g.yaml").expect("valid");
        assert_eq!(
            config, moved,
            "where a value is written is not what it means"
        );
    }

    #[test]
    fn instance_allow_local_vip_and_drain_period_are_read_and_checked() {
        let config = crate::parse(TEXT, "f.yaml").expect("valid");
        assert_eq!(config.instance, "edge-1");
        assert!(config.services[0].allow_local_vip);
        assert_eq!(config.services[0].drain_period, Duration::from_secs(30));
        let bad = TEXT.replace("edge-1", "Edge/1").replace("30s", "soon");
        let problems = crate::parse(&bad, "f.yaml")
            .expect_err("invalid")
            .to_string();
        assert!(
            problems.starts_with("f.yaml:1:11: instance: 'Edge/1' is not an instance name"),
            "{problems}"
        );
        assert!(
            problems.contains("f.yaml:7:19: services[0].drain_period: 'soon' is not a duration"),
            "{problems}"
        );
        let defaults = crate::parse(
            "interfaces: [eth0]\nservices:\n  - {name: a, vip: 10.0.0.1, backends: []}\n",
            "f.yaml",
        )
        .expect("valid");
        assert_eq!(defaults.instance, "default");
        assert!(!defaults.services[0].allow_local_vip);
        assert_eq!(defaults.services[0].drain_period, Duration::ZERO);
    }
}
