//! Counters as user space reports them, summed over CPUs.

use fulcrum_common::{COUNTERS, Counter};

/// Packets, bytes and new flows of one service or destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole frames).
    pub bytes: u64,
    /// Flows newly assigned.
    pub new_flows: u64,
}

impl std::ops::Add for Traffic {
    type Output = Traffic;

    fn add(self, other: Traffic) -> Traffic {
        Traffic {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            new_flows: self.new_flows + other.new_flows,
        }
    }
}

/// The data plane's global counters: one per action and one per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalStats(pub(crate) [u64; COUNTERS]);

impl GlobalStats {
    /// One counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(counter as usize).copied().unwrap_or(0)
    }

    /// Every counter with its value, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }

    /// What changed since `earlier`, counter by counter.
    pub fn since(&self, earlier: &GlobalStats) -> GlobalStats {
        let mut out = *self;
        for (o, e) in out.0.iter_mut().zip(earlier.0.iter()) {
            *o = o.saturating_sub(*e);
        }
        out
    }
}

impl Default for GlobalStats {
    fn default() -> Self {
        Self([0; COUNTERS])
    }
}
