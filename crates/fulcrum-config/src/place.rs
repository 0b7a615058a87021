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
