//! Adoption: a daemon that starts on pinned state keeps it. Services still configured stay
//! (others are removed); destinations that were in the table and are still configured
//! count as healthy until their own checks reach a verdict, so a restart never empties a
//! VIP while checks warm up; drain state carries over.

use std::collections::{HashMap, HashSet};

use fulcrum::ServiceId;
use tracing::{error, info};

use crate::{daemon::chain, owner::Owner, targets};

impl Owner {
    /// Reconciles the adopted services with the configuration; returns the ids kept.
    pub(crate) fn adopt(&mut self) -> Result<HashSet<ServiceId>, fulcrum::BalancerError> {
        let mut kept = HashSet::new();
        for adopted in self.lb.services()? {
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
            let configured: HashMap<_, _> =
                service.backends.iter().map(|b| (b.address, b)).collect();
            for d in &adopted.destinations {
                let address = d.destination.address;
                let Some(b) = configured.get(&address) else {
                    continue;
                };
                let key = (service.name.clone(), address);
                self.assumed.insert(key.clone());
                if d.drained && !b.drain {
                    self.drained_by_api.insert(key);
                }
            }
            info!(service = %service.name, destinations = adopted.destinations.len(), "adopted");
            kept.insert(id);
        }
        Ok(kept)
    }

    /// Backends assumed healthy since adoption whose checks have now reached a verdict
    /// follow that verdict from here on.
    pub(crate) fn settle_assumed(&mut self) {
        if self.assumed.is_empty() {
            return;
        }
        let mut changed = HashSet::new();
        for snap in self.checker.snapshot() {
            let std::net::IpAddr::V4(address) = snap.backend.address else {
                continue;
            };
            let key = (snap.backend.service, address);
            let decided = snap
                .checks
                .iter()
                .any(|c| c.status != fulcrum_health::CheckStatus::Unknown);
            if decided && self.assumed.remove(&key) {
                self.healthy.insert(key.clone(), snap.healthy);
                changed.insert(key.0);
            }
        }
        for service in changed {
            if let Err(e) = self.sync(&service) {
                error!(%service, error = %chain(&e), "applying a health verdict failed");
            }
        }
    }
}
