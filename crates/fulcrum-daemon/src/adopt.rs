//! Adoption: a daemon that starts on pinned state keeps it. Services still configured stay
//! (others are removed); destinations that were in the table and are still configured
//! start healthy in the checker, so a restart never empties a VIP while checks warm up,
//! and only `fall` failures in a row take them out; drain state carries over.

use std::collections::{HashMap, HashSet};

use fulcrum::{ServiceId, ServiceInfo};
use fulcrum_config::Config;
use fulcrum_health::BackendId;
use tracing::info;

use crate::{
    owner::Owner,
    targets::{self, service_id},
};

/// The configured backends an adopted table already serves.
pub(crate) fn serving(adopted: &[ServiceInfo], config: &Config) -> HashSet<BackendId> {
    let by_id: HashMap<ServiceId, &fulcrum_config::Service> =
        config.services.iter().map(|s| (service_id(s), s)).collect();
    let mut out = HashSet::new();
    for adopted in adopted {
        let Some(service) = by_id.get(&adopted.service.id) else {
            continue;
        };
        for d in &adopted.destinations {
            let address = d.destination.address;
            if service.backends.iter().any(|b| b.address == address) {
                out.insert(BackendId {
                    service: service.name.clone(),
                    address,
                });
            }
        }
    }
    out
}

impl Owner {
    /// Reconciles the adopted services with the configuration; returns the ids kept.
    pub(crate) fn adopt(
        &mut self,
        adopted: Vec<ServiceInfo>,
    ) -> Result<HashSet<ServiceId>, fulcrum::BalancerError> {
        let mut kept = HashSet::new();
        for adopted in adopted {
            let id = adopted.service.id;
            let Some(service) = self.by_id.get(&id).and_then(|n| self.service(n)).cloned() else {
                self.lb.remove_service(&id)?;
                info!(service = %id, "removed an adopted service that is no longer configured");
                continue;
            };
            let wanted = targets::service(&service);
            if wanted != adopted.service {
                self.lb.update_service(wanted)?;
            }
            for d in adopted.destinations.iter().filter(|d| d.drained) {
                let address = d.destination.address;
                let configured_drain = service
                    .backends
                    .iter()
                    .find(|b| b.address == address)
                    .map(|b| b.drain);
                // A drain the configuration does not explain came from the API: keep it.
                if configured_drain == Some(false) {
                    self.drained_by_api.insert((service.name.clone(), address));
                }
            }
            info!(service = %service.name, destinations = adopted.destinations.len(), "adopted");
            kept.insert(id);
        }
        Ok(kept)
    }
}
