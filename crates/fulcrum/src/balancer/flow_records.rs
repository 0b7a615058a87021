//! Flows named by addresses: the data plane's slot numbers are this balancer's own, so
//! a flow leaves it as a [`FlowRecord`] naming its service and backend.

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, SocketAddr},
};

use fulcrum_common::{
    FLOW_FAMILY_IPV4, FLOW_FAMILY_IPV6, FlowEvent, FlowKey, FlowKey6, FlowValue, IPPROTO_TCP,
    IPPROTO_UDP,
};

use super::{
    Balancer,
    addr::{from_words, words},
    flow_table,
};
use crate::{BalancerError, FlowRecord, Protocol, ServiceId};

/// Who holds a backend slot now.
#[derive(Clone, Copy)]
struct Owner {
    service: ServiceId,
    address: IpAddr,
    generation: u32,
    resolved: bool,
}

/// A flow table key of either family.
pub(super) enum Key {
    V4(FlowKey),
    V6(FlowKey6),
}

impl Balancer {
    /// The flows of `events` as records another balancer can import. Events whose slot
    /// was since given to another backend, or freed, are dropped: their flow no longer
    /// goes where they say.
    pub fn flow_records(&self, events: &[FlowEvent]) -> Vec<FlowRecord> {
        if events.is_empty() {
            return Vec::new();
        }
        let owners = self.owners();
        events
            .iter()
            .filter(|e| e.family == FLOW_FAMILY_IPV4 || e.family == FLOW_FAMILY_IPV6)
            .filter_map(|e| {
                let v6 = e.family == FLOW_FAMILY_IPV6;
                record(&e.key, v6, &e.value, owners.get(&e.value.backend)?)
            })
            .collect()
    }

    /// Every flow of the flow table that the data plane would forward as it is pinned,
    /// as records: for a peer that asks for all of them, and for sharing long-lived flows
    /// again. SYNs waiting for their handshake's next packet are not in the table yet.
    /// Reads the table in batches of thousands of entries per syscall.
    pub fn scan_flows(&self) -> Result<Vec<FlowRecord>, BalancerError> {
        let entries = flow_table::entries::<FlowKey>(&self.maps.flows)?;
        let entries6 = flow_table::entries::<FlowKey6>(&self.maps.flows6)?;
        let owners = self.owners();
        let resolved = |value: &FlowValue| owners.get(&value.backend).filter(|o| o.resolved);
        let v4 = entries.iter().filter_map(|(key, value)| {
            record(&FlowKey6::from_v4(key), false, value, resolved(value)?)
        });
        let v6 = entries6
            .iter()
            .filter_map(|(key, value)| record(key, true, value, resolved(value)?));
        Ok(v4.chain(v6).collect())
    }

    /// Every claimed backend slot's service, address and generation.
    fn owners(&self) -> StdHashMap<u32, Owner> {
        let mut owners = StdHashMap::new();
        for (id, state) in &self.services {
            for (address, d) in &state.destinations {
                let generation = self
                    .generations
                    .get(d.backend as usize)
                    .copied()
                    .unwrap_or_default();
                owners.insert(
                    d.backend,
                    Owner {
                        service: *id,
                        address: *address,
                        generation,
                        resolved: d.neighbour.is_some(),
                    },
                );
            }
        }
        owners
    }
}

/// The record of a flow pinned to `owner`'s slot, if the pin is of its current holder
/// and the flow belongs to its service. `key` holds an IPv4 flow in word 0 unless `v6`.
fn record(key: &FlowKey6, v6: bool, value: &FlowValue, owner: &Owner) -> Option<FlowRecord> {
    let protocol = match key.proto {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    let vip = from_words(key.dst, v6);
    let port = u16::from_be(key.dport);
    let service = owner.service;
    if value.generation != owner.generation
        || service.vip != vip
        || service.protocol != protocol
        || (service.port != 0 && service.port != port)
    {
        return None;
    }
    Some(FlowRecord {
        protocol,
        client: SocketAddr::new(from_words(key.src, v6), u16::from_be(key.sport)),
        vip: SocketAddr::new(vip, port),
        service_port: service.port,
        backend: owner.address,
    })
}

/// The flow table's key for a record's 5-tuple; `None` when its ends are of two families.
pub(super) fn flow_key(r: &FlowRecord) -> Option<Key> {
    let (sport, dport, proto) = (
        r.client.port().to_be(),
        r.vip.port().to_be(),
        r.protocol.number(),
    );
    match (r.client.ip(), r.vip.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Some(Key::V4(
            FlowKey6 {
                src: words(r.client.ip()),
                dst: words(r.vip.ip()),
                sport,
                dport,
                proto,
                _pad: 0,
                _pad2: 0,
            }
            .to_v4(),
        )),
        (IpAddr::V6(_), IpAddr::V6(_)) => Some(Key::V6(FlowKey6 {
            src: words(r.client.ip()),
            dst: words(r.vip.ip()),
            sport,
            dport,
            proto,
            _pad: 0,
            _pad2: 0,
        })),
        _ => None,
    }
}
