//! Sealing datagrams (sequence, timestamp, MAC) and opening them (framing, sender, MAC,
//! freshness, replay, body), in the order that keeps forged bytes from costing more than a
//! MAC check and from touching any state.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use crate::{
    auth::Key,
    replay::{self, Refusal, ReplayGuard},
    wire::{self, Body, Header},
};

/// Why a received datagram was dropped; each is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a well-formed datagram of this protocol and version.
    Malformed,
    /// Its MAC does not verify: forged, corrupted, or sent with another key.
    BadMac,
    /// Its timestamp is outside the freshness bound.
    Stale,
    /// Its sequence number was already accepted from that sender.
    Replayed,
    /// It came from an address that is not a configured peer (unicast only).
    UnknownSender,
}

/// Writes this balancer's datagrams.
#[derive(Debug)]
pub struct Sealer {
    key: Key,
    sender: u64,
    next_sequence: u64,
    buf: Vec<u8>,
}

impl Sealer {
    /// Starts the sequence from the clock `now_unix`, so a restart is not taken for a replay.
    pub fn new(key: Key, sender: u64, now_unix: Duration) -> Self {
        Self {
            key,
            sender,
            next_sequence: replay::first_sequence(now_unix),
            buf: Vec::with_capacity(1500),
        }
    }

    /// The signed datagram for `body`, stamped `now_unix`; valid until the next call.
    pub fn seal(&mut self, body: &Body, now_unix: Duration) -> &[u8] {
        let header = Header {
            sender: self.sender,
            sequence: self.next_sequence,
            timestamp_ms: u64::try_from(now_unix.as_millis()).unwrap_or(u64::MAX),
        };
        self.next_sequence += 1;
        wire::encode(&header, body, &mut self.buf);
        self.key.sign(&mut self.buf);
        &self.buf
    }
}

/// Checks received datagrams.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    guard: ReplayGuard,
    /// `None`: anyone holding the key may send (a multicast group has no member list).
    peers: Option<HashSet<SocketAddr>>,
}

impl Opener {
    /// `peers` are the only source addresses accepted, or `None` for any.
    pub fn new(key: Key, peers: Option<HashSet<SocketAddr>>, max_age: Duration) -> Self {
        Self {
            key,
            guard: ReplayGuard::new(max_age),
            peers,
        }
    }

    /// Opens one datagram received from `from` at `now_unix`.
    pub fn open(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now_unix: Duration,
    ) -> Result<(Header, Body), Reject> {
        let wire::Framed {
            header,
            kind,
            signed,
            mac,
        } = wire::split(datagram).map_err(|_| Reject::Malformed)?;
        if let Some(peers) = &self.peers
            && !peers.contains(&from)
        {
            return Err(Reject::UnknownSender);
        }
        if !self.key.verify(signed, mac) {
            return Err(Reject::BadMac);
        }
        self.guard
            .check(
                header.sender,
                header.sequence,
                header.timestamp_ms,
                now_unix,
            )
            .map_err(|r| match r {
                Refusal::Stale => Reject::Stale,
                Refusal::Replayed => Reject::Replayed,
            })?;
        let body = wire::decode_body(kind, signed).map_err(|_| Reject::Malformed)?;
        Ok((header, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; 32]).unwrap()
    }

    fn peer() -> SocketAddr {
        "10.0.0.2:7946".parse().unwrap()
    }

    #[test]
    fn each_reason_is_told_apart() {
        let mut sealer = Sealer::new(key(1), 9, NOW);
        let mut opener = Opener::new(key(1), Some([peer()].into()), Duration::from_secs(30));
        let good = sealer.seal(&Body::SyncRequest, NOW).to_vec();
        assert_eq!(
            opener.open(&good, "10.0.0.3:7946".parse().unwrap(), NOW),
            Err(Reject::UnknownSender)
        );
        assert_eq!(
            opener.open(&good[..10], peer(), NOW),
            Err(Reject::Malformed)
        );
        let forged = Sealer::new(key(2), 9, NOW)
            .seal(&Body::SyncRequest, NOW)
            .to_vec();
        assert_eq!(opener.open(&forged, peer(), NOW), Err(Reject::BadMac));
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert_eq!(opener.open(&flipped, peer(), NOW), Err(Reject::BadMac));
        let old = sealer
            .seal(&Body::SyncRequest, NOW - Duration::from_secs(31))
            .to_vec();
        assert_eq!(opener.open(&old, peer(), NOW), Err(Reject::Stale));
        let (header, body) = opener.open(&good, peer(), NOW).expect("accepted");
        assert_eq!((header.sender, body), (9, Body::SyncRequest));
        assert_eq!(opener.open(&good, peer(), NOW), Err(Reject::Replayed));
    }
}
