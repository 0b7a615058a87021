//! The link-local address beside a global one: RFC 2545 next hops carry both, so that
//! routers on the link can use the address that survives renumbering.

use std::{ffi::CStr, net::Ipv6Addr};

/// The link-local IPv6 address of the interface that holds `global`, if it has one.
pub fn link_local_beside(global: Ipv6Addr) -> Option<Ipv6Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut addresses = Vec::new();
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of its family.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family != libc::AF_INET6 {
            continue;
        }
        // SAFETY: an AF_INET6 address is a sockaddr_in6; the name is a C string.
        let (sin6, name) = unsafe {
            (
                &*(ifa.ifa_addr as *const libc::sockaddr_in6),
                CStr::from_ptr(ifa.ifa_name).to_owned(),
            )
        };
        addresses.push((name, Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    let (interface, _) = addresses.iter().find(|(_, a)| *a == global)?;
    (addresses.iter())
        .find(|(name, a)| name == interface && a.is_unicast_link_local())
        .map(|(_, a)| *a)
}
