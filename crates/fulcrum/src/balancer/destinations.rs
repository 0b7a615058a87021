//! A service's destinations: one at a time, or declared as a whole set (weights and drain
//! together, one Maglev rebuild), and the checks that say whether a backend can be served.

use std::{collections::BTreeMap, net::IpAddr};

use tracing::{debug, info};

use super::{Balancer, DestState, NextHop};
use crate::{BalancerError, Destination, ServiceId, netlink::RouteKind};

/// One destination of a declared set: its weight and whether it is drained, so a drained
/// backend that is re-added never passes through an undrained table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DesiredDestination {
    /// Address and weight.
    pub destination: Destination,
    /// Drained: keeps its flows, takes no new ones.
    pub drained: bool,
}

impl DesiredDestination {
    /// `destination`, drained or not.
    pub fn new(destination: Destination, drained: bool) -> Self {
        Self {
            destination,
            drained,
        }
    }
}

/// A destination [`Balancer::set_desired`] left out, and why: the rest of its service was
/// applied without it.
#[derive(Debug)]
pub struct Unresolved {
    /// The backend left out.
    pub address: IpAddr,
    /// Why it cannot be served (no route, behind a gateway, egress not attached, no slot).
    pub error: BalancerError,
}

impl Balancer {
    /// Adds one destination. Its MAC is looked up in the kernel; if unknown, the kernel is
    /// asked to resolve it and the destination takes flows once it is resolved.
    pub fn add_destination(
        &mut self,
        id: &ServiceId,
        dest: Destination,
    ) -> Result<(), BalancerError> {
        if self.state(id)?.destinations.contains_key(&dest.address) {
            return Err(BalancerError::DestinationExists {
                id: *id,
                address: dest.address,
            });
        }
        if self.free_backends.is_empty() {
            return Err(self.too_many_backends(id, dest.address));
        }
        let (egress, neighbour) = self.resolve(dest.address)?;
        self.record_destination(id, dest, egress, neighbour)?;
        self.rebuild(id)
    }

    /// Changes a destination's weight; flows already pinned to it stay.
    pub fn update_destination(
        &mut self,
        id: &ServiceId,
        dest: Destination,
    ) -> Result<(), BalancerError> {
        self.dest_mut(id, dest.address)?.weight = dest.weight;
        self.rebuild(id)
    }

    /// Removes a destination: no new flows reach it, and its pinned flows are chosen anew.
    pub fn remove_destination(
        &mut self,
        id: &ServiceId,
        address: impl Into<IpAddr>,
    ) -> Result<(), BalancerError> {
        let address = address.into();
        let state = self
            .services
            .get_mut(id)
            .ok_or(BalancerError::NoService(*id))?;
        let dest = state
            .destinations
            .remove(&address)
            .ok_or(BalancerError::NoDestination { id: *id, address })?;
        // Out of the table first, so no new flow can be given the slot being freed.
        self.rebuild(id)?;
        self.retire(id, dest.backend)?;
        info!(service = %id, backend = %address, "destination removed");
        Ok(())
    }

    /// Makes the service's destinations exactly `dests`: adds, reweighs and removes as
    /// needed, and rebuilds the table once. Drain state of kept destinations is kept. A
    /// destination that cannot be served fails the whole call and changes nothing; see
    /// [`Balancer::set_desired`] for the call that leaves it out instead.
    pub fn set_destinations(
        &mut self,
        id: &ServiceId,
        dests: &[Destination],
    ) -> Result<(), BalancerError> {
        let state = self.state(id)?;
        let wanted: Vec<DesiredDestination> = dests
            .iter()
            .map(|d| DesiredDestination {
                destination: *d,
                drained: state
                    .destinations
                    .get(&d.address)
                    .is_some_and(|s| s.drained),
            })
            .collect();
        match self.apply_desired(id, &wanted, true)?.into_iter().next() {
            Some(unresolved) => Err(unresolved.error),
            None => Ok(()),
        }
    }

    /// Makes the service's destinations exactly `wanted`, weights and drain state included,
    /// with one Maglev rebuild: a drained destination never takes a new flow on its way in.
    /// Each destination is resolved on its own: one that cannot be served (no route, behind a
    /// gateway, egress not attached, no free slot) is left out and returned with its reason,
    /// and the rest of the service is applied. Errs, changing nothing, only on a duplicate
    /// address, an unknown service, or a failing map write.
    pub fn set_desired(
        &mut self,
        id: &ServiceId,
        wanted: &[DesiredDestination],
    ) -> Result<Vec<Unresolved>, BalancerError> {
        self.apply_desired(id, wanted, false)
    }

    /// Whether `address` could be a destination now (route, directly connected, egress
    /// attached), without changing anything: for checking a reload before applying it.
    pub fn check_destination(&mut self, address: impl Into<IpAddr>) -> Result<(), BalancerError> {
        self.egress(address.into()).map(|_| ())
    }

    /// How many destinations, summed over services, the data plane can hold: for checking
    /// a change against it before applying it.
    pub fn destination_capacity(&self) -> usize {
        // Slot 0 means "no backend".
        self.limits.max_backends.saturating_sub(1) as usize
    }

    /// How many services the data plane can hold.
    pub fn service_capacity(&self) -> usize {
        self.limits.max_services as usize
    }

    /// Stops new flows to a destination; its established flows continue.
    pub fn drain(
        &mut self,
        id: &ServiceId,
        address: impl Into<IpAddr>,
    ) -> Result<(), BalancerError> {
        let address = address.into();
        self.dest_mut(id, address)?.drained = true;
        info!(service = %id, backend = %address, "draining");
        self.rebuild(id)
    }

    /// Whether a destination is drained, without reading any counters.
    pub fn is_drained(
        &self,
        id: &ServiceId,
        address: impl Into<IpAddr>,
    ) -> Result<bool, BalancerError> {
        let address = address.into();
        self.state(id)?
            .destinations
            .get(&address)
            .map(|d| d.drained)
            .ok_or(BalancerError::NoDestination { id: *id, address })
    }

    /// Lets a drained destination take new flows again.
    pub fn undrain(
        &mut self,
        id: &ServiceId,
        address: impl Into<IpAddr>,
    ) -> Result<(), BalancerError> {
        let address = address.into();
        self.dest_mut(id, address)?.drained = false;
        info!(service = %id, backend = %address, "undrained");
        self.rebuild(id)
    }

    /// Resolves every new destination first; `strict` returns the unresolved ones before
    /// anything changes, otherwise they are left out.
    fn apply_desired(
        &mut self,
        id: &ServiceId,
        wanted: &[DesiredDestination],
        strict: bool,
    ) -> Result<Vec<Unresolved>, BalancerError> {
        let mut by_address = BTreeMap::new();
        for d in wanted {
            if by_address.insert(d.destination.address, *d).is_some() {
                return Err(BalancerError::DestinationExists {
                    id: *id,
                    address: d.destination.address,
                });
            }
        }
        let state = self.state(id)?;
        let current: Vec<IpAddr> = state.destinations.keys().copied().collect();
        let added: Vec<DesiredDestination> = wanted
            .iter()
            .filter(|d| !state.destinations.contains_key(&d.destination.address))
            .copied()
            .collect();
        let mut free = self.free_backends.len();
        let mut resolved = Vec::with_capacity(added.len());
        let mut unresolved = Vec::new();
        for d in added {
            let address = d.destination.address;
            let outcome = match free {
                0 => Err(self.too_many_backends(id, address)),
                _ => self.resolve(address),
            };
            match outcome {
                Ok(hop) => {
                    free -= 1;
                    resolved.push((d, hop));
                }
                Err(error) => {
                    debug!(service = %id, backend = %address, error = %error, "destination left out");
                    unresolved.push(Unresolved { address, error });
                }
            }
        }
        if strict && !unresolved.is_empty() {
            return Ok(unresolved);
        }

        let mut removed = Vec::new();
        for address in current {
            match by_address.get(&address) {
                Some(d) => {
                    let dest = self.dest_mut(id, address)?;
                    dest.weight = d.destination.weight;
                    dest.drained = d.drained;
                }
                None => {
                    if let Some(d) = self
                        .services
                        .get_mut(id)
                        .and_then(|s| s.destinations.remove(&address))
                    {
                        removed.push(d.backend);
                    }
                }
            }
        }
        for (d, (egress, neighbour)) in resolved {
            self.record_destination(id, d.destination, egress, neighbour)?;
            // Before the one rebuild below, so the table never holds it undrained.
            self.dest_mut(id, d.destination.address)?.drained = d.drained;
        }
        self.rebuild(id)?;
        for backend in removed {
            self.retire(id, backend)?;
        }
        Ok(unresolved)
    }

    pub(super) fn dest_mut(
        &mut self,
        id: &ServiceId,
        address: IpAddr,
    ) -> Result<&mut DestState, BalancerError> {
        self.services
            .get_mut(id)
            .ok_or(BalancerError::NoService(*id))?
            .destinations
            .get_mut(&address)
            .ok_or(BalancerError::NoDestination { id: *id, address })
    }

    pub(super) fn too_many_backends(&self, id: &ServiceId, address: IpAddr) -> BalancerError {
        BalancerError::TooManyBackends {
            id: *id,
            address,
            max: self.limits.max_backends,
        }
    }

    /// The interface a backend is reached through, or why it cannot be served by L2 DSR.
    fn egress(&mut self, address: IpAddr) -> Result<u32, BalancerError> {
        let v4 = super::ipv4_only(address)?;
        let route = self.netlink()?.route_get(v4).map_err(|e| match e {
            crate::netlink::NetlinkError::NoRoute(a) => BalancerError::NoRoute(a.into()),
            other => other.into(),
        })?;
        if route.kind == RouteKind::Local {
            return Err(BalancerError::LocalBackend(address));
        }
        if let Some(gateway) = route.gateway {
            return Err(BalancerError::NotDirectlyConnected {
                address,
                gateway: gateway.into(),
            });
        }
        if !self.interfaces.contains_key(&route.oif) {
            let iface = self
                .netlink()?
                .link(route.oif)
                .map(|l| l.name)
                .unwrap_or_else(|_| format!("ifindex {}", route.oif));
            return Err(BalancerError::EgressNotAttached { address, iface });
        }
        Ok(route.oif)
    }

    /// Egress interface and, if the kernel knows it, the MAC of a backend; asks the kernel
    /// to resolve the MAC when it does not.
    fn resolve(&mut self, address: IpAddr) -> Result<(u32, Option<NextHop>), BalancerError> {
        let oif = self.egress(address)?;
        let v4 = super::ipv4_only(address)?;
        let netlink = self.netlink()?;
        let known = netlink
            .neighbour(oif, v4)?
            .filter(|n| n.usable())
            .and_then(|n| n.mac);
        if let Some(mac) = known {
            return Ok((oif, Some(NextHop { ifindex: oif, mac })));
        }
        netlink.request_resolution(oif, v4)?;
        self.resolution_requests.insert((oif, address));
        Ok((oif, None))
    }
}
