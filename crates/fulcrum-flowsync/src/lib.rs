//! Flow sharing between balancers: every balancer sends the flows it pins to its peers, so
//! that any of them can carry any connection when one dies or the routers move traffic.
//!
//! Each datagram ([`wire`]) carries a sender id, a sequence number and a timestamp and is
//! authenticated with HMAC-SHA256 over a shared key ([`auth`]); forged ones fail the MAC,
//! replayed ones the per-sender window, old ones the freshness bound ([`replay`]), and all
//! are counted, never imported. A starting balancer asks its peers for their flows and is
//! [`FlowSync::ready`] once they answered or `sync_timeout` passed ([`sync`]). Sending is
//! bounded in records per second ([`rate`]). Sockets: [`transport`].
#![warn(missing_docs)]

pub mod auth;
pub mod envelope;
mod handle;
pub mod rate;
pub mod replay;
pub mod status;
pub mod sync;
mod tasks;
pub mod transport;
pub mod wire;

pub use auth::{Key, KeyError};
pub use envelope::Reject;
pub use handle::{Event, FlowSender, FlowSync, FlowSyncError, Settings, Target, sender_id};
pub use status::{FlowSyncStatus, PeerStatus, Rejected};
pub use transport::Multicast;
