//! Layouts of the health-probe path: the socket marks the probe program recognises and
//! its counters.
//!
//! A health probe for a tunnelled backend is an ordinary socket connected to the VIP,
//! marked `PROBE_MARK | id`. The probe program on the balancer's interfaces' egress
//! encapsulates the marked packets to the backend of entry `id` in
//! [`PROBES`](maps::PROBES), exactly as the data plane would, so only a backend that holds
//! the VIP answers.

/// Map names.
pub mod maps {
    /// Probe id (the whole mark) to the backend's forwarding data, a `BackendValue`.
    pub const PROBES: &str = "PROBES";
    /// Per-CPU [`ProbeCounters`](super::ProbeCounters), one entry.
    pub const PROBE_STATS: &str = "PROBE_STATS";
}

/// The program's name in the object.
pub const PROGRAM: &str = "fulcrum_probe";

/// The mark bits that say "a Fulcrum probe" (ASCII "FU" in the upper half).
pub const PROBE_MARK: u32 = 0x4655_0000;
/// The bits of a mark compared with [`PROBE_MARK`]; the rest is the probe's id.
pub const PROBE_MARK_MASK: u32 = 0xffff_0000;
/// Ids fit in the bits outside [`PROBE_MARK_MASK`].
pub const MAX_PROBES: u32 = !PROBE_MARK_MASK + 1;

/// Counters of the probe program, one per outcome of a marked packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// Encapsulated and sent to the backend.
    pub sent: u64,
    /// Dropped: no entry for the mark, or its next hop not resolved yet.
    pub no_path: u64,
    /// Dropped: not IP, or the packet could not be grown.
    pub failed: u64,
}
