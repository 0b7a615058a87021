//! The balancer's side of pinning: links kept on bpffs, the records that let another
//! process adopt the maps, and adoption itself.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use fulcrum_common::{
    BACKEND_F_DRAINED, BACKEND_F_REQUESTED, BackendRecord, Layout, SERVICE_F_STICKY, ServiceKey,
    ServiceRecord, ServiceValue, TrafficCounters, maps, programs,
};
use tracing::{info, warn};

use super::{Balancer, DestState, NextHop, ServiceState, xdp_mut};
use crate::{BalancerError, Protocol, Scheduler, ServiceId, Traffic, pin};

/// A balancer whose state lives on bpffs.
pub(super) struct Pinned {
    pub(super) dir: PathBuf,
    /// The state was found there rather than created.
    pub(super) adopted: bool,
    /// Dropping leaves everything pinned (a restart) instead of removing it (a stop).
    pub(super) keep: bool,
    /// Interfaces with pinned links not attached again by this process yet.
    pub(super) unclaimed: BTreeSet<u32>,
}

/// Readies `dir` and returns the layout pinned there, if any.
pub(super) fn prepare(dir: &Path) -> Result<Option<Layout>, BalancerError> {
    pin::prepare(dir)?;
    let path = pin::map_path(dir, maps::LAYOUT);
    if !path.exists() {
        pin::remove_partial(dir);
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(BalancerError::map(maps::LAYOUT, "open"))?;
    let array: Array<MapData, Layout> = Array::try_from(aya::maps::Map::Array(data))
        .map_err(BalancerError::map(maps::LAYOUT, "open"))?;
    let found = array
        .get(&0, 0)
        .map_err(BalancerError::map(maps::LAYOUT, "read"))?;
    pin::check(dir, &found)?;
    info!(dir = %dir.display(), "adopting pinned state");
    Ok(Some(found))
}

impl Balancer {
    /// Whether this balancer took over pinned state instead of starting empty: its
    /// services and destinations are then already in [`Balancer::services`].
    pub fn adopted(&self) -> bool {
        self.pinned.as_ref().is_some_and(|p| p.adopted)
    }

    /// The directory the state is pinned in, if any.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pinned.as_ref().map(|p| p.dir.as_path())
    }

    /// Detaches pinned interfaces that this process did not attach again (they left the
    /// configuration while the daemon was down).
    pub fn release_unclaimed(&mut self) -> Result<(), BalancerError> {
        let Some(p) = self.pinned.as_mut() else {
            return Ok(());
        };
        for ifindex in std::mem::take(&mut p.unclaimed) {
            let path = pin::link_path(&p.dir, ifindex);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "could not unpin a released link");
            }
            let _ = self.maps.egress.remove(ifindex);
            info!(ifindex, "released an interface no longer attached");
        }
        Ok(())
    }

    /// Ends this process's hold on the data plane but leaves it running on its pinned
    /// state, for the next process to adopt (restart, upgrade). Without pinning this is
    /// an ordinary drop.
    pub fn leave_pinned(mut self) {
        if let Some(p) = self.pinned.as_mut() {
            p.keep = true;
        }
    }

    /// Replaces the program of the interface's pinned link with this process's, at once:
    /// the interface never runs without a balancer. False when nothing is pinned for it.
    pub(super) fn adopt_link(&mut self, iface: &str, ifindex: u32) -> Result<bool, BalancerError> {
        let Some(p) = self.pinned.as_mut() else {
            return Ok(false);
        };
        if !p.unclaimed.remove(&ifindex) {
            return Ok(false);
        }
        let path = pin::link_path(&p.dir, ifindex);
        let pin_error = |what: String| BalancerError::Pin {
            dir: path.clone(),
            what,
        };
        let pinned = PinnedLink::from_pin(&path).map_err(|e| pin_error(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| pin_error(format!("not an XDP link: {e}")))?;
        xdp_mut(&mut self.ebpf, programs::BALANCER)?
            .attach_to_link(link)
            .map_err(|e| BalancerError::Program {
                what: format!("replacing the program on '{iface}'"),
                source: Box::new(e),
            })?;
        info!(iface, "took over the pinned XDP link");
        Ok(true)
    }

    /// Pins a link just made, so it outlives the process; without pinning the program
    /// keeps it, and it detaches on drop.
    pub(super) fn pin_link(
        &mut self,
        iface: &str,
        ifindex: u32,
        id: XdpLinkId,
    ) -> Result<(), BalancerError> {
        let Some(dir) = self.pinned.as_ref().map(|p| p.dir.clone()) else {
            return Ok(());
        };
        let path = pin::link_path(&dir, ifindex);
        let pin_error = |what: String| BalancerError::Pin {
            dir: path.clone(),
            what,
        };
        let link = xdp_mut(&mut self.ebpf, programs::BALANCER)?
            .take_link(id)
            .map_err(|e| pin_error(e.to_string()))?;
        let fd = FdLink::try_from(link).map_err(|e| {
            pin_error(format!(
                "the kernel attached '{iface}' without a BPF link, which cannot be pinned: {e}"
            ))
        })?;
        // Dropping the pinned handle closes our descriptor; the pin keeps the link.
        drop(fd.pin(&path).map_err(|e| pin_error(e.to_string()))?);
        Ok(())
    }

    /// Rebuilds the services, destinations and slot lists from the pinned maps, then
    /// rewrites each table from them, which changes nothing when they agree.
    pub(super) fn adopt(&mut self) -> Result<(), BalancerError> {
        let mut by_slot: BTreeMap<u32, ServiceId> = BTreeMap::new();
        let entries: Vec<(ServiceKey, ServiceValue)> =
            self.maps.services.iter().filter_map(Result::ok).collect();
        for (key, value) in entries {
            let Some(id) = service_id(&key) else {
                warn!(?key, "ignoring a pinned service of an unknown protocol");
                continue;
            };
            by_slot.insert(value.slot, id);
            let slot = value.slot;
            let retired = self
                .maps
                .service_records
                .get(&slot, 0)
                .map(|r| traffic(r.retired))
                .unwrap_or_default();
            self.services.insert(
                id,
                ServiceState {
                    slot,
                    scheduler: if value.flags & SERVICE_F_STICKY != 0 {
                        Scheduler::SourceIp
                    } else {
                        Scheduler::FiveTuple
                    },
                    forwarding: crate::Forwarding::L2Dsr,
                    icmp_echo: true,
                    destinations: BTreeMap::new(),
                    retired,
                },
            );
        }
        self.free_services.retain(|s| !by_slot.contains_key(s));
        let mut used = BTreeSet::new();
        for backend in 1..self.limits.max_backends {
            let value = self
                .maps
                .backends
                .get(&backend, 0)
                .map_err(BalancerError::map(maps::BACKENDS, "read"))?;
            if let Some(g) = self.generations.get_mut(backend as usize) {
                *g = value.generation;
            }
            let record = self
                .maps
                .backend_records
                .get(&backend, 0)
                .map_err(BalancerError::map(maps::BACKEND_RECORDS, "read"))?;
            let Some(id) = record
                .service
                .checked_sub(1)
                .and_then(|slot| by_slot.get(&slot))
            else {
                continue;
            };
            let address = IpAddr::V4(Ipv4Addr::from(record.address.to_ne_bytes()));
            let neighbour = (value.ifindex != 0).then_some(NextHop {
                ifindex: value.ifindex,
                mac: value.mac,
            });
            if record.flags & BACKEND_F_REQUESTED != 0 {
                self.resolution_requests.insert((record.egress, address));
            }
            if let Some(state) = self.services.get_mut(id) {
                state.destinations.insert(
                    address,
                    DestState {
                        backend,
                        weight: record.weight,
                        drained: record.flags & BACKEND_F_DRAINED != 0,
                        egress: record.egress,
                        neighbour,
                    },
                );
                used.insert(backend);
            }
        }
        self.free_backends.retain(|b| !used.contains(b));
        let ids: Vec<ServiceId> = self.services.keys().copied().collect();
        for id in &ids {
            self.rebuild(id)?;
        }
        info!(
            services = ids.len(),
            destinations = used.len(),
            "adopted pinned state"
        );
        Ok(())
    }

    /// Records who holds each of a service's backend slots.
    pub(super) fn write_records(&mut self, id: &ServiceId) -> Result<(), BalancerError> {
        if self.pinned.is_none() {
            return Ok(());
        }
        let state = self.state(id)?;
        let records: Vec<(u32, BackendRecord)> = state
            .destinations
            .iter()
            .map(|(address, d)| {
                let mut flags = 0;
                if d.drained {
                    flags |= BACKEND_F_DRAINED;
                }
                if self.resolution_requests.contains(&(d.egress, *address)) {
                    flags |= BACKEND_F_REQUESTED;
                }
                let record = BackendRecord {
                    address: match address {
                        IpAddr::V4(v4) => u32::from_ne_bytes(v4.octets()),
                        IpAddr::V6(_) => 0,
                    },
                    service: state.slot + 1,
                    weight: d.weight,
                    egress: d.egress,
                    flags,
                };
                (d.backend, record)
            })
            .collect();
        for (backend, record) in records {
            self.maps
                .backend_records
                .set(backend, record, 0)
                .map_err(BalancerError::map(maps::BACKEND_RECORDS, "write"))?;
        }
        Ok(())
    }

    pub(super) fn clear_record(&mut self, backend: u32) -> Result<(), BalancerError> {
        if self.pinned.is_none() {
            return Ok(());
        }
        self.maps
            .backend_records
            .set(backend, BackendRecord::default(), 0)
            .map_err(BalancerError::map(maps::BACKEND_RECORDS, "write"))
    }

    pub(super) fn write_retired(
        &mut self,
        slot: u32,
        retired: Traffic,
    ) -> Result<(), BalancerError> {
        if self.pinned.is_none() {
            return Ok(());
        }
        let record = ServiceRecord {
            retired: TrafficCounters {
                packets: retired.packets,
                bytes: retired.bytes,
                new_flows: retired.new_flows,
            },
        };
        self.maps
            .service_records
            .set(slot, record, 0)
            .map_err(BalancerError::map(maps::SERVICE_RECORDS, "write"))
    }
}

fn service_id(key: &ServiceKey) -> Option<ServiceId> {
    let protocol = match key.proto {
        fulcrum_common::IPPROTO_TCP => Protocol::Tcp,
        fulcrum_common::IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    Some(ServiceId::new(
        Ipv4Addr::from(key.vip.to_ne_bytes()),
        u16::from_be(key.port),
        protocol,
    ))
}

fn traffic(c: TrafficCounters) -> Traffic {
    Traffic {
        packets: c.packets,
        bytes: c.bytes,
        new_flows: c.new_flows,
    }
}
