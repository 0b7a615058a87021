//! TCP MD5 signatures (RFC 2385) through Linux's `TCP_MD5SIG` socket option: set on a
//! connecting socket before `connect`, and on the listening socket once per peer. Also the
//! one other socket option the listener needs (`IPV6_V6ONLY`).

use std::{io, net::IpAddr, os::fd::RawFd};

/// `struct tcp_md5sig` of `linux/tcp.h`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// Longest key the kernel takes.
pub const MAX_KEY: usize = 80;

/// Sets (or, with an empty key, removes) the MD5 key for segments to and from `peer`.
pub fn set_key(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP MD5 key has at most {MAX_KEY} bytes"),
        ));
    }
    // An IPv6 socket (a dual-stack listener) takes IPv4 peers' keys as mapped addresses.
    let peer = match peer {
        IpAddr::V4(a) if domain(fd)? == libc::AF_INET6 => IpAddr::V6(a.to_ipv6_mapped()),
        other => other,
    };
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut sig.addr as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut sig.addr as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: fd is a socket the caller owns; sig is a valid tcp_md5sig of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const _ as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's address family (`SO_DOMAIN`).
fn domain(fd: RawFd) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is a socket the caller owns; value and len are valid for the kernel to fill.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            &mut value as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `IPV6_V6ONLY` on an IPv6 socket: false lets it accept IPv4 connections too.
pub fn set_v6only(fd: RawFd, only: bool) -> io::Result<()> {
    let value = libc::c_int::from(only);
    // SAFETY: fd is an IPv6 socket the caller owns; value is a valid int option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
