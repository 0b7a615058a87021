//! Loading: table sizes, the verified program and its maps, fresh or adopted from pins.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData},
    programs::{Program, ProgramError, Xdp},
};
use fulcrum_common::{
    CPUS_GLOBAL, DEFAULT_FLOW_CACHE, DEFAULT_FLOW_INSERT_BUDGET, FLOW_CACHE_MASK_GLOBAL,
    FLOW_INSERT_BUDGET_GLOBAL, Layout, RING_SIZE_GLOBAL, SHARE_FLOWS_GLOBAL, maps, probe, programs,
    talkers,
};

use super::{Balancer, Maps, OBJECT, flow_events, pinning};
use crate::{BalancerError, maglev, pin, ring::Rings};

/// Sizes of the data plane's tables, fixed when the program is loaded.
///
/// ```no_run
/// let balancer = fulcrum::Balancer::builder().max_flows(1 << 16).build()?;
/// # Ok::<(), fulcrum::BalancerError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BalancerBuilder {
    pub(super) ring_size: u32,
    pub(super) max_services: u32,
    pub(super) max_backends: u32,
    pub(super) max_flows: u32,
    pub(super) flow_cache: u32,
    pub(super) pin: Option<PathBuf>,
    pub(super) share_flows: bool,
    pub(super) insert_budget: u32,
    pub(super) talkers: super::talkers::TalkerSampling,
}

impl Default for BalancerBuilder {
    fn default() -> Self {
        Self {
            ring_size: maglev::DEFAULT_SIZE,
            max_services: 64,
            max_backends: 4096,
            max_flows: 1 << 20,
            flow_cache: DEFAULT_FLOW_CACHE,
            pin: None,
            share_flows: false,
            insert_budget: DEFAULT_FLOW_INSERT_BUDGET,
            talkers: Default::default(),
        }
    }
}

impl BalancerBuilder {
    /// Maglev table size per service: a prime, at least 100 × the largest backend set
    /// keeps shares within 1%.
    pub fn ring_size(mut self, ring_size: u32) -> Self {
        self.ring_size = ring_size;
        self
    }

    /// How many services the data plane can hold (each costs `4 × ring_size` bytes).
    pub fn max_services(mut self, max: u32) -> Self {
        self.max_services = max;
        self
    }

    /// How many backends, summed over all services.
    pub fn max_backends(mut self, max: u32) -> Self {
        self.max_backends = max;
        self
    }

    /// Size of the LRU flow table; when full, the least recently used flow is forgotten.
    pub fn max_flows(mut self, max: u32) -> Self {
        self.max_flows = max;
        self
    }

    /// Entries of each CPU's flow cache (a power of two, 32 bytes each): established
    /// flows found there skip the flow table's hash lookup.
    pub fn flow_cache(mut self, entries: u32) -> Self {
        self.flow_cache = entries;
        self
    }

    /// Keeps the maps and XDP links pinned in `dir` (on bpffs, see
    /// [`pin::instance_dir`](crate::pin::instance_dir)), so the data plane outlives the
    /// process. If `dir` holds state, it is adopted: services, destinations, flows and
    /// counters carry on, and the pinned sizes win over this builder's.
    pub fn pin(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pin = Some(dir.into());
        self
    }

    /// Reports every flow the data plane pins or re-pins through
    /// [`Balancer::flow_events`], for sharing with other balancers. Off by default, and
    /// then free: the verifier removes the code that reports.
    pub fn share_flows(mut self, on: bool) -> Self {
        self.share_flows = on;
        self
    }

    /// Flows each CPU may insert into the shared flow table per second (at least 1;
    /// [`DEFAULT_FLOW_INSERT_BUDGET`] by default). A flow is inserted once it proves itself
    /// with a second packet; over budget it is forwarded by Maglev and pinned by a later
    /// packet, so a flood cannot churn established flows out of a full table faster.
    /// Not pinned state: a restarted process sets its own.
    pub fn flow_insert_budget(mut self, per_second: u32) -> Self {
        self.insert_budget = per_second;
        self
    }

    /// Counts 1 in `sampling.sample` forwarded packets per client prefix for
    /// [`Balancer::talker_counts`]. Off (0) by default, and then free: the verifier
    /// removes the counting.
    pub fn top_talkers(mut self, sampling: super::talkers::TalkerSampling) -> Self {
        self.talkers = sampling;
        self
    }

    /// Loads and verifies the program and creates its maps (or opens the pinned ones);
    /// nothing is attached yet.
    pub fn build(mut self) -> Result<Balancer, BalancerError> {
        let found = match &self.pin {
            Some(dir) => pinning::prepare(dir)?,
            None => None,
        };
        if let Some(layout) = &found {
            self.ring_size = layout.ring_size;
            self.max_services = layout.max_services;
            self.max_backends = layout.max_backends;
            self.max_flows = layout.max_flows;
            self.flow_cache = layout.flow_cache;
        }
        if !maglev::is_prime(self.ring_size) {
            return Err(BalancerError::Limit {
                what: "ring size",
                why: format!("{} is not a prime", self.ring_size),
            });
        }
        let cells = Rings::elements(self.max_services, self.ring_size);
        if self.max_services == 0 || cells > u64::from(u32::MAX / 8) {
            return Err(BalancerError::Limit {
                what: "max services",
                why: format!(
                    "{} services × {} slots does not fit one map",
                    self.max_services, self.ring_size
                ),
            });
        }
        for (what, v) in [
            ("max backends", self.max_backends),
            ("max flows", self.max_flows),
        ] {
            if v < 2 {
                return Err(BalancerError::Limit {
                    what,
                    why: format!("{v} is too small"),
                });
            }
        }
        if self.insert_budget == 0 {
            return Err(BalancerError::Limit {
                what: "flow insert budget",
                why: "0 would never pin a flow".into(),
            });
        }
        if !self.flow_cache.is_power_of_two() {
            return Err(BalancerError::Limit {
                what: "flow cache",
                why: format!("{} is not a power of two", self.flow_cache),
            });
        }
        if self.talkers.ipv4_prefix > 32 || self.talkers.ipv6_prefix > 128 {
            return Err(BalancerError::Limit {
                what: "top talkers prefix",
                why: format!(
                    "/{} (IPv4) or /{} (IPv6) is longer than an address",
                    self.talkers.ipv4_prefix, self.talkers.ipv6_prefix
                ),
            });
        }
        let talker_mask4 = talkers::mask_word(u32::from(self.talkers.ipv4_prefix));
        let talker_mask6 = talkers::mask6(u32::from(self.talkers.ipv6_prefix));
        let cache_mask = self.flow_cache - 1;
        let cpus = u32::try_from(
            aya::util::nr_cpus().map_err(|(call, source)| BalancerError::Sys { call, source })?,
        )
        .unwrap_or(u32::MAX);
        let share_flows = u32::from(self.share_flows);
        let event_ring = flow_events::ring_bytes(self.share_flows);
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = match &self.pin {
            Some(dir) => maps::PINNED
                .iter()
                .map(|m| (*m, pin::map_path(dir, m)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global(RING_SIZE_GLOBAL, &self.ring_size, true)
            .override_global(FLOW_CACHE_MASK_GLOBAL, &cache_mask, true)
            .override_global(CPUS_GLOBAL, &cpus, true)
            .override_global(SHARE_FLOWS_GLOBAL, &share_flows, true)
            .override_global(FLOW_INSERT_BUDGET_GLOBAL, &self.insert_budget, true)
            .override_global(talkers::SAMPLE_GLOBAL, &self.talkers.sample, true)
            .override_global(talkers::MASK4_GLOBAL, &talker_mask4, true)
            .override_global(talkers::MASK6_GLOBAL, &talker_mask6, true)
            .map_max_entries(talkers::MAP, talkers::DEFAULT_ENTRIES)
            .map_max_entries(maps::FLOW_EVENTS, event_ring)
            .map_max_entries(maps::FLOW_CACHE, self.flow_cache)
            .map_max_entries(maps::FLOW_CACHE6, self.flow_cache)
            .map_max_entries(maps::FLOW_EPOCH, self.flow_cache)
            .map_max_entries(maps::VIPS, self.max_services)
            .map_max_entries(maps::VIPS6, self.max_services)
            .map_max_entries(maps::SERVICES, self.max_services)
            .map_max_entries(maps::SERVICES6, self.max_services)
            .map_max_entries(maps::MAGLEV, cells as u32)
            .map_max_entries(maps::BACKENDS, self.max_backends)
            .map_max_entries(maps::FLOWS, self.max_flows)
            .map_max_entries(maps::FLOWS6, self.max_flows)
            .map_max_entries(maps::BACKEND_STATS, self.max_backends)
            .map_max_entries(maps::BACKEND_RECORDS, self.max_backends)
            .map_max_entries(maps::SERVICE_RECORDS, self.max_services)
            .map_max_entries(probe::maps::PROBES, self.max_backends)
            .load(OBJECT)
            .map_err(|e| BalancerError::Load(Box::new(e)))?;
        load_xdp(&mut ebpf, programs::BALANCER)?;
        let probes = super::probes::Probes::load(&mut ebpf, self.max_backends)?;

        let ring_map = match take(&mut ebpf, maps::MAGLEV)? {
            Map::Array(data) => data,
            _ => return Err(wrong_type(maps::MAGLEV)),
        };
        let rings = Rings::new(ring_map, self.max_services, self.ring_size)?;
        let maps = Maps {
            vips: typed(&mut ebpf, maps::VIPS)?,
            vips6: typed(&mut ebpf, maps::VIPS6)?,
            vip_filter: typed(&mut ebpf, maps::VIP_FILTER)?,
            services: typed(&mut ebpf, maps::SERVICES)?,
            services6: typed(&mut ebpf, maps::SERVICES6)?,
            backends: typed(&mut ebpf, maps::BACKENDS)?,
            egress: typed(&mut ebpf, maps::EGRESS)?,
            global_stats: typed(&mut ebpf, maps::GLOBAL_STATS)?,
            backend_stats: typed(&mut ebpf, maps::BACKEND_STATS)?,
            flows: take(&mut ebpf, maps::FLOWS)?,
            flows6: take(&mut ebpf, maps::FLOWS6)?,
            backend_records: typed(&mut ebpf, maps::BACKEND_RECORDS)?,
            service_records: typed(&mut ebpf, maps::SERVICE_RECORDS)?,
        };
        let mut layout: Array<MapData, Layout> = typed(&mut ebpf, maps::LAYOUT)?;
        let mut balancer = Balancer {
            ebpf,
            maps,
            rings,
            limits: self.clone(),
            netlink: None,
            interfaces: BTreeMap::new(),
            vlan_links: BTreeMap::new(),
            services: BTreeMap::new(),
            free_services: (0..self.max_services).collect(),
            free_backends: (1..self.max_backends).collect(),
            generations: vec![0; self.max_backends as usize],
            resolution_requests: BTreeSet::new(),
            tunnels: Default::default(),
            pinned: self.pin.clone().map(|dir| pinning::Pinned {
                unclaimed: pin::pinned_links(&dir).into_iter().collect(),
                dir,
                adopted: found.is_some(),
                keep: false,
            }),
            probes,
        };
        if found.is_some() {
            balancer.adopt()?;
        } else if self.pin.is_some() {
            // Written last: a directory without it is a start that did not finish.
            let fresh = pin::layout(
                self.ring_size,
                self.max_services,
                self.max_backends,
                self.max_flows,
                self.flow_cache,
            );
            layout
                .set(0, fresh, 0)
                .map_err(BalancerError::map(maps::LAYOUT, "write"))?;
        }
        Ok(balancer)
    }
}

/// Loads (verifies) the program. The verifier gives up with EAGAIN when a signal reaches
/// the loading thread mid-verification; like libbpf, a few attempts are made before that
/// is an error.
fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<(), BalancerError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 1;
    loop {
        match xdp_mut(ebpf, name)?.load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < ATTEMPTS =>
            {
                tracing::debug!(program = name, attempt, "verification interrupted, again");
                attempt += 1;
            }
            Err(e) => return Err(program_error(format!("verifying program {name}"), e)),
        }
    }
}

/// The XDP program `name` of a loaded object.
pub(crate) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, BalancerError> {
    program_mut(ebpf, name)
}

/// Program `name` of a loaded object, as the type it must be (`Xdp`, `SchedClassifier`).
pub(crate) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, BalancerError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| not_found(name))?
        .try_into()
        .map_err(|e| program_error(format!("program {name}"), e))
}

/// [`program_mut`] for reading: running frames through a verified program.
pub(crate) fn program_ref<'a, T>(ebpf: &'a Ebpf, name: &str) -> Result<&'a T, BalancerError>
where
    &'a T: TryFrom<&'a Program, Error = ProgramError>,
{
    ebpf.program(name)
        .ok_or_else(|| not_found(name))?
        .try_into()
        .map_err(|e| program_error(format!("program {name}"), e))
}

fn not_found(name: &str) -> BalancerError {
    program_error(format!("finding program {name}"), ProgramError::NotLoaded)
}

pub(crate) fn program_error(what: String, e: ProgramError) -> BalancerError {
    BalancerError::Program {
        what,
        source: Box::new(e),
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BalancerError> {
    ebpf.take_map(name).ok_or_else(|| wrong_type(name))
}

pub(crate) fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, BalancerError> {
    T::try_from(take(ebpf, name)?).map_err(BalancerError::map(name, "open"))
}

pub(super) fn wrong_type(name: &'static str) -> BalancerError {
    BalancerError::Map {
        map: name,
        op: "open",
        source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
    }
}
