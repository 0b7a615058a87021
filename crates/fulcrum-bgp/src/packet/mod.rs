//! BGP-4 messages (RFC 4271) and the parts of them this speaker uses: pure encoding and
//! decoding, no I/O. A decoding error carries the NOTIFICATION the RFC prescribes, so the
//! session only has to send it.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use decode::{DecodeError, decode};
pub use encode::encode;

/// Length of the fixed header: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability (RFC 8654, not offered).
pub const MAX_LEN: usize = 4096;

/// Address families (IANA AFI) and sub-families (SAFI) this speaker knows.
pub const AFI_IPV4: u16 = 1;
/// IPv6, encoded through MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).
pub const AFI_IPV6: u16 = 2;
/// Unicast SAFI.
pub const SAFI_UNICAST: u8 = 1;

/// One BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Opens a session.
    Open(Open),
    /// Routes announced and withdrawn; empty is End-of-RIB for IPv4 (RFC 4724).
    Update(Update),
    /// An error or a Cease; the connection closes after it.
    Notification(Notification),
    /// Keeps the hold timer from expiring.
    Keepalive,
    /// Asks for the routes of a family again (RFC 2918).
    RouteRefresh {
        /// Address family.
        afi: u16,
        /// Sub-family.
        safi: u8,
    },
}

/// An OPEN message with its capabilities (RFC 5492).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// Always 4 when sent; a received other version is refused.
    pub version: u8,
    /// The 2-octet "My Autonomous System" field: the ASN, or AS_TRANS (23456) for a
    /// 4-octet ASN, which then is in [`Capability::FourOctetAs`].
    pub my_as: u16,
    /// Proposed hold time in seconds: 0 or at least 3.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Capabilities, in the order given.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's ASN: the 4-octet capability's when present (RFC 6793).
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the sender offered `capability` (compared by kind only).
    pub fn has(&self, kind: fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(kind)
    }
}

/// One capability of an OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (RFC 4760), code 1.
    MultiProtocol {
        /// Address family.
        afi: u16,
        /// Sub-family.
        safi: u8,
    },
    /// Route refresh (RFC 2918), code 2.
    RouteRefresh,
    /// Graceful restart (RFC 4724), code 64.
    GracefulRestart(GracefulRestart),
    /// 4-octet AS numbers (RFC 6793), code 65.
    FourOctetAs(u32),
    /// Anything else, kept as received and ignored.
    Unknown {
        /// Capability code.
        code: u8,
        /// Its value.
        value: Vec<u8>,
    },
}

/// The graceful restart capability's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted and its peers should wait for its End-of-RIB.
    pub restart_state: bool,
    /// N bit (RFC 8538); never set by us, kept when received.
    pub notification: bool,
    /// Seconds the receiver should keep the sender's routes after the session drops.
    pub restart_time: u16,
    /// Families preserved, each with its F bit (forwarding state kept through a restart).
    pub families: Vec<GrFamily>,
}

/// One family of the graceful restart capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrFamily {
    /// Address family.
    pub afi: u16,
    /// Sub-family.
    pub safi: u8,
    /// F bit: forwarding for this family was kept through the restart.
    pub forwarding: bool,
}

/// A prefix: an address and a length; host bits beyond the length are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Prefix {
    /// The network address.
    pub address: IpAddr,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub length: u8,
}

impl Prefix {
    /// A host route: /32 or /128.
    pub fn host(address: IpAddr) -> Self {
        let length = if address.is_ipv4() { 32 } else { 128 };
        Self { address, length }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

/// An UPDATE. IPv4 prefixes travel in the classic fields, IPv6 ones in MP_REACH_NLRI and
/// MP_UNREACH_NLRI; [`Update::withdrawn`] and [`Update::nlri`] hold both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Prefixes no longer reachable.
    pub withdrawn: Vec<Prefix>,
    /// The path attributes of [`Update::nlri`]; `None` when the UPDATE has none.
    pub attributes: Option<PathAttributes>,
    /// Prefixes reachable with [`Update::attributes`].
    pub nlri: Vec<Prefix>,
    /// An MP_UNREACH_NLRI with no prefixes for this AFI (unicast): End-of-RIB for a family
    /// other than IPv4 (RFC 4724 section 2). Set only on an UPDATE with nothing else.
    pub end_of_rib_afi: Option<u16>,
}

impl Update {
    /// End-of-RIB for `afi` unicast: an empty UPDATE for IPv4, an UPDATE holding only an
    /// empty MP_UNREACH_NLRI for the others.
    pub fn end_of_rib(afi: u16) -> Self {
        Self {
            end_of_rib_afi: (afi != AFI_IPV4).then_some(afi),
            ..Self::default()
        }
    }

    /// The family this UPDATE is the End-of-RIB of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<u16> {
        let empty = self.withdrawn.is_empty() && self.nlri.is_empty() && self.attributes.is_none();
        empty.then_some(self.end_of_rib_afi.unwrap_or(AFI_IPV4))
    }

    /// End-of-RIB for IPv4 unicast: an UPDATE with nothing in it.
    pub fn is_end_of_rib(&self) -> bool {
        self.end_of_rib_family() == Some(AFI_IPV4)
    }
}

/// Path attributes this speaker sends; others received are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathAttributes {
    /// ORIGIN: 0 IGP, 1 EGP, 2 INCOMPLETE.
    pub origin: u8,
    /// AS_PATH as one AS_SEQUENCE, 4-octet ASNs; empty for routes we originate over iBGP.
    pub as_path: Vec<u32>,
    /// NEXT_HOP (IPv4 routes) or the global address of the MP_REACH_NLRI next hop (IPv6
    /// routes, RFC 2545); an UPDATE of ours carries routes of one family only.
    pub next_hop: Option<IpAddr>,
    /// The link-local address of an IPv6 next hop (RFC 2545: a 32-byte next hop), for
    /// routers on the same link that prefer it.
    pub link_local_next_hop: Option<Ipv6Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997) as (ASN, value).
    pub communities: Vec<(u16, u16)>,
    /// LARGE_COMMUNITY (RFC 8092).
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// A NOTIFICATION: error code, subcode and data (RFC 4271 4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, whose meaning depends on the code.
    pub data: Vec<u8>,
}

impl Notification {
    /// A notification without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// A notification with data.
    pub fn with_data(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = match self.code {
            error::HEADER => "message header error",
            error::OPEN => "OPEN message error",
            error::UPDATE => "UPDATE message error",
            error::HOLD_TIMER => "hold timer expired",
            error::FSM => "finite state machine error",
            error::CEASE => "cease",
            _ => "unknown error",
        };
        let sub = match (self.code, self.subcode) {
            (error::HEADER, 1) => " (connection not synchronized)",
            (error::HEADER, 2) => " (bad message length)",
            (error::HEADER, 3) => " (bad message type)",
            (error::OPEN, 1) => " (unsupported version number)",
            (error::OPEN, 2) => " (bad peer AS)",
            (error::OPEN, 3) => " (bad BGP identifier)",
            (error::OPEN, 4) => " (unsupported optional parameter)",
            (error::OPEN, 6) => " (unacceptable hold time)",
            (error::OPEN, 7) => " (unsupported capability)",
            (error::CEASE, 2) => " (administrative shutdown)",
            (error::CEASE, 3) => " (peer de-configured)",
            (error::CEASE, 4) => " (administrative reset)",
            (error::CEASE, 6) => " (other configuration change)",
            (error::CEASE, 7) => " (connection collision resolution)",
            _ => "",
        };
        write!(f, "{code}{sub} [{}/{}]", self.code, self.subcode)
    }
}

/// NOTIFICATION error codes (RFC 4271 4.5) and the subcodes used here.
pub mod error {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease (RFC 4486 subcodes).
    pub const CEASE: u8 = 6;
    /// Cease subcode: Administrative Shutdown.
    pub const ADMIN_SHUTDOWN: u8 = 2;
    /// Cease subcode: Peer De-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Cease subcode: Administrative Reset.
    pub const ADMIN_RESET: u8 = 4;
}
