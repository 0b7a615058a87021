//! `flow_table:`: how the data plane's shared flow table is guarded against floods.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::validate::Checker;

/// The shared flow table. Read when the data plane is loaded: a change takes a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTable {
    /// `insert_budget` (`10000`): flows each CPU may insert into the table per second. A
    /// flow is inserted once a second packet proves it; over budget it is still
    /// forwarded (by Maglev) and pinned by a later packet, so a flood of flows cannot
    /// churn established ones out of a full table faster than this.
    pub insert_budget: u32,
}

impl FlowTable {
    /// `insert_budget` when not given (the data plane's own default).
    pub const DEFAULT_INSERT_BUDGET: u32 = 10_000;
}

impl Default for FlowTable {
    fn default() -> Self {
        Self {
            insert_budget: Self::DEFAULT_INSERT_BUDGET,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowTable {
    insert_budget: Option<Spanned<u32>>,
}

impl Checker<'_> {
    pub(crate) fn flow_table(&mut self, raw: Option<&Spanned<RawFlowTable>>) -> Option<FlowTable> {
        let Some(raw) = raw else {
            return Some(FlowTable::default());
        };
        let insert_budget = match &raw.value.insert_budget {
            None => FlowTable::DEFAULT_INSERT_BUDGET,
            Some(b) if b.value > 0 => b.value,
            Some(b) => {
                return self.report(
                    &b.referenced,
                    "flow_table.insert_budget",
                    "0 would never pin a flow; give inserts per CPU per second, like 10000".into(),
                );
            }
        };
        Some(FlowTable { insert_budget })
    }
}
