//! Backend slots: which destination holds each, and the value the data plane reads
//! there (next hop, VLAN, tunnel), written again whenever any of them changes.

use fulcrum_common::{BackendValue, FORWARD_L2, TrafficCounters, maps};
use tracing::{info, info_span};

use super::{Balancer, DestState, NextHop, fmt_mac, per_cpu, sum_traffic, tunnel, vlan};
use crate::{BalancerError, Destination, ServiceId};

impl Balancer {
    /// Gives a resolved destination a backend slot and records it, without touching the
    /// Maglev table.
    pub(super) fn record_destination(
        &mut self,
        id: &ServiceId,
        dest: Destination,
        egress: u32,
        neighbour: Option<NextHop>,
        tunnel: Option<tunnel::TunnelPath>,
    ) -> Result<(), BalancerError> {
        let span = info_span!("destination", service = %id, backend = %dest.address);
        let _enter = span.enter();
        let backend = self
            .free_backends
            .pop_front()
            .ok_or_else(|| self.too_many_backends(id, dest.address))?;
        if let Some(t) = tunnel {
            self.tunnels.insert(backend, t);
        }
        if let Err(e) = self.claim_backend(backend, neighbour) {
            self.tunnels.remove(&backend);
            self.free_backends.push_front(backend);
            return Err(e);
        }
        match neighbour {
            Some(n) => info!(mac = %fmt_mac(n.mac), "destination added"),
            None => info!("destination added; waiting for the kernel to resolve its MAC"),
        }
        let state = self
            .services
            .get_mut(id)
            .ok_or(BalancerError::NoService(*id))?;
        state.destinations.insert(
            dest.address,
            DestState {
                backend,
                weight: dest.weight,
                drained: false,
                egress,
                neighbour,
            },
        );
        Ok(())
    }

    pub(super) fn claim_backend(
        &mut self,
        backend: u32,
        neighbour: Option<NextHop>,
    ) -> Result<(), BalancerError> {
        if let Some(g) = self.generations.get_mut(backend as usize) {
            *g = g.wrapping_add(1);
        }
        let zero = per_cpu(TrafficCounters::default())?;
        self.maps
            .backend_stats
            .set(backend, zero, 0)
            .map_err(BalancerError::map(maps::BACKEND_STATS, "reset"))?;
        self.write_backend(backend, neighbour)
    }

    pub(super) fn write_backend(
        &mut self,
        backend: u32,
        neighbour: Option<NextHop>,
    ) -> Result<(), BalancerError> {
        let generation = self
            .generations
            .get(backend as usize)
            .copied()
            .unwrap_or_default();
        let tunnel = self.tunnels.get(&backend).copied();
        let value = match neighbour {
            Some(n) => self.forward_value(n, tunnel.as_ref(), generation),
            None => BackendValue {
                generation,
                ..Default::default()
            },
        };
        self.maps
            .backends
            .set(backend, value, 0)
            .map_err(BalancerError::map(maps::BACKENDS, "write"))
    }

    /// How a frame reaches next hop `n`, by `tunnel` if any: the data plane's backend
    /// value, also what the health probes are encapsulated by.
    pub(super) fn forward_value(
        &mut self,
        n: NextHop,
        tunnel: Option<&tunnel::TunnelPath>,
        generation: u32,
    ) -> BackendValue {
        let mut v = BackendValue {
            mac: n.mac,
            ifindex: n.ifindex,
            generation,
            mode: FORWARD_L2,
            ..Default::default()
        };
        if let Some(vlan) = self.trunk(n.ifindex) {
            vlan::tag(&mut v, vlan);
        }
        v.src_mac = self
            .interfaces
            .get(&v.ifindex)
            .map(|i| i.mac)
            .unwrap_or_default();
        // The tunnel's fields last: they keep the VLAN bits.
        if let Some(t) = tunnel {
            t.apply(&mut v);
        }
        v
    }

    /// Keeps a departing destination's traffic in its service's total, then frees its slot.
    pub(super) fn retire(&mut self, id: &ServiceId, backend: u32) -> Result<(), BalancerError> {
        let counted = sum_traffic(&self.maps.backend_stats, backend)?;
        if let Some(state) = self.services.get_mut(id) {
            state.retired = state.retired + counted;
            let (slot, retired) = (state.slot, state.retired);
            self.write_retired(slot, retired)?;
        }
        self.free_backend(backend)
    }

    /// Invalidates a backend slot (flows pinned to it miss from now on) and queues it for reuse.
    pub(super) fn free_backend(&mut self, backend: u32) -> Result<(), BalancerError> {
        if let Some(g) = self.generations.get_mut(backend as usize) {
            *g = g.wrapping_add(1);
        }
        self.tunnels.remove(&backend);
        self.write_backend(backend, None)?;
        self.clear_record(backend)?;
        self.free_backends.push_back(backend);
        Ok(())
    }
}
