//! What flow sharing reports: published through a `watch`, read by the API and metrics
//! without waiting on the tasks that send and receive.

use std::net::SocketAddr;

use serde::Serialize;

use crate::envelope::Reject;

/// The state of flow sharing, as `GET /api/v1/flow-sharing` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowSyncStatus {
    /// The start-up sync ended: every unicast peer answered, a multicast dump arrived, or
    /// `sync_timeout` passed.
    pub synced: bool,
    /// The address records are received on.
    pub listen: Option<SocketAddr>,
    /// The multicast group, if any.
    pub multicast_group: Option<SocketAddr>,
    /// Configured unicast peers.
    pub peers: Vec<PeerStatus>,
    /// Records sent (each record counted once however many peers it went to).
    pub sent_records: u64,
    /// Datagrams sent, counted per destination.
    pub sent_datagrams: u64,
    /// Datagrams the kernel refused to send (peer unreachable, no route).
    pub send_errors: u64,
    /// New records dropped because the send queue was full (the rate bound held them back).
    pub share_dropped: u64,
    /// Full sends (dump answers and refreshes) completed.
    pub full_sends: u64,
    /// Records accepted from peers.
    pub received_records: u64,
    /// Datagrams accepted from peers.
    pub received_datagrams: u64,
    /// Datagrams refused, by reason.
    pub rejected: Rejected,
}

/// One unicast peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its address, as configured.
    pub address: SocketAddr,
    /// Datagrams accepted from it.
    pub received_datagrams: u64,
    /// It answered our start-up sync request with a complete dump.
    pub synced: bool,
}

/// Refused datagrams by reason; none of them is ever imported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Not a datagram of this protocol and version.
    pub malformed: u64,
    /// MAC did not verify: forged, or another key.
    pub bad_mac: u64,
    /// Timestamp outside the freshness bound.
    pub stale: u64,
    /// Sequence number already seen from that sender.
    pub replayed: u64,
    /// Source address is not a configured peer.
    pub unknown_sender: u64,
}

impl Rejected {
    /// Counts one refusal.
    pub fn count(&mut self, reason: Reject) {
        *match reason {
            Reject::Malformed => &mut self.malformed,
            Reject::BadMac => &mut self.bad_mac,
            Reject::Stale => &mut self.stale,
            Reject::Replayed => &mut self.replayed,
            Reject::UnknownSender => &mut self.unknown_sender,
        } += 1;
    }

    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.malformed + self.bad_mac + self.stale + self.replayed + self.unknown_sender
    }
}
