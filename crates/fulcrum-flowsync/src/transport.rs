//! The sockets: one bound to `listen` that sends everything and receives unicast, and, for
//! a multicast group, one bound to the group that only receives. Multicast goes out of the
//! configured interface, and our own datagrams are not looped back to us.

use std::{
    ffi::CString,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// A multicast group on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multicast {
    /// Group address and port.
    pub group: SocketAddrV4,
    /// The interface the group is joined on and sent out of.
    pub interface: String,
}

/// Why the sockets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding the listen address failed.
    #[error("flow_sharing.listen {address}: cannot bind")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The multicast interface does not exist.
    #[error("flow_sharing.multicast.interface {0:?}: no such interface")]
    NoInterface(String),
    /// Setting up the group failed.
    #[error("flow_sharing.multicast {group} on {interface}: {call} failed")]
    Multicast {
        /// The group.
        group: SocketAddrV4,
        /// The interface.
        interface: String,
        /// What failed.
        call: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The bound sockets.
#[derive(Debug)]
pub struct Transport {
    /// Sends everything; receives unicast.
    pub socket: UdpSocket,
    /// Receives the group's datagrams, if a group is configured.
    pub group_socket: Option<UdpSocket>,
    /// Where group datagrams are sent.
    pub group: Option<SocketAddr>,
}

impl Transport {
    /// Binds `listen` and joins `multicast`. Needs a tokio runtime.
    pub fn bind(listen: SocketAddr, multicast: Option<&Multicast>) -> Result<Self, TransportError> {
        let bind_err = |source| TransportError::Bind {
            address: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        socket.set_nonblocking(true).map_err(bind_err)?;
        let socket = UdpSocket::from_std(socket).map_err(bind_err)?;
        let Some(m) = multicast else {
            return Ok(Self {
                socket,
                group_socket: None,
                group: None,
            });
        };
        let fail = |call, source| TransportError::Multicast {
            group: m.group,
            interface: m.interface.clone(),
            call,
            source,
        };
        let ifindex = if_index(&m.interface)?;
        if listen.is_ipv4() {
            socket
                .set_multicast_loop_v4(false)
                .map_err(|e| fail("IP_MULTICAST_LOOP", e))?;
            set_mreqn(
                &socket,
                libc::IP_MULTICAST_IF,
                Ipv4Addr::UNSPECIFIED,
                ifindex,
            )
            .map_err(|e| fail("IP_MULTICAST_IF", e))?;
        }
        let group = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| fail("socket", e))?;
        group
            .set_reuse_address(true)
            .map_err(|e| fail("SO_REUSEADDR", e))?;
        group
            .bind(&SocketAddr::V4(m.group).into())
            .map_err(|e| fail("bind", e))?;
        set_mreqn(&group, libc::IP_ADD_MEMBERSHIP, *m.group.ip(), ifindex)
            .map_err(|e| fail("IP_ADD_MEMBERSHIP", e))?;
        group
            .set_nonblocking(true)
            .map_err(|e| fail("O_NONBLOCK", e))?;
        let group_socket =
            UdpSocket::from_std(group.into()).map_err(|e| fail("registering the socket", e))?;
        Ok(Self {
            socket,
            group_socket: Some(group_socket),
            group: Some(SocketAddr::V4(m.group)),
        })
    }

    /// The address the socket is bound to (the real port when `listen` asked for 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

fn if_index(name: &str) -> Result<i32, TransportError> {
    let missing = || TransportError::NoInterface(name.to_owned());
    let c = CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(missing());
    }
    i32::try_from(index).map_err(|_| missing())
}

/// `IP_ADD_MEMBERSHIP` / `IP_MULTICAST_IF` by interface index (`ip_mreqn`), which names
/// the interface even when it has no address of its own.
fn set_mreqn(fd: &impl AsRawFd, option: i32, group: Ipv4Addr, ifindex: i32) -> io::Result<()> {
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from(group).to_be(),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex,
    };
    // SAFETY: a valid socket and a properly sized, initialised ip_mreqn.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            option,
            (&raw const mreq).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
