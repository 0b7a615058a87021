//! A service's destinations: one at a time, or declared as a whole set (weights and drain
//! together, one Maglev rebuild), and the checks that say whether a backend can be served.

use std::{collections::BTreeMap, net::IpAddr};

use tracing::{debug, info};

use super::{
    Balancer, DestState, NextHop,
    tunnel::{self, TunnelPath},
};
use crate::{BalancerError, Destination, Forwarding, Service, ServiceId, netlink::RouteKind};

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
        let (egress, neighbour, tunnel) = self.resolve(id, dest.address)?;
        self.record_destination(id, dest, egress, neighbour, tunnel)?;
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

    /// Whether `address` could be a destination of `service` now, by the rule of its
    /// forwarding (L2 DSR: directly connected; tunnelled: routed), egress attached in both,
    /// without changing anything: for checking a reload before applying it. The service
    /// need not be added yet.
    pub fn check_destination(
        &mut self,
        service: &Service,
        address: impl Into<IpAddr>,
    ) -> Result<(), BalancerError> {
        self.path(service.id.vip, &service.forwarding, address.into())
            .map(|_| ())
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
                _ => self.resolve(id, address),
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
        for (d, (egress, neighbour, tunnel)) in resolved {
            self.record_destination(id, d.destination, egress, neighbour, tunnel)?;
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
        let route = self.netlink()?.route_get(address).map_err(|e| match e {
            crate::netlink::NetlinkError::NoRoute(a) => BalancerError::NoRoute(a),
            other => other.into(),
        })?;
        if route.kind == RouteKind::Local {
            return Err(BalancerError::LocalBackend(address));
        }
        if let Some(gateway) = route.gateway {
            return Err(BalancerError::NotDirectlyConnected { address, gateway });
        }
        // A VLAN sub-interface of an attached trunk is served through the trunk.
        if !self.interfaces.contains_key(&route.ifindex) && self.trunk(route.ifindex).is_none() {
            let iface = self
                .netlink()?
                .link(route.ifindex)
                .map(|l| l.name)
                .unwrap_or_else(|_| format!("ifindex {}", route.ifindex));
            return Err(BalancerError::EgressNotAttached { address, iface });
        }
        Ok(route.ifindex)
    }

    /// Egress interface and, if the kernel knows it, the MAC of a backend (of its route's
    /// next hop when the service tunnels); asks the kernel to resolve the MAC when it does
    /// not.
    #[allow(clippy::type_complexity)]
    fn resolve(
        &mut self,
        id: &ServiceId,
        address: IpAddr,
    ) -> Result<(u32, Option<NextHop>, Option<TunnelPath>), BalancerError> {
        let forwarding = self.state(id)?.forwarding;
        let (oif, hop, path) = self.path(id.vip, &forwarding, address)?;
        let neighbour = self.neighbour_of(oif, hop)?;
        Ok((oif, neighbour, path))
    }

    /// Egress interface, the neighbour to send to (the backend, or its route's next hop
    /// when tunnelled) and the tunnel path of a backend, or why it cannot be served.
    #[allow(clippy::type_complexity)]
    pub(super) fn path(
        &mut self,
        vip: IpAddr,
        forwarding: &Forwarding,
        address: IpAddr,
    ) -> Result<(u32, IpAddr, Option<TunnelPath>), BalancerError> {
        // L2 DSR hands the client's packet on as it came: the backend must be of its family.
        if address.is_ipv6() != vip.is_ipv6() && *forwarding == Forwarding::L2Dsr {
            return Err(BalancerError::Unsupported(format!(
                "L2 DSR from {vip} to backend {address}: the backend must be of the VIP's family"
            )));
        }
        if let Some(path) = tunnel::resolve(self.netlink()?, vip, forwarding, address)? {
            let (oif, hop) = (path.ifindex, path.next_hop);
            self.attached(address, oif)?;
            return Ok((oif, hop, Some(path)));
        }
        Ok((self.egress(address)?, address, None))
    }

    /// Fails unless the balancer runs on `oif`, the egress towards `address`.
    fn attached(&mut self, address: IpAddr, oif: u32) -> Result<(), BalancerError> {
        if self.interfaces.contains_key(&oif) {
            return Ok(());
        }
        let iface = self
            .netlink()?
            .link(oif)
            .map(|l| l.name)
            .unwrap_or_else(|_| format!("ifindex {oif}"));
        Err(BalancerError::EgressNotAttached { address, iface })
    }

    /// The MAC of neighbour `address` on `oif` if the kernel knows it; else asks for it.
    pub(super) fn neighbour_of(
        &mut self,
        oif: u32,
        address: IpAddr,
    ) -> Result<Option<NextHop>, BalancerError> {
        let netlink = self.netlink()?;
        let known = netlink
            .neighbour(oif, address)?
            .filter(|n| n.usable())
            .and_then(|n| n.mac);
        if let Some(mac) = known {
            return Ok(Some(NextHop { ifindex: oif, mac }));
        }
        netlink.request_resolution(oif, address)?;
        self.resolution_requests.insert((oif, address));
        Ok(None)
    }
}
