//! The owner's state as the [`Status`] readers see: configuration, health, drain, data
//! plane reach and counters joined by key, in one pass over the backends.

use std::{collections::HashMap, net::IpAddr};

use fulcrum::{DestinationInfo, ServiceId, ServiceInfo};
use fulcrum_health::BackendSnapshot;

use crate::{
    owner::Owner,
    status::{self, BackendStatus, CheckStatus, Health, ServiceStatus, Status},
    targets::service_id,
};

impl Owner {
    pub(crate) fn status(&self) -> Status {
        let plane: HashMap<ServiceId, ServiceInfo> = self
            .lb
            .services()
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.service.id, s))
            .collect();
        let snapshots = self.checker.snapshot();
        let checks: HashMap<(&str, IpAddr), &BackendSnapshot> = snapshots
            .iter()
            .map(|c| ((c.backend.service.as_str(), c.backend.address), c))
            .collect();
        let services = self
            .config
            .services
            .iter()
            .map(|service| {
                let info = plane.get(&service_id(service));
                let in_plane: HashMap<IpAddr, &DestinationInfo> = info
                    .map(|i| {
                        (i.destinations.iter())
                            .map(|d| (d.destination.address, d))
                            .collect()
                    })
                    .unwrap_or_default();
                let name = service.name.as_str();
                let unresolved = self.unresolved.get(name);
                let mut backends: Vec<BackendStatus> = service
                    .backends
                    .iter()
                    .map(|b| {
                        let key = (name.to_string(), b.address);
                        let snap = checks.get(&(name, b.address)).copied();
                        let health = match (self.healthy.get(&key), snap) {
                            _ if self.is_healthy(&key) => Health::Up,
                            (Some(false), Some(s))
                                if s.checks
                                    .iter()
                                    .all(|c| c.status == fulcrum_health::CheckStatus::Unknown) =>
                            {
                                Health::Unknown
                            }
                            (Some(_), _) => Health::Down,
                            (None, _) => Health::Unknown,
                        };
                        let checks = snap.map(check_statuses).unwrap_or_default();
                        BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            drained: b.drain || self.drained_by_api.contains(&key),
                            health,
                            last_error: if health == Health::Up {
                                None
                            } else {
                                checks.iter().find_map(|c| c.last_error.clone())
                            },
                            checks,
                            traffic: self.traffic(
                                (name.to_string(), Some(b.address)),
                                in_plane
                                    .get(&b.address)
                                    .map(|d| d.traffic)
                                    .unwrap_or_default(),
                            ),
                            data_plane_error: unresolved.and_then(|u| u.get(&b.address)).cloned(),
                            leaving: false,
                        }
                    })
                    .collect();
                for (address, l) in self.leaving.get(name).into_iter().flatten() {
                    let plane = in_plane.get(address);
                    backends.push(BackendStatus {
                        address: *address,
                        weight: l.backend.weight,
                        drained: true,
                        health: if plane.is_some() {
                            Health::Up
                        } else {
                            Health::Unknown
                        },
                        last_error: None,
                        checks: Vec::new(),
                        traffic: self.traffic(
                            (name.to_string(), Some(*address)),
                            plane.map(|d| d.traffic).unwrap_or_default(),
                        ),
                        data_plane_error: unresolved.and_then(|u| u.get(address)).cloned(),
                        leaving: true,
                    });
                }
                ServiceStatus {
                    name: service.name.clone(),
                    vip: service.vip,
                    port: service.port,
                    protocol: service.protocol.to_string(),
                    forwarding: service.forwarding.to_string(),
                    icmp_echo: service.icmp_echo,
                    traffic: self.traffic(
                        (service.name.clone(), None),
                        info.map(|i| i.traffic).unwrap_or_default(),
                    ),
                    backends,
                }
            })
            .collect();
        Status {
            services,
            counters: self
                .lb
                .stats()
                .map(|s| status::counters(&s))
                .unwrap_or_default(),
            reloading: false,
            health_local_failures: self.checker.local_failures(),
        }
    }
}

fn check_statuses(snap: &BackendSnapshot) -> Vec<CheckStatus> {
    snap.checks
        .iter()
        .map(|c| CheckStatus {
            kind: c.name.clone(),
            up: c.status == fulcrum_health::CheckStatus::Up,
            latency_seconds: c.last_latency.map(|l| l.as_secs_f64()),
            last_error: c.last_error.clone(),
        })
        .collect()
}
