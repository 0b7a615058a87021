//! Layouts the decapsulator (`fulcrum-decap`) and its loader share.
//!
//! Every packet counts exactly one [`DecapCounter`]; its prefix says what happened: `decap_`
//! the inner packet went to the kernel, `pass_` the frame went to the kernel untouched,
//! `drop_` it was dropped.

/// Map names.
pub mod maps {
    /// The host's IPv4 addresses (network order) tunnelled packets may be addressed to.
    pub const ADDRS4: &str = "DECAP_ADDRS4";
    /// The host's IPv6 addresses (four network-order words).
    pub const ADDRS6: &str = "DECAP_ADDRS6";
    /// UDP destination ports (network order) carrying GUE.
    pub const GUE_PORTS: &str = "DECAP_GUE_PORTS";
    /// Per-CPU [`DecapCounters`](super::DecapCounters), one entry.
    pub const STATS: &str = "DECAP_STATS";
}

/// The program's name in the object.
pub const PROGRAM: &str = "fulcrum_decap";

/// Value of [`ADDRS4`](maps::ADDRS4), [`ADDRS6`](maps::ADDRS6) and
/// [`GUE_PORTS`](maps::GUE_PORTS) entries: presence is what counts.
pub const PRESENT: u8 = 1;

macro_rules! decap_counters {
    ($($(#[$doc:meta])* $name:ident = $label:literal,)*) => {
        /// Why the decapsulator did what it did with a packet.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DecapCounter { $($(#[$doc])* $name,)* }

        impl DecapCounter {
            /// Every counter, in index order.
            pub const ALL: &[DecapCounter] = &[$(DecapCounter::$name,)*];
            /// Stable snake_case name for logs and the CLI.
            pub const fn label(self) -> &'static str {
                match self { $(DecapCounter::$name => $label,)* }
            }
        }
    };
}

decap_counters! {
    /// Decapsulated: IP-in-IP (outer protocol 4 or 41); the inner packet went to the kernel.
    DecapIpip = "decap_ipip",
    /// Decapsulated: GUE (variant 1, or variant 0 without options).
    DecapGue = "decap_gue",
    /// Pass: not IPv4 or IPv6, or the outer IP header cannot be read.
    PassNotIp = "pass_not_ip",
    /// Pass: IP, but neither IP-in-IP nor UDP to a GUE port.
    PassNotTunnel = "pass_not_tunnel",
    /// Pass: a tunnel packet for an address that is not this host's.
    PassNotLocal = "pass_not_local",
    /// Drop: UDP, GUE or inner IP header cut short (by the frame or the outer length).
    DropTruncated = "drop_truncated",
    /// Drop: outer IPv4 header length below 20 bytes or version not 4.
    DropBadOuter = "drop_bad_outer",
    /// Drop: outer IPv4 header with options.
    DropIpv4Options = "drop_ipv4_options",
    /// Drop: the outer packet is a fragment.
    DropFragment = "drop_fragment",
    /// Drop: outer IP or UDP length beyond the frame, or shorter than its headers.
    DropLength = "drop_length",
    /// Drop: GUE version neither 0 nor 1, or variant 1 with a version nibble not 4 or 6.
    DropGueVersion = "drop_gue_version",
    /// Drop: a GUE control message.
    DropGueControl = "drop_gue_control",
    /// Drop: GUE variant 0 with options (header length or flags not zero).
    DropGueOptions = "drop_gue_options",
    /// Drop: GUE variant 0 carrying a protocol other than IPv4 (4) or IPv6 (41).
    DropGueProtocol = "drop_gue_protocol",
    /// Drop: the inner header's version is not the family the outer header claims.
    DropInnerFamily = "drop_inner_family",
    /// Drop: the kernel refused to move the frame's head.
    DropAdjustHead = "drop_adjust_head",
}

/// Number of decapsulator counters.
pub const DECAP_COUNTERS: usize = DecapCounter::ALL.len();

/// Value of [`STATS`](maps::STATS): every counter in one per-CPU entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecapCounters {
    pub counts: [u64; DECAP_COUNTERS],
}

impl Default for DecapCounters {
    fn default() -> Self {
        Self {
            counts: [0; DECAP_COUNTERS],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for DecapCounters {}
