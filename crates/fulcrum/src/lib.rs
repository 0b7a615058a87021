//! Fulcrum's data plane as a library: an L2 DSR load balancer in XDP, driven through
//! services and destinations in the spirit of the IPVS API.
//!
//! [`Balancer`] loads the XDP program, attaches it to interfaces, and keeps its maps in
//! step with the services you describe. Backends' MACs come from the kernel's neighbour
//! table ([`netlink`]); Maglev tables are computed here ([`maglev`]) and written to the
//! data plane. Everything needs root (or CAP_BPF + CAP_NET_ADMIN).
mod balancer;
mod decap;
mod error;
mod flow_record;
pub mod maglev;
pub mod netlink;
mod pass;
pub mod pin;
mod ring;
mod service;
mod stats;

pub use balancer::{
    AttachMode, Balancer, BalancerBuilder, DesiredDestination, DestinationInfo, FlowEvents,
    ImportReport, NextHop, ProbeRoute, ProbeStats, ServiceInfo, ServiceTalkers, Talker,
    TalkerCount, TalkerSampling, TopTalkers, Unresolved,
};
pub use decap::{DecapCounter, DecapStats, Decapsulator, DecapsulatorBuilder};
pub use error::BalancerError;
pub use flow_record::FlowRecord;
pub use fulcrum_common::Counter;
/// A flow the data plane just pinned, as [`FlowEvents`] yields it: its 5-tuple and this
/// balancer's backend slot and generation (`Copy`, `Send`); name it by address with
/// [`Balancer::flow_records`].
pub use fulcrum_common::FlowEvent;
pub use pass::PassProgram;
pub use service::{
    DEFAULT_GUE_PORT, Destination, Forwarding, ParseServiceError, Protocol, Scheduler, Service,
    ServiceId, Tunnel, TunnelSource,
};
pub use stats::{GlobalStats, Traffic};
