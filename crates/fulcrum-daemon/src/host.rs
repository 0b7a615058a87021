//! This host's own addresses, so that a VIP on one of them (which would take SSH and
//! everything else on that address into the balancer) is refused unless the service says
//! `allow_local_vip: true`.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fulcrum_config::{Config, Problem};

/// The IPv4 and IPv6 addresses of every interface in this network namespace.
pub(crate) fn addresses() -> io::Result<HashSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = HashSet::new();
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*at };
        // SAFETY: a non-null ifa_addr points at a sockaddr.
        let family =
            (!entry.ifa_addr.is_null()).then(|| i32::from(unsafe { (*entry.ifa_addr).sa_family }));
        if family == Some(libc::AF_INET) {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            out.insert(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
        } else if family == Some(libc::AF_INET6) {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
            out.insert(Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
        }
        at = entry.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A problem for every service whose VIP is an address of this host without
/// `allow_local_vip: true`.
pub(crate) fn local_vip_problems(config: &Config) -> Vec<String> {
    let local = match addresses() {
        Ok(local) => local,
        Err(e) => return vec![format!("reading this host's addresses failed: {e}")],
    };
    config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.allow_local_vip && local.contains(&s.vip))
        .map(|(i, s)| {
            let problem: Problem = config.vip_problem(
                i,
                format!(
                    "{} is an address of this host; a service on it takes that address's \
                     traffic (SSH included) into the balancer. Use another VIP, or set \
                     `allow_local_vip: true` if a VRRP daemon moves this VIP onto the host",
                    s.vip
                ),
            );
            problem.to_string()
        })
        .collect()
}
