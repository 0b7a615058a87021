//! The balancer: the loaded XDP program, its maps, and the services it serves.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode},
};
use fulcrum_common::{
    BackendRecord, BackendValue, FlowKey, FlowKey6, FlowValue, GlobalCounters, SERVICE_F_STICKY,
    ServiceKey, ServiceKey6, ServiceRecord, ServiceValue, TrafficCounters, VipInfo, maps, programs,
};
use tracing::{debug, info, warn};

use crate::{
    BalancerError, Destination, Forwarding, Scheduler, Service, ServiceId,
    maglev::{self, Member},
    netlink::Netlink,
    pin,
    ring::Rings,
    stats::Traffic,
};

mod addr;
mod builder;
mod counters;
mod destinations;
mod flow_events;
mod flow_import;
mod flow_records;
mod flow_table;
mod pinning;
mod probes;
mod slots;
mod talkers;
mod tunnel;
mod vips;
mod vlan;

pub use builder::BalancerBuilder;
pub(crate) use builder::{program_error, program_ref, typed, xdp_mut};

use counters::sum_traffic;
pub use destinations::{DesiredDestination, Unresolved};
pub use flow_events::FlowEvents;
pub use flow_import::ImportReport;
pub use probes::{ProbeRoute, ProbeStats};
pub use talkers::{ServiceTalkers, Talker, TalkerCount, TalkerSampling, TopTalkers};

/// The compiled XDP object, embedded at build time.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum"));

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver: the fast path, and what production wants.
    #[default]
    Native,
    /// In the kernel's generic receive path: slower, works on every interface.
    Generic,
}

impl AttachMode {
    pub(crate) fn xdp(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

struct Maps {
    vips: HashMap<MapData, u32, VipInfo>,
    vips6: HashMap<MapData, [u32; 4], VipInfo>,
    vip_filter: Array<MapData, u32>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    services6: HashMap<MapData, ServiceKey6, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    egress: DevMapHash<MapData>,
    global_stats: PerCpuArray<MapData, GlobalCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    flows: Map,
    flows6: Map,
    backend_records: Array<MapData, BackendRecord>,
    service_records: Array<MapData, ServiceRecord>,
}

struct Interface {
    mac: [u8; 6],
}

/// Where a destination's packets go, once the kernel has told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface index.
    pub ifindex: u32,
    /// The backend's MAC, from the kernel's neighbour table.
    pub mac: [u8; 6],
}

struct DestState {
    backend: u32,
    weight: u32,
    drained: bool,
    egress: u32,
    neighbour: Option<NextHop>,
}

struct ServiceState {
    slot: u32,
    scheduler: Scheduler,
    forwarding: Forwarding,
    icmp_echo: bool,
    destinations: BTreeMap<IpAddr, DestState>,
    /// Traffic of destinations since removed: the data plane counts per backend only.
    retired: Traffic,
}

/// A destination as [`Balancer::services`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationInfo {
    /// Address and weight.
    pub destination: Destination,
    /// Drained: keeps its flows, takes no new ones.
    pub drained: bool,
    /// `None` until the kernel has resolved the backend's MAC; until then it takes no flows.
    pub next_hop: Option<NextHop>,
    /// Traffic the data plane sent to it.
    pub traffic: Traffic,
}

/// A service as [`Balancer::services`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Identity and scheduler.
    pub service: Service,
    /// Its destinations, by address.
    pub destinations: Vec<DestinationInfo>,
    /// Traffic the data plane balanced for it.
    pub traffic: Traffic,
}

/// An L2 DSR load balancer in XDP: services (VIP, port, protocol) with weighted
/// destinations, balanced by Maglev with an LRU flow table so established flows keep their
/// backend when destinations change.
///
/// In the spirit of the IPVS API: create, update and remove services and destinations,
/// set a service's destinations declaratively, drain, read counters. Backends' MACs come
/// from the kernel's neighbour table; call [`Balancer::refresh_neighbours`] periodically
/// to follow changes. Dropping the balancer detaches it from every interface.
///
/// ```no_run
/// use std::net::Ipv4Addr;
/// use fulcrum::{AttachMode, Balancer, Destination, Service};
///
/// let mut lb = Balancer::builder().build()?;
/// lb.attach("eth0", AttachMode::Native)?;
/// let web = "10.0.0.100:80".parse().unwrap();
/// lb.add_service(Service::new(web))?;
/// lb.set_destinations(&web, &[
///     Destination::new(Ipv4Addr::new(10, 0, 0, 11)),
///     Destination::new(Ipv4Addr::new(10, 0, 0, 12)).with_weight(2),
/// ])?;
/// lb.drain(&web, Ipv4Addr::new(10, 0, 0, 11))?;
/// # Ok::<(), fulcrum::BalancerError>(())
/// ```
pub struct Balancer {
    ebpf: Ebpf,
    maps: Maps,
    rings: Rings,
    limits: BalancerBuilder,
    netlink: Option<Netlink>,
    interfaces: BTreeMap<u32, Interface>,
    /// VLAN sub-interfaces of attached trunks, by ifindex (see `vlan`).
    vlan_links: BTreeMap<u32, crate::netlink::VlanLink>,
    services: BTreeMap<ServiceId, ServiceState>,
    free_services: VecDeque<u32>,
    /// Freed slots go to the back, so a slot is reused as late as possible.
    free_backends: VecDeque<u32>,
    generations: Vec<u32>,
    /// Neighbour entries this balancer asked the kernel to create, forgotten on drop.
    resolution_requests: BTreeSet<(u32, IpAddr)>,
    /// Tunnelled destinations' paths, by backend slot (see `tunnel`).
    tunnels: BTreeMap<u32, tunnel::TunnelPath>,
    /// Set when the state lives on bpffs beyond this process.
    pinned: Option<pinning::Pinned>,
    /// Health probes through the tunnel (see `probes`).
    probes: probes::Probes,
}

impl Balancer {
    /// Table sizes and other load-time choices.
    pub fn builder() -> BalancerBuilder {
        BalancerBuilder::default()
    }

    /// The verified balancer program, for running frames through it with
    /// `BPF_PROG_TEST_RUN` (fixtures, benchmarks).
    pub fn program(&self) -> Result<&Xdp, BalancerError> {
        program_ref(&self.ebpf, programs::BALANCER)
    }

    /// Flows pinned in the shared flow table. SYNs wait in a per-CPU cache until their
    /// flow's next packet, so they are not counted. Walks the table with a syscall per
    /// entry: for tests and diagnostics, not for a hot loop.
    pub fn flow_count(&self) -> Result<usize, BalancerError> {
        let flows: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(&self.maps.flows).map_err(BalancerError::map(maps::FLOWS, "open"))?;
        let flows6: HashMap<&MapData, FlowKey6, FlowValue> =
            HashMap::try_from(&self.maps.flows6)
                .map_err(BalancerError::map(maps::FLOWS6, "open"))?;
        Ok(
            flows.keys().filter(Result::is_ok).count()
                + flows6.keys().filter(Result::is_ok).count(),
        )
    }

    fn netlink(&mut self) -> Result<&mut Netlink, BalancerError> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::open()?);
        }
        self.netlink.as_mut().ok_or(BalancerError::Sys {
            call: "netlink socket",
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        })
    }

    /// Attaches to `iface`. Backends reached through it are served with `XDP_TX`, backends
    /// behind another attached interface through a redirect.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), BalancerError> {
        let ifindex = ifindex(iface)?;
        if self.interfaces.contains_key(&ifindex) {
            return Err(BalancerError::AlreadyAttached(iface.into()));
        }
        let mac = self.netlink()?.link(ifindex)?.mac.unwrap_or_default();
        self.attach_probes(iface)?;
        if !self.adopt_link(iface, ifindex)? {
            let program = xdp_mut(&mut self.ebpf, programs::BALANCER)?;
            let link = program
                .attach_to_if_index(ifindex, mode.xdp())
                .map_err(|e| attach_error(iface, mode, e))?;
            self.pin_link(iface, ifindex, link)?;
        }
        self.maps
            .egress
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| BalancerError::Sys {
                call: "adding the interface to the redirect map",
                source: std::io::Error::other(e.to_string()),
            })?;
        info!(iface, ifindex, mode = mode.name(), "attached");
        self.interfaces.insert(ifindex, Interface { mac });
        Ok(())
    }

    /// Adds a service with no destinations: its traffic is dropped until it has some.
    pub fn add_service(&mut self, service: Service) -> Result<(), BalancerError> {
        let id = service.id;
        if self.services.contains_key(&id) {
            return Err(BalancerError::ServiceExists(id));
        }
        let slot = self
            .free_services
            .pop_front()
            .ok_or(BalancerError::TooManyServices {
                id,
                max: self.limits.max_services,
            })?;
        self.rings.clear(slot);
        let value = ServiceValue {
            slot,
            flags: flags(service.scheduler),
        };
        if let Err(e) = self.write_service(&id, value) {
            self.free_services.push_front(slot);
            return Err(e);
        }
        self.services.insert(
            id,
            ServiceState {
                slot,
                scheduler: service.scheduler,
                forwarding: service.forwarding,
                icmp_echo: service.icmp_echo,
                destinations: BTreeMap::new(),
                retired: Traffic::default(),
            },
        );
        self.set_vip_refs(id.vip, 1)?;
        self.write_retired(slot, Traffic::default())?;
        info!(service = %id, "service added");
        Ok(())
    }

    /// Changes how a service hashes new flows; existing flows stay where they are.
    pub fn update_service(&mut self, service: Service) -> Result<(), BalancerError> {
        let state = self
            .services
            .get_mut(&service.id)
            .ok_or(BalancerError::NoService(service.id))?;
        let value = ServiceValue {
            slot: state.slot,
            flags: flags(service.scheduler),
        };
        state.scheduler = service.scheduler;
        state.forwarding = service.forwarding;
        state.icmp_echo = service.icmp_echo;
        self.write_service(&service.id, value)?;
        // The VIP's echo flag follows its services'.
        self.set_vip_refs(service.id.vip, 0)
    }

    /// Removes a service and its destinations; its VIP traffic passes to the kernel again.
    pub fn remove_service(&mut self, id: &ServiceId) -> Result<(), BalancerError> {
        let state = self
            .services
            .remove(id)
            .ok_or(BalancerError::NoService(*id))?;
        match id.vip {
            IpAddr::V4(v4) => self
                .maps
                .services
                .remove(&service_key(id, v4))
                .map_err(BalancerError::map(maps::SERVICES, "remove"))?,
            IpAddr::V6(v6) => self
                .maps
                .services6
                .remove(&service_key6(id, v6))
                .map_err(BalancerError::map(maps::SERVICES6, "remove"))?,
        }
        self.set_vip_refs(id.vip, -1)?;
        self.rings.clear(state.slot);
        for dest in state.destinations.values() {
            self.free_backend(dest.backend)?;
        }
        self.free_services.push_back(state.slot);
        info!(service = %id, "service removed");
        Ok(())
    }

    /// Every service with its destinations and counters.
    pub fn services(&self) -> Result<Vec<ServiceInfo>, BalancerError> {
        let mut out = Vec::with_capacity(self.services.len());
        for (id, state) in &self.services {
            let mut destinations = Vec::with_capacity(state.destinations.len());
            let mut traffic = state.retired;
            for (address, d) in &state.destinations {
                let counted = sum_traffic(&self.maps.backend_stats, d.backend)?;
                traffic = traffic + counted;
                destinations.push(DestinationInfo {
                    destination: Destination {
                        address: *address,
                        weight: d.weight,
                    },
                    drained: d.drained,
                    next_hop: d.neighbour,
                    traffic: counted,
                });
            }
            out.push(ServiceInfo {
                service: Service {
                    id: *id,
                    scheduler: state.scheduler,
                    forwarding: state.forwarding,
                    icmp_echo: state.icmp_echo,
                },
                destinations,
                traffic,
            });
        }
        Ok(out)
    }

    /// Re-reads the kernel's neighbour table and applies changes: newly resolved
    /// destinations start taking flows, changed MACs are followed. Returns how many
    /// destinations changed.
    pub fn refresh_neighbours(&mut self) -> Result<usize, BalancerError> {
        let table: BTreeMap<(u32, IpAddr), [u8; 6]> = self
            .netlink()?
            .neighbours()?
            .into_iter()
            .filter(|n| n.usable())
            .filter_map(|n| Some(((n.ifindex, n.addr), n.mac?)))
            .collect();
        let mut changed = self.refresh_tunnels()?;
        for (id, state) in &mut self.services {
            for (address, d) in &mut state.destinations {
                let hop = self
                    .tunnels
                    .get(&d.backend)
                    .map_or(*address, |t| t.next_hop);
                let now = table.get(&(d.egress, hop)).map(|mac| NextHop {
                    ifindex: d.egress,
                    mac: *mac,
                });
                // A neighbour that vanishes keeps its last MAC: stale beats nothing.
                if now.is_some() && now != d.neighbour {
                    info!(service = %id, backend = %address, mac = %fmt_mac(now.map(|n| n.mac).unwrap_or_default()), "neighbour resolved");
                    d.neighbour = now;
                    changed.push((*id, d.backend, now));
                }
            }
        }
        changed.sort_by_key(|c| c.1);
        changed.dedup_by_key(|c| c.1);
        for (id, backend, _) in &changed {
            let neighbour = self.dest_by_slot(*backend);
            self.write_backend(*backend, neighbour)?;
            self.rebuild(id)?;
        }
        self.refresh_probes()?;
        Ok(changed.len())
    }

    fn state(&self, id: &ServiceId) -> Result<&ServiceState, BalancerError> {
        self.services.get(id).ok_or(BalancerError::NoService(*id))
    }

    /// Recomputes a service's Maglev table from its usable destinations and stores the
    /// slots that changed.
    fn rebuild(&mut self, id: &ServiceId) -> Result<(), BalancerError> {
        let state = self.state(id)?;
        let members: Vec<Member> = state
            .destinations
            .iter()
            .filter(|(_, d)| !d.drained && d.neighbour.is_some())
            .map(|(address, d)| Member {
                id: d.backend,
                address: *address,
                weight: d.weight,
            })
            .collect();
        let table = maglev::build(&members, self.limits.ring_size)
            .map_err(|source| BalancerError::Maglev { id: *id, source })?;
        let changed = self.rings.write(state.slot, &table);
        debug!(service = %id, members = members.len(), changed, "Maglev table written");
        self.write_records(id)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // Links detach when `ebpf` drops, unless pinned: stopping removes the pins first.
        if let Some(p) = &self.pinned {
            if p.keep {
                info!(dir = %p.dir.display(), "leaving the data plane pinned");
                return;
            }
            pin::remove_all(&p.dir);
        }
        let requests = std::mem::take(&mut self.resolution_requests);
        if let Some(netlink) = self.netlink.as_mut() {
            for (ifindex, address) in requests {
                if let Err(e) = netlink.forget(ifindex, address) {
                    warn!(%address, error = %e, "could not remove the neighbour entry we asked for");
                }
            }
        }
    }
}

/// The index of the interface named `iface` in the calling thread's network namespace.
pub(crate) fn ifindex(iface: &str) -> Result<u32, BalancerError> {
    let cname = CString::new(iface).map_err(|_| BalancerError::UnknownInterface(iface.into()))?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(BalancerError::UnknownInterface(iface.into()));
    }
    Ok(ifindex)
}

/// The error for a refused XDP attachment: busy, or the mode with a hint.
pub(crate) fn attach_error(
    iface: &str,
    mode: AttachMode,
    e: aya::programs::ProgramError,
) -> BalancerError {
    if busy(&e) {
        return BalancerError::InterfaceBusy(iface.into());
    }
    BalancerError::Attach {
        iface: iface.into(),
        mode: mode.name(),
        hint: match mode {
            AttachMode::Native => " (the driver may not support native XDP: try generic mode)",
            AttachMode::Generic => "",
        },
        source: Box::new(e),
    }
}

/// The kernel's answer when another program already holds the interface's XDP hook.
fn busy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST))
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn service_key(id: &ServiceId, vip: Ipv4Addr) -> ServiceKey {
    ServiceKey {
        vip: addr::word(vip),
        port: id.port.to_be(),
        proto: id.protocol.number(),
        _pad: 0,
    }
}

fn service_key6(id: &ServiceId, vip: Ipv6Addr) -> ServiceKey6 {
    ServiceKey6 {
        vip: addr::words6(vip),
        port: id.port.to_be(),
        proto: id.protocol.number(),
        _pad: 0,
    }
}

fn flags(scheduler: Scheduler) -> u32 {
    match scheduler {
        Scheduler::FiveTuple => 0,
        Scheduler::SourceIp => SERVICE_F_STICKY,
    }
}

fn per_cpu<T: aya::Pod>(value: T) -> Result<PerCpuValues<T>, BalancerError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(call, source)| BalancerError::Sys { call, source })?;
    PerCpuValues::try_from(vec![value; cpus]).map_err(|source| BalancerError::Sys {
        call: "per-CPU value",
        source,
    })
}

pub(crate) fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
