//! Flows named by addresses: the data plane's slot numbers are this balancer's own, so
//! a flow leaves it as a [`FlowRecord`] naming its service and backend.

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
};

use fulcrum_common::{FlowEvent, FlowKey, FlowValue, IPPROTO_TCP, IPPROTO_UDP};

use super::{Balancer, flow_table};
use crate::{BalancerError, FlowRecord, Protocol, ServiceId};

/// Who holds a backend slot now.
#[derive(Clone, Copy)]
struct Owner {
    service: ServiceId,
    address: IpAddr,
    generation: u32,
    resolved: bool,
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
            .filter_map(|e| record(&e.key, &e.value, owners.get(&e.value.backend)?))
            .collect()
    }

    /// Every flow of the flow table that the data plane would forward as it is pinned,
    /// as records: for a peer that asks for all of them, and for sharing long-lived flows
    /// again. SYNs waiting for their handshake's next packet are not in the table yet.
    /// Reads the table in batches of thousands of entries per syscall.
    pub fn scan_flows(&self) -> Result<Vec<FlowRecord>, BalancerError> {
        let entries = flow_table::entries(&self.maps.flows)?;
        let owners = self.owners();
        Ok(entries
            .iter()
            .filter_map(|(key, value)| {
                let owner = owners.get(&value.backend).filter(|o| o.resolved)?;
                record(key, value, owner)
            })
            .collect())
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
/// and the flow belongs to its service.
fn record(key: &FlowKey, value: &FlowValue, owner: &Owner) -> Option<FlowRecord> {
    let protocol = match key.proto {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    let vip = Ipv4Addr::from(key.dst.to_ne_bytes());
    let port = u16::from_be(key.dport);
    let service = owner.service;
    if value.generation != owner.generation
        || service.vip != IpAddr::V4(vip)
        || service.protocol != protocol
        || (service.port != 0 && service.port != port)
    {
        return None;
    }
    Some(FlowRecord {
        protocol,
        client: SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(key.src.to_ne_bytes()),
            u16::from_be(key.sport),
        )),
        vip: SocketAddr::V4(SocketAddrV4::new(vip, port)),
        service_port: service.port,
        backend: owner.address,
    })
}

/// The flow table's key for a record's 5-tuple; `None` unless both ends are IPv4.
pub(super) fn flow_key(r: &FlowRecord) -> Option<FlowKey> {
    let (SocketAddr::V4(client), SocketAddr::V4(vip)) = (r.client, r.vip) else {
        return None;
    };
    Some(FlowKey {
        src: u32::from_ne_bytes(client.ip().octets()),
        dst: u32::from_ne_bytes(vip.ip().octets()),
        sport: client.port().to_be(),
        dport: vip.port().to_be(),
        proto: r.protocol.number(),
        _pad: 0,
        _pad2: 0,
    })
}
