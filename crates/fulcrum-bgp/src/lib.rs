//! A small BGP-4 speaker that announces the VIPs of healthy services (route health
//! injection) to a few routers, and nothing else: it never installs or forwards what it
//! learns.
//!
//! Layout, after holo-bgp: [`packet`] is the wire format, pure and tested against golden
//! bytes; [`fsm`] is one peer's session as a state machine fed [`events::Event`]s and
//! answering [`events::Action`]s, tested without sockets; `tasks` owns the sockets and
//! timers; [`Speaker`] is the handle the daemon holds.
//!
//! **Codec.** The wire format is our own (`packet`, golden-byte tests and a random-input
//! test) rather than `netgauze-bgp-pkt` 0.13, which builds with rustc 1.95 here. Reasons:
//! it would add it and its companion netgauze crates to the workspace for the six message
//! types and seven attributes an announce-only speaker uses, and the part that must be exactly right, turning every malformed input
//! into the NOTIFICATION RFC 4271 section 6 names (code, subcode and data) without a
//! panic, is most directly reviewed where the decoding happens. It was not evaluated
//! beyond that.
//!
//! **Sessions.** Capabilities offered: 4-octet AS (required from the peer too),
//! multiprotocol IPv4 and IPv6 unicast (RFC 4760), route refresh, graceful restart (RFC
//! 4724) for both families with the Restart State and Forwarding State bits as
//! [`SpeakerConfig`] says. After OPENs are exchanged every desired route the session can
//! carry is sent, then End-of-RIB of each negotiated family (an empty UPDATE for IPv4, an
//! empty MP_UNREACH_NLRI for IPv6). IPv6 routes travel in MP_REACH_NLRI with an IPv6 next
//! hop and are withdrawn in MP_UNREACH_NLRI, over IPv4 or IPv6 sessions alike. A family
//! the peer did not offer gets no routes, and neither does one without a next hop of its
//! family; [`PeerStatus::not_announced`] says which and why (failing soft: the session
//! stays up for the other family). [`Speaker::shutdown`] withdraws and sends Cease;
//! [`Speaker::handover`] closes without a NOTIFICATION, so that routers keep the routes
//! for the restart time while the next daemon takes over.
#![warn(missing_docs)]

pub mod events;
pub mod fsm;
mod ifaddr;
mod md5;
pub mod packet;
mod speaker;
mod tasks;

pub use events::Route;
pub use fsm::{GrConfig, State};
pub use packet::Prefix;
pub use speaker::{PeerConfig, PeerStatus, Speaker, SpeakerConfig, SpeakerError};
