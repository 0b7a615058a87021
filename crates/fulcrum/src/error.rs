//! Everything the library can refuse, each naming the thing that was wrong.

use std::net::IpAddr;

use crate::{ServiceId, maglev::MaglevError, netlink::NetlinkError};

/// Errors of [`Balancer`](crate::Balancer) operations.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// Loading or verifying the XDP program or its maps failed.
    #[error("loading the XDP program failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program operation (load, attach, test run) failed.
    #[error("{what} failed")]
    Program {
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map read or write failed.
    #[error("map {map}: {op} failed")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A system call outside aya failed.
    #[error("{call} failed")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The pinned state directory cannot be used as it is; the message says what to do.
    #[error("pinned state in {}: {what}", dir.display())]
    Pin {
        dir: std::path::PathBuf,
        what: String,
    },
    /// The interface already runs an XDP program this balancer did not pin.
    #[error(
        "'{0}' already has an XDP program attached (another Fulcrum instance or another \
         tool: see `ip link show {0}`); stop it, or detach it with `ip link set {0} xdp off`"
    )]
    InterfaceBusy(String),
    /// No interface has this name in the balancer's network namespace.
    #[error("no interface named '{0}'")]
    UnknownInterface(String),
    /// The kernel refused the XDP attachment.
    #[error("attaching XDP to '{iface}' in {mode} mode was refused{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        hint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The interface is already attached.
    #[error("already attached to '{0}'")]
    AlreadyAttached(String),
    /// A configuration limit was given a value the data plane cannot hold.
    #[error("invalid {what}: {why}")]
    Limit { what: &'static str, why: String },
    /// The service already exists.
    #[error("service {0} already exists")]
    ServiceExists(ServiceId),
    /// No such service.
    #[error("no service {0}")]
    NoService(ServiceId),
    /// All service slots are in use.
    #[error("cannot add service {id}: all {max} service slots are in use")]
    TooManyServices { id: ServiceId, max: u32 },
    /// All backend slots are in use.
    #[error("cannot add backend {address} to {id}: all {max} backend slots are in use")]
    TooManyBackends {
        id: ServiceId,
        address: IpAddr,
        max: u32,
    },
    /// The destination already belongs to the service.
    #[error("backend {address} is already in service {id}")]
    DestinationExists { id: ServiceId, address: IpAddr },
    /// The destination does not belong to the service.
    #[error("backend {address} is not in service {id}")]
    NoDestination { id: ServiceId, address: IpAddr },
    /// The kernel has no route to the backend.
    #[error("backend {0}: no route to it")]
    NoRoute(IpAddr),
    /// L2 DSR needs the backend on a directly connected subnet.
    #[error(
        "backend {address} is reached through gateway {gateway}; L2 DSR needs backends on a directly connected subnet"
    )]
    NotDirectlyConnected { address: IpAddr, gateway: IpAddr },
    /// The backend address is one of this host's own.
    #[error("backend {0} is an address of this host")]
    LocalBackend(IpAddr),
    /// The backend's subnet is on an interface the balancer does not run on.
    #[error(
        "backend {address} is reached through '{iface}', which the balancer is not attached to"
    )]
    EgressNotAttached { address: IpAddr, iface: String },
    /// A tunnelled destination cannot be reached as configured (no route, no source
    /// address of its family, a VIP of a family the tunnel cannot carry).
    #[error("backend {address}: cannot tunnel to it: {why}")]
    Tunnel { address: IpAddr, why: String },
    /// A destination the service's mode cannot forward to (an L2 DSR backend of the other
    /// family than the VIP's: L2 DSR hands the client's packet on unchanged).
    #[error("{0}")]
    Unsupported(String),
    /// Talking to the kernel's routing tables failed.
    #[error("neighbour resolution")]
    Netlink(#[from] NetlinkError),
    /// The ring of flow events cannot be handed out.
    #[error("flow events: {0}")]
    FlowEvents(&'static str),
    /// The Maglev table could not be built.
    #[error("service {id}")]
    Maglev {
        id: ServiceId,
        #[source]
        source: MaglevError,
    },
}

impl BalancerError {
    pub(crate) fn map(
        map: &'static str,
        op: &'static str,
    ) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map {
            map,
            op,
            source: Box::new(source),
        }
    }
}
