//! Global counters: every action and every reason a packet took its path, one index each.

use core::mem::size_of;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident = $label:literal,)*) => {
        /// Global counters: one per action, one per reason a packet took its path.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($(#[$doc])* $name,)* }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &[Counter] = &[$(Counter::$name,)*];
            /// Stable snake_case name for logs, metrics and the CLI.
            pub const fn label(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }
        }
    };
}

counters! {
    /// Action: sent back out of the receiving interface.
    Tx = "tx",
    /// Action: redirected to another interface.
    Redirect = "redirect",
    /// Action: handed to the kernel.
    Pass = "pass",
    /// Action: dropped.
    Drop = "drop",
    /// Pass: frame shorter than its Ethernet (and VLAN) header.
    PassMalformedL2 = "pass_malformed_l2",
    /// Pass: neither IPv4 nor IPv6 (ARP, LLDP, ...).
    PassNotIp = "pass_not_ip",
    /// Pass: IP header cut short, so the destination cannot be read.
    PassMalformedIp = "pass_malformed_ip",
    /// Pass: destination is not a VIP.
    PassNotVip = "pass_not_vip",
    /// Pass: a VIP, but no service for this port and protocol.
    PassNoService = "pass_no_service",
    /// Drop: VIP traffic with IPv4 version or header length invalid.
    DropBadIpHeader = "drop_bad_ip_header",
    /// Drop: VIP traffic whose IPv4 total length exceeds the frame.
    DropIpLength = "drop_ip_length",
    /// Drop: VIP traffic with IPv4 options.
    DropIpOptions = "drop_ip_options",
    /// Drop: VIP traffic that is an IPv4 fragment.
    DropFragment = "drop_fragment",
    /// Drop: VIP traffic whose TCP/UDP header is cut short.
    DropTruncatedL4 = "drop_truncated_l4",
    /// Drop: VIP traffic whose TCP data offset is below 5 words or whose UDP length is
    /// below 8 bytes.
    DropBadL4Header = "drop_bad_l4_header",
    /// Drop: the service has no usable backend.
    DropNoBackend = "drop_no_backend",
    /// Drop: the chosen backend's MAC is not known yet.
    DropBackendUnresolved = "drop_backend_unresolved",
    /// Drop: redirect to the egress interface failed.
    DropRedirect = "drop_redirect",
    /// Flow table hit.
    FlowHit = "flow_hit",
    /// New TCP flow from a SYN.
    FlowNewSyn = "flow_new_syn",
    /// New UDP flow.
    FlowNewUdp = "flow_new_udp",
    /// TCP non-SYN with no flow entry: state was lost (restart, eviction, another balancer).
    FlowMissNonSyn = "flow_miss_non_syn",
    /// Flow entry whose backend has since been removed: chosen again.
    FlowStale = "flow_stale",
    /// Pass: ICMP to a VIP that is neither an echo request answered nor an error for a
    /// flow, and ICMPv6 neighbour discovery.
    PassIcmp = "pass_icmp",
    /// Drop: IPv6 VIP traffic with more than 4 extension headers, or one that cannot be
    /// skipped.
    DropIpv6ExtHeaders = "drop_ipv6_ext_headers",
    /// Tx: an ICMP echo request to a VIP answered.
    IcmpEchoReply = "icmp_echo_reply",
    /// An ICMP frag-needed / ICMPv6 packet-too-big sent to the inner flow's backend.
    IcmpErrorForwarded = "icmp_error_forwarded",
    /// An oversize tunnelled packet answered with frag-needed / packet-too-big.
    IcmpTooBigSent = "icmp_too_big_sent",
    /// Drop: oversize for the tunnel and fragmentation allowed (XDP cannot fragment).
    DropTooBig = "drop_too_big",
    /// Drop: ICMP to a VIP cut short, or with an unreadable inner header.
    DropBadIcmp = "drop_bad_icmp",
    /// Drop: the frame could not be grown for encapsulation.
    DropEncap = "drop_encap",
    /// Flow sharing: a new or changed flow entry written to the event ring (counted in
    /// [`FLOW_EVENT_STATS`](crate::maps::FLOW_EVENT_STATS), like every counter after it).
    FlowEventsEmitted = "flow_events_emitted",
    /// Flow sharing: a new or changed flow entry not shared because the ring was full
    /// (user space reads it too slowly).
    FlowEventsLost = "flow_events_lost",
    /// A flow proven by a further packet and inserted into the shared flow table by the
    /// data plane (counted in [`FLOW_INSERTS`](crate::maps::FLOW_INSERTS), like the next).
    FlowPinned = "flow_pinned",
    /// A proven flow's packet forwarded but not pinned: this CPU's inserts for the second
    /// were spent (see `FLOW_INSERT_BUDGET`); a later packet pins it.
    FlowPinOverBudget = "flow_pin_over_budget",
}

/// Number of global counters.
pub const COUNTERS: usize = Counter::ALL.len();

/// Counters kept in [`GLOBAL_STATS`](crate::maps::GLOBAL_STATS): those before
/// [`Counter::FlowEventsEmitted`]. The rest live in
/// [`FLOW_EVENT_STATS`](crate::maps::FLOW_EVENT_STATS) and
/// [`FLOW_INSERTS`](crate::maps::FLOW_INSERTS).
pub const PACKET_COUNTERS: usize = Counter::FlowEventsEmitted as usize;

/// Value of [`GLOBAL_STATS`](crate::maps::GLOBAL_STATS): all packet counters in one per-CPU
/// entry, so a packet pays one map lookup for its action and its reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalCounters {
    pub counts: [u64; PACKET_COUNTERS],
}

impl Default for GlobalCounters {
    fn default() -> Self {
        Self {
            counts: [0; PACKET_COUNTERS],
        }
    }
}

const _: () = assert!(COUNTERS == PACKET_COUNTERS + 4);
// The size GLOBAL_STATS is pinned with in layout version 2: new counters of the data
// plane need a new layout version, or a map of their own as flow events have.
const _: () = assert!(size_of::<GlobalCounters>() == 31 * 8);
