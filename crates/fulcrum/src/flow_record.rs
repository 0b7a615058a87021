//! A flow as balancers share it: by addresses, never by slot numbers.

use std::net::{IpAddr, SocketAddr};

use crate::{Protocol, ServiceId};

/// One connection pinned to a backend, in a form another balancer can take over: slot
/// numbers are local to each balancer, so the service and the backend are named by
/// address, of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRecord {
    /// Transport protocol of the flow and its service.
    pub protocol: Protocol,
    /// The client's address and port: the packets' source.
    pub client: SocketAddr,
    /// The VIP and port the client connects to: the packets' destination.
    pub vip: SocketAddr,
    /// The service's port: `vip`'s port, or 0 for a service of every port.
    pub service_port: u16,
    /// The backend the flow is pinned to.
    pub backend: IpAddr,
}

impl FlowRecord {
    /// The service the flow belongs to. An `Option` so callers need not change should a
    /// record ever name something that is no service.
    pub fn service(&self) -> Option<ServiceId> {
        Some(ServiceId::new(
            self.vip.ip(),
            self.service_port,
            self.protocol,
        ))
    }
}
