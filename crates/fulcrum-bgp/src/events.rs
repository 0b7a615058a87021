//! Everything that can happen to a session, and everything it can ask for in return. The
//! [`crate::fsm::Session`] turns one into a list of the other; [`crate::tasks`] carries
//! them out with sockets and timers.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use crate::packet::{Message, Notification, Prefix};

/// A route we want announced: a prefix and the attributes it is sent with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The prefix, a host route for a VIP.
    pub prefix: Prefix,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF, sent to iBGP peers only.
    pub local_pref: Option<u32>,
    /// Communities.
    pub communities: Vec<(u16, u16)>,
    /// Large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl Route {
    /// A host route for `address` without attributes.
    pub fn host(address: IpAddr) -> Self {
        Self {
            prefix: Prefix::host(address),
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// The session's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Time between connection attempts.
    ConnectRetry,
    /// The peer is dead when nothing came from it for this long.
    Hold,
    /// Time between our KEEPALIVEs.
    Keepalive,
}

/// An input of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer is configured: start connecting (or waiting for it).
    Start,
    /// Stop the session. With a Cease subcode: withdraw everything, send NOTIFICATION
    /// Cease with it, close. Without one: close silently, as a graceful restart needs.
    Stop(Option<u8>),
    /// A TCP connection to the peer is up (ours or one it opened), from `local`.
    TcpUp {
        /// Our end's address: the default next hop.
        local: IpAddr,
        /// The link-local address of the interface `local` is on, when `local` is a
        /// global IPv6 address: sent beside it in the next hop (RFC 2545).
        link_local: Option<Ipv6Addr>,
    },
    /// The connection closed or failed.
    TcpDown,
    /// A whole message arrived.
    Received(Message),
    /// Bytes arrived that are not a valid message: send this and close.
    Malformed(Notification),
    /// A timer fired.
    TimerFired(Timer),
    /// The routes we want announced changed (all of them, not a difference).
    Routes(Vec<Route>),
}

/// An output of the state machine, for [`crate::tasks`] to carry out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Write a message.
    Send(Message),
    /// (Re)start a timer.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// Close the connection.
    Close,
}
