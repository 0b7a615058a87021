//! Reading the data plane's counters: global ones, and a backend slot's traffic.

use aya::maps::{MapData, PerCpuArray};
use fulcrum_common::{
    COUNTERS, Counter, FlowEventCounters, FlowInserts, GlobalCounters, PACKET_COUNTERS,
    TrafficCounters, maps,
};

use super::{Balancer, builder::wrong_type};
use crate::{BalancerError, stats::GlobalStats};

impl Balancer {
    /// Global counters, summed over CPUs.
    pub fn stats(&self) -> Result<GlobalStats, BalancerError> {
        let values = self
            .maps
            .global_stats
            .get(&0, 0)
            .map_err(BalancerError::map(maps::GLOBAL_STATS, "read"))?;
        let mut total = GlobalCounters::default();
        for cpu in values.iter() {
            for (t, v) in total.counts.iter_mut().zip(cpu.counts.iter()) {
                *t += v;
            }
        }
        let events = self.flow_event_counters()?;
        let mut counts = [0; COUNTERS];
        counts[..PACKET_COUNTERS].copy_from_slice(&total.counts);
        counts[Counter::FlowEventsEmitted as usize] = events.emitted;
        counts[Counter::FlowEventsLost as usize] = events.lost;
        let inserts = self.flow_inserts()?;
        counts[Counter::FlowPinned as usize] = inserts.pinned;
        counts[Counter::FlowPinOverBudget as usize] = inserts.over_budget;
        Ok(GlobalStats(counts))
    }

    fn flow_event_counters(&self) -> Result<FlowEventCounters, BalancerError> {
        let name = maps::FLOW_EVENT_STATS;
        let map = self.ebpf.map(name).ok_or_else(|| wrong_type(name))?;
        let array: PerCpuArray<&MapData, FlowEventCounters> =
            PerCpuArray::try_from(map).map_err(BalancerError::map(name, "open"))?;
        let values = array.get(&0, 0).map_err(BalancerError::map(name, "read"))?;
        Ok(values
            .iter()
            .fold(FlowEventCounters::default(), |t, c| FlowEventCounters {
                emitted: t.emitted + c.emitted,
                lost: t.lost + c.lost,
            }))
    }

    fn flow_inserts(&self) -> Result<FlowInserts, BalancerError> {
        let name = maps::FLOW_INSERTS;
        let map = self.ebpf.map(name).ok_or_else(|| wrong_type(name))?;
        let array: PerCpuArray<&MapData, FlowInserts> =
            PerCpuArray::try_from(map).map_err(BalancerError::map(name, "open"))?;
        let values = array.get(&0, 0).map_err(BalancerError::map(name, "read"))?;
        Ok(values
            .iter()
            .fold(FlowInserts::default(), |t, c| FlowInserts {
                pinned: t.pinned + c.pinned,
                over_budget: t.over_budget + c.over_budget,
                ..t
            }))
    }
}

/// A backend slot's traffic, summed over CPUs.
pub(super) fn sum_traffic(
    map: &PerCpuArray<MapData, TrafficCounters>,
    index: u32,
) -> Result<crate::Traffic, BalancerError> {
    let values = map
        .get(&index, 0)
        .map_err(BalancerError::map("traffic counters", "read"))?;
    Ok(values.iter().fold(crate::Traffic::default(), |t, c| {
        t + crate::Traffic {
            packets: c.packets,
            bytes: c.bytes,
            new_flows: c.new_flows,
        }
    }))
}
