//! The VIP side of services: each service's entry in its family's map, and per VIP the
//! service count, echo flag and filter bucket.

use std::net::IpAddr;

use fulcrum_common::{
    ServiceValue, VIP_F_ECHO, VipInfo, maps, vip_filter_bucket, vip_filter_bucket6,
};

use super::{Balancer, addr, service_key, service_key6};
use crate::{BalancerError, ServiceId};

impl Balancer {
    /// Writes a service's entry in its family's map.
    pub(super) fn write_service(
        &mut self,
        id: &ServiceId,
        value: ServiceValue,
    ) -> Result<(), BalancerError> {
        match id.vip {
            IpAddr::V4(v4) => self
                .maps
                .services
                .insert(service_key(id, v4), value, 0)
                .map_err(BalancerError::map(maps::SERVICES, "write")),
            IpAddr::V6(v6) => self
                .maps
                .services6
                .insert(service_key6(id, v6), value, 0)
                .map_err(BalancerError::map(maps::SERVICES6, "write")),
        }
    }

    /// Counts services per VIP (in its family's map, with the echo flag: on only while
    /// every service on the VIP answers echo, as `Service::icmp_echo` documents);
    /// the VIP's filter bucket counts VIPs of both families, so the data plane's first
    /// test stays exact about "no VIP here".
    pub(super) fn set_vip_refs(&mut self, vip: IpAddr, delta: i32) -> Result<(), BalancerError> {
        let echo = self
            .services
            .iter()
            .filter(|(id, _)| id.vip == vip)
            .all(|(_, s)| s.icmp_echo);
        let (now, bucket) = match vip {
            IpAddr::V4(v4) => {
                let key = addr::word(v4);
                let now = self.maps.vips.get(&key, 0).map(|v| v.services);
                (now.unwrap_or(0), vip_filter_bucket(key))
            }
            IpAddr::V6(v6) => {
                let key = addr::words6(v6);
                let now = self.maps.vips6.get(&key, 0).map(|v| v.services);
                (now.unwrap_or(0), vip_filter_bucket6(&key))
            }
        };
        let next = now.saturating_add_signed(delta);
        let vips_in_bucket = self
            .maps
            .vip_filter
            .get(&bucket, 0)
            .map_err(BalancerError::map(maps::VIP_FILTER, "read"))?;
        if next == 0 {
            match vip {
                IpAddr::V4(v4) => self
                    .maps
                    .vips
                    .remove(&addr::word(v4))
                    .map_err(BalancerError::map(maps::VIPS, "remove"))?,
                IpAddr::V6(v6) => self
                    .maps
                    .vips6
                    .remove(&addr::words6(v6))
                    .map_err(BalancerError::map(maps::VIPS6, "remove"))?,
            }
            return self
                .maps
                .vip_filter
                .set(bucket, vips_in_bucket.saturating_sub(1), 0)
                .map_err(BalancerError::map(maps::VIP_FILTER, "write"));
        }
        let info = VipInfo {
            services: next,
            flags: if echo { VIP_F_ECHO } else { 0 },
        };
        match vip {
            IpAddr::V4(v4) => self
                .maps
                .vips
                .insert(addr::word(v4), info, 0)
                .map_err(BalancerError::map(maps::VIPS, "insert"))?,
            IpAddr::V6(v6) => self
                .maps
                .vips6
                .insert(addr::words6(v6), info, 0)
                .map_err(BalancerError::map(maps::VIPS6, "insert"))?,
        }
        if now == 0 {
            self.maps
                .vip_filter
                .set(bucket, vips_in_bucket + 1, 0)
                .map_err(BalancerError::map(maps::VIP_FILTER, "write"))?;
        }
        Ok(())
    }
}
