//! Top talkers: the data plane's sampled per-prefix counts (see
//! `fulcrum_common::talkers`) read back per service, and [`TopTalkers`], which turns two
//! reads into the busiest prefixes per second.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::maps::{MapData, PerCpuHashMap};
use fulcrum_common::talkers::{self, FAMILY_IPV4, TalkerCounts, TalkerKey};

use super::{Balancer, builder::wrong_type};
use crate::{BalancerError, ServiceId};

/// What the data plane counts for top talkers, fixed at load time
/// ([`BalancerBuilder::top_talkers`](crate::BalancerBuilder::top_talkers)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TalkerSampling {
    /// 1 in `sample` forwarded packets is counted; 0 counts nothing (and costs nothing).
    pub sample: u32,
    /// Client prefix length the data plane keys IPv4 counts by: the longest one wanted,
    /// shorter ones are sums of it.
    pub ipv4_prefix: u8,
    /// Likewise for IPv6.
    pub ipv6_prefix: u8,
}

impl Default for TalkerSampling {
    fn default() -> Self {
        Self {
            sample: 0,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
        }
    }
}

/// One client prefix's traffic to one backend slot since it was first counted, scaled
/// by the sampling rate: an estimate, not an exact count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TalkerCount {
    pub service: ServiceId,
    pub backend_slot: u32,
    /// The client's address masked to the sampled prefix length.
    pub prefix: IpAddr,
    pub packets: u64,
    pub new_flows: u64,
}

/// A client prefix and its estimated rates towards one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Talker {
    pub prefix: IpAddr,
    pub len: u8,
    pub packets_per_second: f64,
    pub new_flows_per_second: f64,
}

/// A service's busiest prefixes, per prefix length busiest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceTalkers {
    pub service: ServiceId,
    pub talkers: Vec<Talker>,
}

impl Balancer {
    /// How the data plane samples top talkers.
    pub fn talker_sampling(&self) -> TalkerSampling {
        self.limits.talkers
    }

    /// The data plane's per-prefix counts, summed over CPUs and scaled by the sampling
    /// rate, for backend slots that belong to a service. Empty while sampling is off.
    pub fn talker_counts(&self) -> Result<Vec<TalkerCount>, BalancerError> {
        let sampling = self.limits.talkers;
        if sampling.sample == 0 {
            return Ok(Vec::new());
        }
        let owners: HashMap<u32, ServiceId> = self
            .services
            .iter()
            .flat_map(|(id, s)| s.destinations.values().map(|d| (d.backend, *id)))
            .collect();
        let name = talkers::MAP;
        let map = self.ebpf.map(name).ok_or_else(|| wrong_type(name))?;
        let table: PerCpuHashMap<&MapData, TalkerKey, TalkerCounts> =
            PerCpuHashMap::try_from(map).map_err(BalancerError::map(name, "open"))?;
        let scale = u64::from(sampling.sample);
        let mut out = Vec::new();
        for entry in table.iter() {
            // An entry evicted between the key walk and its read is skipped.
            let Ok((key, values)) = entry else { continue };
            let Some(service) = owners.get(&key.backend_slot) else {
                continue;
            };
            let (packets, new_flows) = values
                .iter()
                .fold((0u64, 0u64), |(p, n), c| (p + c.packets, n + c.new_flows));
            out.push(TalkerCount {
                service: *service,
                backend_slot: key.backend_slot,
                prefix: prefix_addr(&key),
                packets: packets.saturating_mul(scale),
                new_flows: new_flows.saturating_mul(scale),
            });
        }
        Ok(out)
    }
}

fn prefix_addr(key: &TalkerKey) -> IpAddr {
    if key.family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(key.prefix[0])))
    } else {
        let mut octets = [0u8; 16];
        for (chunk, w) in octets.chunks_exact_mut(4).zip(key.prefix.iter()) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(octets))
    }
}

/// `addr` with only its first `len` bits.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

type RawKey = (ServiceId, u32, IpAddr);
/// Packets and new flows of each raw key, as last read.
type Counts = HashMap<RawKey, (u64, u64)>;

/// Per-second rates from successive reads of [`Balancer::talker_counts`]: prefixes of
/// every configured length (each no longer than the sampled one), the `top` busiest per
/// service and length.
#[derive(Debug)]
pub struct TopTalkers {
    ipv4_prefixes: Vec<u8>,
    ipv6_prefixes: Vec<u8>,
    top: usize,
    last: Option<(Instant, Counts)>,
}

impl TopTalkers {
    pub fn new(ipv4_prefixes: Vec<u8>, ipv6_prefixes: Vec<u8>, top: usize) -> Self {
        Self {
            ipv4_prefixes,
            ipv6_prefixes,
            top,
            last: None,
        }
    }

    /// Reads the balancer's counts now; the rates since the previous call (none on the
    /// first).
    pub fn sample(&mut self, lb: &Balancer) -> Result<Vec<ServiceTalkers>, BalancerError> {
        Ok(self.update(lb.talker_counts()?, Instant::now()))
    }

    /// The rates between the previous counts and `counts`, read at `at`. A count below
    /// its previous value was evicted and counted again: all of it is new.
    pub fn update(&mut self, counts: Vec<TalkerCount>, at: Instant) -> Vec<ServiceTalkers> {
        let now: Counts = counts
            .iter()
            .map(|c| {
                (
                    (c.service, c.backend_slot, c.prefix),
                    (c.packets, c.new_flows),
                )
            })
            .collect();
        let Some((then, before)) = self.last.replace((at, now)) else {
            return Vec::new();
        };
        let secs = at.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return Vec::new();
        }
        // (service, len, prefix) -> (packets, new flows) since the previous read.
        let mut sums: BTreeMap<(ServiceId, u8, IpAddr), (u64, u64)> = BTreeMap::new();
        for c in &counts {
            let (p0, n0) = before
                .get(&(c.service, c.backend_slot, c.prefix))
                .copied()
                .unwrap_or((0, 0));
            let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
            let d = (delta(c.packets, p0), delta(c.new_flows, n0));
            if d == (0, 0) {
                continue;
            }
            let lens = match c.prefix {
                IpAddr::V4(_) => &self.ipv4_prefixes,
                IpAddr::V6(_) => &self.ipv6_prefixes,
            };
            for len in lens {
                let e = sums
                    .entry((c.service, *len, mask(c.prefix, *len)))
                    .or_default();
                e.0 += d.0;
                e.1 += d.1;
            }
        }
        let mut per: BTreeMap<(ServiceId, u8), Vec<Talker>> = BTreeMap::new();
        for ((service, len, prefix), (p, n)) in sums {
            per.entry((service, len)).or_default().push(Talker {
                prefix,
                len,
                packets_per_second: p as f64 / secs,
                new_flows_per_second: n as f64 / secs,
            });
        }
        let mut out: Vec<ServiceTalkers> = Vec::new();
        for ((service, _), mut talkers) in per {
            talkers.sort_by(|a, b| {
                b.packets_per_second
                    .total_cmp(&a.packets_per_second)
                    .then(b.new_flows_per_second.total_cmp(&a.new_flows_per_second))
                    .then(a.prefix.cmp(&b.prefix))
            });
            talkers.truncate(self.top);
            match out.last_mut() {
                Some(last) if last.service == service => last.talkers.extend(talkers),
                _ => out.push(ServiceTalkers { service, talkers }),
            }
        }
        out
    }
}
