//! Health probes through the tunnel: a check of a tunnelled backend must prove that the
//! backend serves the VIP, not only its own address. The checker connects to the VIP
//! with a socket mark this module hands out; the probe program on the egress of every
//! attached interface encapsulates marked packets to that backend exactly as the data
//! plane would (same outer source, GUE port, next hop, VLAN), so the backend's kernel sees
//! a packet to the VIP from the balancer's address. Only a backend holding the VIP
//! answers, and it answers the balancer directly, like any DSR reply.
//!
//! The probe entries are kept apart from the data plane's backend slots because a
//! backend is probed before it takes traffic (a new backend enters only once healthy).

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, tc},
};
use fulcrum_common::{
    BackendValue,
    probe::{MAX_PROBES, PROBE_MARK, PROGRAM, ProbeCounters, maps},
};
use tracing::{debug, info};

use super::{
    Balancer, NextHop,
    builder::{program_error, program_mut},
    tunnel::TunnelPath,
    typed,
};
use crate::{BalancerError, Forwarding, Service, ServiceId};

/// Where the probes of one backend of one service go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRoute {
    /// The service whose VIP is probed.
    pub service: ServiceId,
    /// The backend.
    pub address: IpAddr,
    /// The socket mark that sends a probe to this backend (`SO_MARK`).
    pub mark: u32,
    /// Why the tunnel cannot reach the backend now, if it cannot: its probes are dropped
    /// (and time out) until the path is found, which every neighbour refresh looks for.
    /// Also set when the kernel's route to the VIP leaves by an interface the balancer
    /// does not run on: bound to `device`, the probes then need a route there.
    pub unreachable: Option<String>,
    /// The attached interface probes must be bound to (`SO_BINDTODEVICE`), so that none
    /// leaves untunnelled by another route to the VIP; `None` while nothing is attached.
    pub device: Option<String>,
}

/// What the probe program did with marked packets since the balancer was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Encapsulated to their backend.
    pub sent: u64,
    /// Dropped: their backend's next hop was not resolved yet, or the mark is unknown.
    pub no_path: u64,
    /// Dropped: not IP, or the packet could not be grown.
    pub failed: u64,
}

struct Entry {
    id: u32,
    forwarding: Forwarding,
    path: Option<TunnelPath>,
    hop: Option<NextHop>,
}

/// The probe program's maps and this balancer's probe entries.
pub(super) struct Probes {
    map: HashMap<MapData, u32, BackendValue>,
    stats: PerCpuArray<MapData, ProbeCounters>,
    entries: BTreeMap<(ServiceId, IpAddr), Entry>,
    free: VecDeque<u32>,
}

impl Probes {
    /// Verifies the probe program and opens its maps.
    /// At most `max` probes (the data plane's backend slots: one probe per destination).
    pub(super) fn load(ebpf: &mut aya::Ebpf, max: u32) -> Result<Self, BalancerError> {
        classifier(ebpf)?
            .load()
            .map_err(|e| program_error(format!("verifying program {PROGRAM}"), e))?;
        Ok(Self {
            map: typed(ebpf, maps::PROBES)?,
            stats: typed(ebpf, maps::PROBE_STATS)?,
            entries: BTreeMap::new(),
            free: (0..max.min(MAX_PROBES)).collect(),
        })
    }
}

fn classifier(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier, BalancerError> {
    program_mut(ebpf, PROGRAM)
}

impl Balancer {
    /// Attaches the probe program to `iface`'s egress (TCX; a clsact qdisc on kernels
    /// before 6.6). Detached when the balancer is dropped.
    pub(super) fn attach_probes(&mut self, iface: &str) -> Result<(), BalancerError> {
        use aya::util::KernelVersion;
        if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
            // EEXIST (a qdisc already there) is fine; any other failure shows in attach.
            let _ = tc::qdisc_add_clsact(iface);
        }
        classifier(&mut self.ebpf)?
            .attach(iface, TcAttachType::Egress)
            .map_err(|e| program_error(format!("attaching {PROGRAM} to {iface} egress"), e))?;
        Ok(())
    }

    /// Makes the probes of exactly `wanted` (a service, as configured, and one of its
    /// tunnelled backends) go through the tunnel, and says which socket mark reaches each.
    /// A pair that stays keeps its mark. The service need not be added: a backend is
    /// probed before it takes traffic.
    pub fn set_probes(
        &mut self,
        wanted: &[(Service, IpAddr)],
    ) -> Result<Vec<ProbeRoute>, BalancerError> {
        let keep: BTreeMap<(ServiceId, IpAddr), Forwarding> = wanted
            .iter()
            .map(|(s, a)| ((s.id, *a), s.forwarding))
            .collect();
        let gone: Vec<_> = self
            .probes
            .entries
            .iter()
            .filter(|(k, e)| keep.get(k) != Some(&e.forwarding))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(e) = self.probes.entries.remove(&key) {
                self.remove_probe(e.id)?;
            }
        }
        let mut routes = Vec::with_capacity(wanted.len());
        // Every backend of a service shares its VIP's route: asked once per VIP.
        let mut devices = BTreeMap::new();
        for (service, address) in wanted {
            let key = (service.id, *address);
            if !self.probes.entries.contains_key(&key) {
                let id = self.probes.free.pop_front().ok_or(BalancerError::Limit {
                    what: "health probes",
                    why: format!("more than {MAX_PROBES}"),
                })?;
                self.probes.entries.insert(
                    key,
                    Entry {
                        id,
                        forwarding: service.forwarding,
                        path: None,
                        hop: None,
                    },
                );
            }
            let (id, unreachable) = self.resolve_probe(&key);
            let vip = service.id.vip;
            let (device, misrouted) = devices
                .entry(vip)
                .or_insert_with(|| self.probe_device(vip))
                .clone();
            routes.push(ProbeRoute {
                service: service.id,
                address: *address,
                mark: PROBE_MARK | id,
                unreachable: unreachable.map(|e| e.to_string()).or(misrouted),
                device,
            });
        }
        Ok(routes)
    }

    /// The interface probes to `vip` leave by: the one the kernel's route to the VIP
    /// takes if the balancer runs there, else the first it runs on (where the probes need
    /// a route to the VIP, which the second value says).
    fn probe_device(&mut self, vip: IpAddr) -> (Option<String>, Option<String>) {
        let routed = self
            .netlink()
            .and_then(|nl| nl.route_get(vip).map_err(BalancerError::from));
        let chosen = match &routed {
            Ok(r) if self.interfaces.contains_key(&r.ifindex) => Some(r.ifindex),
            _ => self.interfaces.keys().next().copied(),
        };
        let mut name = |ifindex: u32| {
            self.netlink()
                .ok()
                .and_then(|nl| nl.link(ifindex).ok())
                .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name)
        };
        let device = chosen.map(&mut name);
        let misrouted = match (&routed, &device) {
            (Ok(r), _) if Some(r.ifindex) == chosen => None,
            (_, None) => None,
            (Ok(r), Some(d)) => Some(format!(
                "the route to {vip} leaves by {}, where the balancer does not run; probes \
                 are bound to {d} and need a route to {vip} there",
                name(r.ifindex)
            )),
            (Err(e), Some(d)) => Some(format!(
                "no route to {vip} ({e}); probes are bound to {d} and need one there"
            )),
        };
        (device, misrouted)
    }

    /// Counters of the probe program, summed over CPUs.
    pub fn probe_stats(&self) -> Result<ProbeStats, BalancerError> {
        let values = self
            .probes
            .stats
            .get(&0, 0)
            .map_err(BalancerError::map(maps::PROBE_STATS, "read"))?;
        Ok(values
            .iter()
            .fold(ProbeStats::default(), |s, c| ProbeStats {
                sent: s.sent + c.sent,
                no_path: s.no_path + c.no_path,
                failed: s.failed + c.failed,
            }))
    }

    /// Finds the probe's path and next hop again (by the data plane's rule) and writes its
    /// entry; returns its id and why it has no path, if so (its entry is then removed from
    /// the map, so its probes drop).
    fn resolve_probe(&mut self, key: &(ServiceId, IpAddr)) -> (u32, Option<BalancerError>) {
        let Some(&Entry { id, forwarding, .. }) = self.probes.entries.get(key) else {
            return (0, Some(BalancerError::NoService(key.0)));
        };
        let resolved = self
            .path(key.0.vip, &forwarding, key.1)
            .and_then(|(oif, hop, path)| Ok((path, self.neighbour_of(oif, hop)?)));
        let (path, hop) = match resolved {
            Ok(found) => found,
            Err(e) => {
                self.note_probe_path(key, None, None);
                return (id, Some(self.remove_probe_value(id).err().unwrap_or(e)));
            }
        };
        self.note_probe_path(key, path, hop);
        let value = match hop {
            Some(hop) => self.forward_value(hop, path.as_ref(), 0),
            None => BackendValue::default(),
        };
        let written = self
            .probes
            .map
            .insert(PROBE_MARK | id, value, 0)
            .map_err(BalancerError::map(maps::PROBES, "write"));
        (id, written.err())
    }

    fn note_probe_path(
        &mut self,
        key: &(ServiceId, IpAddr),
        path: Option<TunnelPath>,
        hop: Option<NextHop>,
    ) {
        if let Some(entry) = self.probes.entries.get_mut(key)
            && (entry.path, entry.hop) != (path, hop)
        {
            info!(service = %key.0, backend = %key.1, tunnel = path.is_some(), resolved = hop.is_some(), "health probe path");
            (entry.path, entry.hop) = (path, hop);
        }
    }

    /// Follows route and neighbour changes for every probe, as the neighbour refresh does
    /// for destinations.
    pub(super) fn refresh_probes(&mut self) -> Result<(), BalancerError> {
        let keys: Vec<_> = self.probes.entries.keys().copied().collect();
        for key in keys {
            if let (_, Some(e)) = self.resolve_probe(&key) {
                debug!(service = %key.0, backend = %key.1, error = %e, "probe path unresolved");
            }
        }
        Ok(())
    }

    fn remove_probe(&mut self, id: u32) -> Result<(), BalancerError> {
        self.remove_probe_value(id)?;
        self.probes.free.push_back(id);
        Ok(())
    }

    fn remove_probe_value(&mut self, id: u32) -> Result<(), BalancerError> {
        match self.probes.map.remove(&(PROBE_MARK | id)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(BalancerError::map(maps::PROBES, "remove")(e)),
        }
    }
}
