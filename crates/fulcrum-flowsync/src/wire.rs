//! The datagram layout: one definition of every byte, encoded and decoded here only.
//!
//! ```text
//! header (32 bytes, big-endian)
//!   0  magic "FLSY"        4  version (1)    5  kind          6  count (u16)
//!   8  sender id (u64)    16  sequence (u64) 24  timestamp, ms since the Unix epoch (u64)
//! body
//!   records: count × 60 bytes (below); sync request: empty; sync done: record count (u64)
//! trailer: HMAC-SHA256 over header and body (32 bytes), appended by `auth`
//!
//! record (60 bytes)
//!   0  address family of client and vip (4 or 6)   1  backend family (4 or 6)
//!   2  IP protocol (6 or 17)   3  zero   4 client port   6 vip port   8 service port  10 zero
//!  12  client address (16)   28  vip address (16)   44  backend address (16)
//! ```
//! IPv4 addresses are written IPv4-mapped (`::ffff:a.b.c.d`), so the layout is the same for
//! both families and an IPv6 data plane needs no new version.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use fulcrum::{FlowRecord, Protocol};

/// First bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"FLSY";
/// The layout version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// Bytes of one record.
pub const RECORD_LEN: usize = 60;
/// Bytes of the MAC trailer.
pub const MAC_LEN: usize = 32;
/// Records in one datagram at most, so that it fits a 1500-byte MTU over IPv4 or IPv6
/// (1500 - 40 - 8 = 1452 bytes of UDP payload) without fragments.
pub const MAX_RECORDS: usize = (1452 - HEADER_LEN - MAC_LEN) / RECORD_LEN;

const AF_V4: u8 = 4;
const AF_V6: u8 = 6;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Flow records: new ones, a refresh, or part of a dump.
    Records,
    /// A starting balancer asks for every flow its peers hold.
    SyncRequest,
    /// The end of a full send; the body holds how many records it had.
    SyncDone,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Records => 1,
            Kind::SyncRequest => 2,
            Kind::SyncDone => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Records),
            2 => Some(Kind::SyncRequest),
            3 => Some(Kind::SyncDone),
            _ => None,
        }
    }
}

/// The fields of the header that mean something to a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Names the balancer that sent it; the anti-replay window is kept per sender.
    pub sender: u64,
    /// Grows by one per datagram sent; starts from the clock (see `replay`).
    pub sequence: u64,
    /// When it was sent, in milliseconds since the Unix epoch: bounds how old it may be.
    pub timestamp_ms: u64,
}

/// A datagram's content, once decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Flow records.
    Records(Vec<FlowRecord>),
    /// A request for a dump.
    SyncRequest,
    /// The end of a full send of this many records.
    SyncDone {
        /// Records the full send had.
        records: u64,
    },
}

impl Body {
    fn kind(&self) -> Kind {
        match self {
            Body::Records(_) => Kind::Records,
            Body::SyncRequest => Kind::SyncRequest,
            Body::SyncDone { .. } => Kind::SyncDone,
        }
    }
}

/// Why bytes are not a datagram of this protocol. Only the kind is kept: the bytes came
/// from the network and are counted, not logged one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Fewer bytes than a header and a MAC.
    #[error("shorter than a header and a MAC")]
    Short,
    /// Not our magic: some other protocol on this port.
    #[error("bad magic")]
    Magic,
    /// A version this code does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown kind {0}")]
    Kind(u8),
    /// The body's length does not match its kind and count.
    #[error("body length does not match the header")]
    Length,
    /// A record with an unknown family or protocol.
    #[error("bad record")]
    Record,
}

/// Writes the header and body of a datagram (without its MAC) into `out`, which is
/// cleared first. `Body::Records` must hold at most [`MAX_RECORDS`].
pub fn encode(header: &Header, body: &Body, out: &mut Vec<u8>) {
    out.clear();
    let count = match body {
        Body::Records(records) => {
            debug_assert!(records.len() <= MAX_RECORDS);
            records.len() as u16
        }
        _ => 0,
    };
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(body.kind().byte());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp_ms.to_be_bytes());
    match body {
        Body::Records(records) => records.iter().for_each(|r| encode_record(r, out)),
        Body::SyncRequest => {}
        Body::SyncDone { records } => out.extend_from_slice(&records.to_be_bytes()),
    }
}

/// A datagram whose framing checked out; its body is not decoded yet.
#[derive(Debug)]
pub struct Framed<'a> {
    /// The header's fields.
    pub header: Header,
    /// What the body holds.
    pub kind: Kind,
    /// Header and body: the bytes the MAC covers.
    pub signed: &'a [u8],
    /// The MAC trailer.
    pub mac: &'a [u8],
}

/// Splits a datagram into its header, the bytes the MAC covers and the MAC, checking only
/// the framing; the body is decoded by [`decode_body`] once the MAC has been verified.
pub fn split(datagram: &[u8]) -> Result<Framed<'_>, Malformed> {
    if datagram.len() < HEADER_LEN + MAC_LEN {
        return Err(Malformed::Short);
    }
    let (signed, mac) = datagram.split_at(datagram.len() - MAC_LEN);
    if signed[0..4] != MAGIC {
        return Err(Malformed::Magic);
    }
    if signed[4] != VERSION {
        return Err(Malformed::Version(signed[4]));
    }
    let kind = Kind::from_byte(signed[5]).ok_or(Malformed::Kind(signed[5]))?;
    let header = Header {
        sender: be64(&signed[8..16]),
        sequence: be64(&signed[16..24]),
        timestamp_ms: be64(&signed[24..32]),
    };
    Ok(Framed {
        header,
        kind,
        signed,
        mac,
    })
}

/// Decodes the body of `signed` (header and body, as [`split`] returned it).
pub fn decode_body(kind: Kind, signed: &[u8]) -> Result<Body, Malformed> {
    let count = usize::from(u16::from_be_bytes([signed[6], signed[7]]));
    let body = &signed[HEADER_LEN..];
    match kind {
        Kind::Records => {
            if count > MAX_RECORDS || body.len() != count * RECORD_LEN {
                return Err(Malformed::Length);
            }
            body.chunks_exact(RECORD_LEN)
                .map(decode_record)
                .collect::<Result<_, _>>()
                .map(Body::Records)
        }
        Kind::SyncRequest if body.is_empty() && count == 0 => Ok(Body::SyncRequest),
        Kind::SyncDone if body.len() == 8 && count == 0 => Ok(Body::SyncDone {
            records: be64(body),
        }),
        _ => Err(Malformed::Length),
    }
}

fn encode_record(r: &FlowRecord, out: &mut Vec<u8>) {
    let family = if r.client.is_ipv4() && r.vip.is_ipv4() {
        AF_V4
    } else {
        AF_V6
    };
    out.push(family);
    out.push(if r.backend.is_ipv4() { AF_V4 } else { AF_V6 });
    out.push(r.protocol.number());
    out.push(0);
    out.extend_from_slice(&r.client.port().to_be_bytes());
    out.extend_from_slice(&r.vip.port().to_be_bytes());
    out.extend_from_slice(&r.service_port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&wide(r.client.ip()).octets());
    out.extend_from_slice(&wide(r.vip.ip()).octets());
    out.extend_from_slice(&wide(r.backend).octets());
}

fn decode_record(b: &[u8]) -> Result<FlowRecord, Malformed> {
    let protocol = match b[2] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return Err(Malformed::Record),
    };
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let client = narrow(b[0], &b[12..28])?;
    let vip = narrow(b[0], &b[28..44])?;
    Ok(FlowRecord {
        protocol,
        client: SocketAddr::new(client, port(4)),
        vip: SocketAddr::new(vip, port(6)),
        service_port: port(8),
        backend: narrow(b[1], &b[44..60])?,
    })
}

fn wide(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn narrow(family: u8, bytes: &[u8]) -> Result<IpAddr, Malformed> {
    let mut octets = [0; 16];
    octets.copy_from_slice(bytes);
    let v6 = Ipv6Addr::from(octets);
    match family {
        AF_V4 => v6.to_ipv4_mapped().map(IpAddr::V4).ok_or(Malformed::Record),
        AF_V6 => Ok(IpAddr::V6(v6)),
        _ => Err(Malformed::Record),
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FlowRecord {
        FlowRecord {
            protocol: Protocol::Tcp,
            client: "10.0.1.2:40000".parse().unwrap(),
            vip: "10.0.100.1:80".parse().unwrap(),
            service_port: 80,
            backend: "10.0.0.11".parse().unwrap(),
        }
    }

    const HEADER: Header = Header {
        sender: 0x0102_0304_0506_0708,
        sequence: 0x1122_3344_5566_7788,
        timestamp_ms: 0x0000_0193_0000_0001,
    };

    #[test]
    fn records_datagram_matches_golden_bytes() {
        let mut out = Vec::new();
        encode(&HEADER, &Body::Records(vec![record()]), &mut out);
        #[rustfmt::skip]
        let golden: &[u8] = &[
            b'F', b'L', b'S', b'Y', 1, 1, 0, 1,
            1, 2, 3, 4, 5, 6, 7, 8,
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
            0, 0, 1, 0x93, 0, 0, 0, 1,
            // record
            4, 4, 6, 0, 0x9c, 0x40, 0, 80, 0, 80, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 2,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 100, 1,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 11,
        ];
        assert_eq!(out, golden);
    }

    #[test]
    fn sync_messages_match_golden_bytes() {
        let mut out = Vec::new();
        encode(&HEADER, &Body::SyncRequest, &mut out);
        assert_eq!(&out[..8], &[b'F', b'L', b'S', b'Y', 1, 2, 0, 0]);
        assert_eq!(out.len(), HEADER_LEN);
        encode(&HEADER, &Body::SyncDone { records: 258 }, &mut out);
        assert_eq!(&out[4..8], &[1, 3, 0, 0]);
        assert_eq!(&out[HEADER_LEN..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }

    fn roundtrip(body: Body) -> (Header, Body) {
        let mut out = Vec::new();
        encode(&HEADER, &body, &mut out);
        out.extend_from_slice(&[0; MAC_LEN]);
        let f = split(&out).expect("framing");
        assert_eq!(f.mac.len(), MAC_LEN);
        (f.header, decode_body(f.kind, f.signed).expect("body"))
    }

    #[test]
    fn ipv4_ipv6_and_udp_records_roundtrip() {
        let v6 = FlowRecord {
            protocol: Protocol::Udp,
            client: "[2001:db8::2]:5353".parse().unwrap(),
            vip: "[2001:db8:100::1]:53".parse().unwrap(),
            service_port: 0,
            backend: "2001:db8::11".parse().unwrap(),
        };
        let records = vec![record(); MAX_RECORDS - 1]
            .into_iter()
            .chain([v6])
            .collect::<Vec<_>>();
        let (header, body) = roundtrip(Body::Records(records.clone()));
        assert_eq!(header, HEADER);
        assert_eq!(body, Body::Records(records));
        assert_eq!(
            roundtrip(Body::SyncDone { records: 7 }).1,
            Body::SyncDone { records: 7 }
        );
    }

    #[test]
    fn a_full_datagram_fits_the_mtu() {
        let mut out = Vec::new();
        encode(
            &HEADER,
            &Body::Records(vec![record(); MAX_RECORDS]),
            &mut out,
        );
        assert!(out.len() + MAC_LEN <= 1452, "{} bytes", out.len() + MAC_LEN);
    }

    #[test]
    fn malformed_datagrams_are_named() {
        let mut good = Vec::new();
        encode(&HEADER, &Body::Records(vec![record()]), &mut good);
        good.extend_from_slice(&[0; MAC_LEN]);
        assert_eq!(split(&good[..40]).unwrap_err(), Malformed::Short);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(split(&bad).unwrap_err(), Malformed::Magic);
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(split(&bad).unwrap_err(), Malformed::Version(9));
        let mut bad = good.clone();
        bad[5] = 77;
        assert_eq!(split(&bad).unwrap_err(), Malformed::Kind(77));
        let mut bad = good.clone();
        bad[7] = 2; // claims two records, holds one
        let f = split(&bad).unwrap();
        assert_eq!(
            decode_body(f.kind, f.signed).unwrap_err(),
            Malformed::Length
        );
        let mut bad = good.clone();
        bad[HEADER_LEN + 2] = 1; // ICMP
        let f = split(&bad).unwrap();
        assert_eq!(
            decode_body(f.kind, f.signed).unwrap_err(),
            Malformed::Record
        );
        let mut bad = good;
        bad[HEADER_LEN] = 4;
        bad[HEADER_LEN + 12 + 10] = 0; // not IPv4-mapped under family 4
        let f = split(&bad).unwrap();
        assert_eq!(
            decode_body(f.kind, f.signed).unwrap_err(),
            Malformed::Record
        );
    }
}
