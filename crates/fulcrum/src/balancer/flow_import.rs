//! Flows other balancers pinned, taken into this one's flow table, so a flow that
//! arrives here after its balancer died keeps its backend.

use aya::maps::{Array, HashMap, MapData};
use fulcrum_common::{FlowKey, FlowValue, flow_cache_index, maps};
use tracing::warn;

use super::{Balancer, builder::wrong_type, flow_records::flow_key, flow_table};
use crate::{BalancerError, FlowRecord};

/// What [`Balancer::import_flows`] did with each record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Written to the flow table: new here, or pinned here to another backend before.
    pub imported: usize,
    /// The flow table already held exactly this.
    pub unchanged: usize,
    /// No such service here (or not an IPv4 flow, or a port the service does not
    /// serve): the flow, if it comes, is handled as this balancer's configuration says.
    pub unknown_service: usize,
    /// The backend is not in that service here, or not usable (its MAC is not resolved):
    /// the flow's next packet is balanced afresh and counted as a miss.
    pub unknown_backend: usize,
    /// The kernel refused the write (logged).
    pub failed: usize,
}

impl Balancer {
    /// Pins each record's flow to its backend in the flow table, resolving the service
    /// and backend by address to this balancer's slots. A flow the table holds with
    /// another backend is overwritten, and every CPU's cached copy of it dropped.
    pub fn import_flows(&mut self, records: &[FlowRecord]) -> ImportReport {
        let mut report = ImportReport::default();
        let mut writes: Vec<(FlowKey, FlowValue)> = Vec::with_capacity(records.len());
        for r in records {
            match self.resolve_record(r) {
                Ok(write) => writes.push(write),
                Err(Refused::Service) => report.unknown_service += 1,
                Err(Refused::Backend) => report.unknown_backend += 1,
            }
        }
        if writes.is_empty() {
            return report;
        }
        if let Err(e) = self.write_flows(&writes, &mut report) {
            warn!(error = %e, "importing flows failed");
            report.failed = writes.len() - report.imported - report.unchanged;
        }
        report
    }

    /// The flow table entry a record asks for.
    fn resolve_record(&self, r: &FlowRecord) -> Result<(FlowKey, FlowValue), Refused> {
        let id = r.service().ok_or(Refused::Service)?;
        let key = flow_key(r).ok_or(Refused::Service)?;
        if id.port != 0 && id.port != r.vip.port() {
            return Err(Refused::Service);
        }
        let state = self.services.get(&id).ok_or(Refused::Service)?;
        let dest = state
            .destinations
            .get(&r.backend)
            .filter(|d| d.neighbour.is_some())
            .ok_or(Refused::Backend)?;
        let generation = self
            .generations
            .get(dest.backend as usize)
            .copied()
            .ok_or(Refused::Backend)?;
        Ok((
            key,
            FlowValue {
                backend: dest.backend,
                generation,
            },
        ))
    }

    fn write_flows(
        &mut self,
        writes: &[(FlowKey, FlowValue)],
        report: &mut ImportReport,
    ) -> Result<(), BalancerError> {
        let mask = self.limits.flow_cache - 1;
        let flows: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(&self.maps.flows).map_err(BalancerError::map(maps::FLOWS, "open"))?;
        let mut changed = Vec::with_capacity(writes.len());
        let mut moved = Vec::new();
        for (key, value) in writes {
            match flows.get(key, 0).ok() {
                Some(held) if held == *value => report.unchanged += 1,
                held => {
                    if held.is_some() {
                        moved.push(flow_cache_index(key) & mask);
                    }
                    changed.push((*key, *value));
                }
            }
        }
        let written = flow_table::write(&mut self.maps.flows, &changed)?;
        report.imported += written;
        report.failed += changed.len() - written;
        if written < changed.len() {
            warn!(
                refused = changed.len() - written,
                "the flow table refused imported flows"
            );
        }
        // CPUs that cached an old pin of a moved flow look in the table again.
        let epochs = self
            .ebpf
            .map_mut(maps::FLOW_EPOCH)
            .ok_or_else(|| wrong_type(maps::FLOW_EPOCH))?;
        let mut epochs: Array<&mut MapData, u64> =
            Array::try_from(epochs).map_err(BalancerError::map(maps::FLOW_EPOCH, "open"))?;
        for index in moved {
            let epoch = epochs
                .get(&index, 0)
                .map_err(BalancerError::map(maps::FLOW_EPOCH, "read"))?;
            epochs
                .set(index, epoch.wrapping_add(1), 0)
                .map_err(BalancerError::map(maps::FLOW_EPOCH, "write"))?;
        }
        Ok(())
    }
}

enum Refused {
    Service,
    Backend,
}
