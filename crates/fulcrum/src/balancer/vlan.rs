//! VLAN trunks: the balancer attaches to a trunk and reaches backends on its VLANs. The
//! kernel resolves their neighbours on the VLAN sub-interfaces (so routes and neighbour
//! entries are the sub-interfaces'), while the data plane sends from the trunk with the
//! backend's 802.1Q tag (`BACKEND_V_VLAN`). Which VLAN a sub-interface is, and its parent,
//! come from netlink.

use fulcrum_common::{BACKEND_V_VLAN, BackendValue};

use super::Balancer;
use crate::netlink::VlanLink;

impl Balancer {
    /// The attached trunk and VLAN id behind `ifindex`, when it is a VLAN sub-interface
    /// of an interface the balancer is attached to; `None` for an attached interface or
    /// anything else. Found sub-interfaces are remembered (a link's parent and id do not
    /// change without the link being recreated, which gives it a new index).
    pub(super) fn trunk(&mut self, ifindex: u32) -> Option<VlanLink> {
        if self.interfaces.contains_key(&ifindex) {
            return None;
        }
        if let Some(v) = self.vlan_links.get(&ifindex) {
            return Some(*v);
        }
        let link = self.netlink().ok()?.link(ifindex).ok()?;
        let vlan = link
            .vlan
            .filter(|v| self.interfaces.contains_key(&v.parent))?;
        self.vlan_links.insert(ifindex, vlan);
        Some(vlan)
    }
}

/// Makes a backend value leave through the trunk with the VLAN's tag.
pub(super) fn tag(v: &mut BackendValue, vlan: VlanLink) {
    v.ifindex = vlan.parent;
    v.flags |= BACKEND_V_VLAN;
    v.vlan = (vlan.id & 0x0fff).to_be();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_value_leaves_through_the_trunk_with_the_vlan_id_in_network_order() {
        let mut v = BackendValue {
            ifindex: 9,
            ..Default::default()
        };
        tag(
            &mut v,
            VlanLink {
                parent: 3,
                id: 0x123,
            },
        );
        assert_eq!(v.ifindex, 3);
        assert_eq!(v.flags & BACKEND_V_VLAN, BACKEND_V_VLAN);
        assert_eq!(
            v.vlan.to_ne_bytes(),
            [0x01, 0x23],
            "TCI as the frame holds it"
        );
    }
}
