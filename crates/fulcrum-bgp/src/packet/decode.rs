//! Bytes to [`Message`]s. Every length is checked before it is used; whatever is wrong
//! becomes the NOTIFICATION RFC 4271 section 6 names, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    AFI_IPV4, AFI_IPV6, Capability, GrFamily, GracefulRestart, HEADER_LEN, MAX_LEN, Message,
    Notification, Open, PathAttributes, Prefix, Update, error,
};

/// Why a message could not be decoded: the NOTIFICATION to send before closing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed message from the peer: {0}")]
pub struct DecodeError(pub Notification);

fn fail<T>(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Result<T, DecodeError> {
    Err(DecodeError(Notification::with_data(code, subcode, data)))
}

/// Decodes the first message of `buf`: `Ok(None)` while it is incomplete, else the message
/// and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return fail(error::HEADER, 1, []);
    }
    let length = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let length_ok = match kind {
        1 => length >= 29,
        2 => length >= 23,
        3 => length >= 21,
        4 => length == 19,
        5 => length == 23,
        _ => return fail(error::HEADER, 3, [kind]),
    };
    if !length_ok || !(HEADER_LEN..=MAX_LEN).contains(&length) {
        return fail(error::HEADER, 2, (length as u16).to_be_bytes());
    }
    if buf.len() < length {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..length];
    let message = match kind {
        1 => Message::Open(open(body)?),
        2 => Message::Update(update(body)?),
        3 => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        4 => Message::Keepalive,
        _ => Message::RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]),
            safi: body[3],
        },
    };
    Ok(Some((message, length)))
}

/// A cursor that fails with `code/subcode` when the data runs out.
struct Reader<'a> {
    data: &'a [u8],
    code: u8,
    subcode: u8,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], code: u8, subcode: u8) -> Self {
        Self {
            data,
            code,
            subcode,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return fail(self.code, self.subcode, []);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn open(body: &[u8]) -> Result<Open, DecodeError> {
    // Malformed optional parameters: subcode 0 (unspecific), as RFC 4271 leaves open.
    let mut r = Reader::new(body, error::OPEN, 0);
    let version = r.u8()?;
    if version != 4 {
        return fail(error::OPEN, 1, 4u16.to_be_bytes());
    }
    let my_as = r.u16()?;
    let hold_time = r.u16()?;
    if hold_time == 1 || hold_time == 2 {
        return fail(error::OPEN, 6, []);
    }
    let router_id = Ipv4Addr::from(r.u32()?);
    if router_id.is_unspecified() {
        return fail(error::OPEN, 3, []);
    }
    let params_len = usize::from(r.u8()?);
    let mut params = Reader::new(r.take(params_len)?, error::OPEN, 0);
    if !r.is_empty() {
        return fail(
            error::HEADER,
            2,
            ((HEADER_LEN + body.len()) as u16).to_be_bytes(),
        );
    }
    let mut capabilities = Vec::new();
    while !params.is_empty() {
        let kind = params.u8()?;
        let len = usize::from(params.u8()?);
        let value = params.take(len)?;
        if kind != 2 {
            return fail(error::OPEN, 4, []);
        }
        let mut caps = Reader::new(value, error::OPEN, 0);
        while !caps.is_empty() {
            let code = caps.u8()?;
            let len = usize::from(caps.u8()?);
            capabilities.push(capability(code, caps.take(len)?)?);
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        router_id,
        capabilities,
    })
}

fn capability(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
    let mut r = Reader::new(value, error::OPEN, 0);
    let capability = match code {
        1 if value.len() == 4 => {
            let afi = r.u16()?;
            r.u8()?;
            Capability::MultiProtocol { afi, safi: r.u8()? }
        }
        2 if value.is_empty() => Capability::RouteRefresh,
        64 => {
            let flags_time = r.u16()?;
            let mut families = Vec::new();
            while !r.is_empty() {
                let afi = r.u16()?;
                let safi = r.u8()?;
                let forwarding = r.u8()? & 0x80 != 0;
                families.push(GrFamily {
                    afi,
                    safi,
                    forwarding,
                });
            }
            Capability::GracefulRestart(GracefulRestart {
                restart_state: flags_time & 0x8000 != 0,
                notification: flags_time & 0x4000 != 0,
                restart_time: flags_time & 0x0fff,
                families,
            })
        }
        65 if value.len() == 4 => Capability::FourOctetAs(r.u32()?),
        1 | 2 | 65 => return fail(error::OPEN, 0, []),
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    };
    Ok(capability)
}

/// Attribute type codes.
const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const COMMUNITIES: u8 = 8;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const LARGE_COMMUNITIES: u8 = 32;

fn update(body: &[u8]) -> Result<Update, DecodeError> {
    // Lengths that do not add up: Malformed Attribute List (RFC 4271 6.3).
    let mut r = Reader::new(body, error::UPDATE, 1);
    let withdrawn_len = usize::from(r.u16()?);
    let mut withdrawn = prefixes(r.take(withdrawn_len)?, AFI_IPV4)?;
    let attrs_len = usize::from(r.u16()?);
    let attrs = r.take(attrs_len)?;
    let mut nlri = prefixes(r.data, AFI_IPV4)?;
    let mut seen = [false; 256];
    let mut a = PathAttributes::default();
    let mut r = Reader::new(attrs, error::UPDATE, 1);
    let mut mp_nlri = false;
    let mut end_of_rib_afi = None;
    while !r.is_empty() {
        let flags = r.u8()?;
        let kind = r.u8()?;
        let len = if flags & 0x10 != 0 {
            usize::from(r.u16()?)
        } else {
            usize::from(r.u8()?)
        };
        let value = r.take(len)?;
        if std::mem::replace(&mut seen[usize::from(kind)], true) {
            return fail(error::UPDATE, 1, []);
        }
        let optional = flags & 0x80 != 0;
        let well_known = matches!(kind, ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF);
        let expected_optional = matches!(
            kind,
            MED | COMMUNITIES | MP_REACH | MP_UNREACH | LARGE_COMMUNITIES
        );
        if (well_known && (optional || flags & 0x40 == 0)) || (expected_optional && !optional) {
            return fail(error::UPDATE, 4, attribute_data(flags, kind, value));
        }
        let length_error = || fail(error::UPDATE, 5, attribute_data(flags, kind, value));
        let mut v = Reader::new(value, error::UPDATE, 5);
        match kind {
            ORIGIN => {
                if len != 1 {
                    return length_error();
                }
                a.origin = value[0];
                if a.origin > 2 {
                    return fail(error::UPDATE, 6, attribute_data(flags, kind, value));
                }
            }
            AS_PATH => a.as_path = as_path(value)?,
            NEXT_HOP => {
                if len != 4 {
                    return length_error();
                }
                let hop = Ipv4Addr::from(v.u32()?);
                if hop.is_unspecified() || hop.is_broadcast() || hop.is_multicast() {
                    return fail(error::UPDATE, 8, attribute_data(flags, kind, value));
                }
                a.next_hop = Some(IpAddr::V4(hop));
            }
            MED | LOCAL_PREF => {
                if len != 4 {
                    return length_error();
                }
                let n = v.u32()?;
                *(if kind == MED {
                    &mut a.med
                } else {
                    &mut a.local_pref
                }) = Some(n);
            }
            COMMUNITIES => {
                if len % 4 != 0 {
                    return length_error();
                }
                while !v.is_empty() {
                    a.communities.push((v.u16()?, v.u16()?));
                }
            }
            LARGE_COMMUNITIES => {
                if len % 12 != 0 {
                    return length_error();
                }
                while !v.is_empty() {
                    a.large_communities.push((v.u32()?, v.u32()?, v.u32()?));
                }
            }
            MP_REACH => {
                let mut v = Reader::new(value, error::UPDATE, 9);
                let afi = v.u16()?;
                v.u8()?;
                let hop_len = usize::from(v.u8()?);
                let hop = v.take(hop_len)?;
                v.u8()?;
                if afi == AFI_IPV6 {
                    // RFC 2545: a global address, optionally followed by a link-local one.
                    let address = |at: usize| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(&hop[at..at + 16]);
                        Ipv6Addr::from(b)
                    };
                    if hop_len != 16 && hop_len != 32 {
                        return fail(error::UPDATE, 9, attribute_data(flags, kind, value));
                    }
                    a.next_hop = Some(IpAddr::V6(address(0)));
                    a.link_local_next_hop = (hop_len == 32).then(|| address(16));
                }
                mp_nlri = true;
                nlri.extend(prefixes(v.data, afi)?);
            }
            MP_UNREACH => {
                let mut v = Reader::new(value, error::UPDATE, 9);
                let afi = v.u16()?;
                v.u8()?;
                if v.is_empty() {
                    end_of_rib_afi = Some(afi);
                }
                withdrawn.extend(prefixes(v.data, afi)?);
            }
            _ if !optional => return fail(error::UPDATE, 2, attribute_data(flags, kind, value)),
            _ => {}
        }
    }
    // Routes in the classic NLRI field need the three well-known mandatory attributes.
    let classic_nlri = nlri.iter().any(|p| p.address.is_ipv4());
    if classic_nlri {
        for kind in [ORIGIN, AS_PATH, NEXT_HOP] {
            if !seen[usize::from(kind)] {
                return fail(error::UPDATE, 3, [kind]);
            }
        }
    }
    // MP_REACH_NLRI routes need ORIGIN and AS_PATH too (RFC 4760 section 3).
    if mp_nlri {
        for kind in [ORIGIN, AS_PATH] {
            if !seen[usize::from(kind)] {
                return fail(error::UPDATE, 3, [kind]);
            }
        }
    }
    // MP_UNREACH_NLRI is not a path attribute of routes; without others there are none.
    let path_attributes =
        (seen.iter().enumerate()).any(|(k, s)| *s && k != usize::from(MP_UNREACH));
    // An UPDATE holding only an empty MP_UNREACH_NLRI is an End-of-RIB.
    let end_of_rib_afi =
        end_of_rib_afi.filter(|_| !path_attributes && withdrawn.is_empty() && nlri.is_empty());
    Ok(Update {
        withdrawn,
        attributes: path_attributes.then_some(a),
        nlri,
        end_of_rib_afi,
    })
}

/// The attribute as received, the data of most UPDATE errors.
fn attribute_data(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
    let mut data = vec![flags, kind];
    if flags & 0x10 != 0 {
        data.extend((value.len() as u16).to_be_bytes());
    } else {
        data.push(value.len() as u8);
    }
    data.extend(value);
    data
}

/// AS_PATH with 4-octet ASNs (both sides offer the capability); sets are flattened.
fn as_path(value: &[u8]) -> Result<Vec<u32>, DecodeError> {
    let mut r = Reader::new(value, error::UPDATE, 11);
    let mut path = Vec::new();
    while !r.is_empty() {
        let kind = r.u8()?;
        if !(1..=4).contains(&kind) {
            return fail(error::UPDATE, 11, []);
        }
        let count = usize::from(r.u8()?);
        for _ in 0..count {
            path.push(r.u32()?);
        }
    }
    Ok(path)
}

/// A run of (length, prefix bytes); errors are Invalid Network Field (RFC 4271 6.3).
fn prefixes(mut data: &[u8], afi: u16) -> Result<Vec<Prefix>, DecodeError> {
    let max = match afi {
        AFI_IPV4 => 32,
        AFI_IPV6 => 128,
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while let Some((&length, rest)) = data.split_first() {
        let bytes = usize::from(length).div_ceil(8);
        if length > max || rest.len() < bytes {
            return fail(error::UPDATE, 10, []);
        }
        let mut b = [0u8; 16];
        b[..bytes].copy_from_slice(&rest[..bytes]);
        let address = if afi == AFI_IPV4 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(b))
        };
        out.push(Prefix { address, length });
        data = &rest[bytes..];
    }
    Ok(out)
}
