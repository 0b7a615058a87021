//! [`Message`]s to bytes. What we send is built by us, so encoding cannot fail; an UPDATE
//! too large for one message is the caller's to avoid (we send one route per UPDATE).

use std::net::IpAddr;

use super::{
    AFI_IPV6, Capability, HEADER_LEN, Message, Open, PathAttributes, Prefix, SAFI_UNICAST, Update,
};

/// The bytes of `message`, header included.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    out.extend([0, 0]);
    let kind = match message {
        Message::Open(open) => {
            out.push(1);
            encode_open(open, &mut out);
            1
        }
        Message::Update(update) => {
            out.push(2);
            encode_update(update, &mut out);
            2
        }
        Message::Notification(n) => {
            out.push(3);
            out.extend([n.code, n.subcode]);
            out.extend(&n.data);
            3
        }
        Message::Keepalive => {
            out.push(4);
            4
        }
        Message::RouteRefresh { afi, safi } => {
            out.push(5);
            out.extend(afi.to_be_bytes());
            out.extend([0, *safi]);
            5
        }
    };
    debug_assert_eq!(out[HEADER_LEN - 1], kind);
    let length = out.len() as u16;
    out[16..18].copy_from_slice(&length.to_be_bytes());
    out
}

fn encode_open(open: &Open, out: &mut Vec<u8>) {
    out.push(open.version);
    out.extend(open.my_as.to_be_bytes());
    out.extend(open.hold_time.to_be_bytes());
    out.extend(open.router_id.octets());
    let mut caps = Vec::new();
    for c in &open.capabilities {
        let value = capability_value(c);
        caps.push(capability_code(c));
        caps.push(value.len() as u8);
        caps.extend(value);
    }
    // One Capabilities optional parameter holding them all (RFC 5492).
    if caps.is_empty() {
        out.push(0);
    } else {
        out.push(caps.len() as u8 + 2);
        out.extend([2, caps.len() as u8]);
        out.extend(caps);
    }
}

fn capability_code(c: &Capability) -> u8 {
    match c {
        Capability::MultiProtocol { .. } => 1,
        Capability::RouteRefresh => 2,
        Capability::GracefulRestart(_) => 64,
        Capability::FourOctetAs(_) => 65,
        Capability::Unknown { code, .. } => *code,
    }
}

fn capability_value(c: &Capability) -> Vec<u8> {
    match c {
        Capability::MultiProtocol { afi, safi } => {
            let mut v = afi.to_be_bytes().to_vec();
            v.extend([0, *safi]);
            v
        }
        Capability::RouteRefresh => Vec::new(),
        Capability::GracefulRestart(gr) => {
            let mut flags_time = gr.restart_time & 0x0fff;
            if gr.restart_state {
                flags_time |= 0x8000;
            }
            if gr.notification {
                flags_time |= 0x4000;
            }
            let mut v = flags_time.to_be_bytes().to_vec();
            for f in &gr.families {
                v.extend(f.afi.to_be_bytes());
                v.extend([f.safi, if f.forwarding { 0x80 } else { 0 }]);
            }
            v
        }
        Capability::FourOctetAs(asn) => asn.to_be_bytes().to_vec(),
        Capability::Unknown { value, .. } => value.clone(),
    }
}

fn encode_update(update: &Update, out: &mut Vec<u8>) {
    let (withdrawn4, withdrawn6): (Vec<Prefix>, Vec<Prefix>) =
        update.withdrawn.iter().partition(|p| p.address.is_ipv4());
    let (nlri4, nlri6): (Vec<Prefix>, Vec<Prefix>) =
        update.nlri.iter().partition(|p| p.address.is_ipv4());
    let withdrawn = prefix_bytes(&withdrawn4);
    out.extend((withdrawn.len() as u16).to_be_bytes());
    out.extend(withdrawn);
    let mut attrs = Vec::new();
    if let Some(a) = &update.attributes {
        attributes(a, &nlri6, &mut attrs);
    }
    let unreach_afi = match (withdrawn6.is_empty(), update.end_of_rib_afi) {
        (false, _) => Some(AFI_IPV6),
        (true, afi) => afi,
    };
    if let Some(afi) = unreach_afi {
        let mut v = afi.to_be_bytes().to_vec();
        v.push(SAFI_UNICAST);
        v.extend(prefix_bytes(&withdrawn6));
        attribute(0x80, 15, &v, &mut attrs);
    }
    out.extend((attrs.len() as u16).to_be_bytes());
    out.extend(attrs);
    out.extend(prefix_bytes(&nlri4));
}

fn attributes(a: &PathAttributes, nlri6: &[Prefix], out: &mut Vec<u8>) {
    const WELL_KNOWN: u8 = 0x40;
    const OPTIONAL: u8 = 0x80;
    const TRANSITIVE_OPTIONAL: u8 = 0xc0;
    attribute(WELL_KNOWN, 1, &[a.origin], out);
    let mut path = Vec::new();
    if !a.as_path.is_empty() {
        path.extend([2, a.as_path.len() as u8]);
        for asn in &a.as_path {
            path.extend(asn.to_be_bytes());
        }
    }
    attribute(WELL_KNOWN, 2, &path, out);
    if let Some(IpAddr::V4(hop)) = a.next_hop {
        attribute(WELL_KNOWN, 3, &hop.octets(), out);
    }
    if let Some(med) = a.med {
        attribute(OPTIONAL, 4, &med.to_be_bytes(), out);
    }
    if let Some(pref) = a.local_pref {
        attribute(WELL_KNOWN, 5, &pref.to_be_bytes(), out);
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = (a.communities.iter())
            .flat_map(|(x, y)| [x.to_be_bytes(), y.to_be_bytes()].concat())
            .collect();
        attribute(TRANSITIVE_OPTIONAL, 8, &v, out);
    }
    if !nlri6.is_empty() {
        let mut v = AFI_IPV6.to_be_bytes().to_vec();
        v.push(SAFI_UNICAST);
        match (a.next_hop, a.link_local_next_hop) {
            (Some(IpAddr::V6(hop)), None) => {
                v.push(16);
                v.extend(hop.octets());
            }
            (Some(IpAddr::V6(hop)), Some(link_local)) => {
                v.push(32);
                v.extend(hop.octets());
                v.extend(link_local.octets());
            }
            _ => v.push(0),
        }
        v.push(0);
        v.extend(prefix_bytes(nlri6));
        attribute(OPTIONAL, 14, &v, out);
    }
    if !a.large_communities.is_empty() {
        let v: Vec<u8> = (a.large_communities.iter())
            .flat_map(|(x, y, z)| [x.to_be_bytes(), y.to_be_bytes(), z.to_be_bytes()].concat())
            .collect();
        attribute(TRANSITIVE_OPTIONAL, 32, &v, out);
    }
}

/// One attribute, with the extended length flag when its value needs it.
fn attribute(flags: u8, kind: u8, value: &[u8], out: &mut Vec<u8>) {
    if value.len() > 255 {
        out.extend([flags | 0x10, kind]);
        out.extend((value.len() as u16).to_be_bytes());
    } else {
        out.extend([flags, kind, value.len() as u8]);
    }
    out.extend(value);
}

fn prefix_bytes(prefixes: &[Prefix]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in prefixes {
        let octets = match p.address {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        out.push(p.length);
        out.extend(&octets[..usize::from(p.length).div_ceil(8).min(octets.len())]);
    }
    out
}
