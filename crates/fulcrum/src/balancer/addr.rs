//! Addresses as the maps hold them: network byte order words, IPv4 in word 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_common::{BACKEND_F_IPV6, BackendRecord};

/// An IPv4 address as its one map word.
pub(crate) fn word(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// An IPv6 address as its four map words.
pub(crate) fn words6(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Either family in four words (IPv4 in word 0, the rest zero).
pub(crate) fn words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [word(v4), 0, 0, 0],
        IpAddr::V6(v6) => words6(v6),
    }
}

/// The address of four map words: IPv6 when `v6`, else IPv4 from word 0.
pub(crate) fn from_words(w: [u32; 4], v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        for (chunk, word) in o.chunks_exact_mut(4).zip(w) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(w[0].to_ne_bytes()))
    }
}

/// The destination a pinned backend record names.
pub(crate) fn address_of(record: &BackendRecord) -> IpAddr {
    from_words(record.address, record.flags & BACKEND_F_IPV6 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_both_families() {
        for ip in ["192.0.2.7", "2001:db8::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(from_words(words(ip), ip.is_ipv6()), ip);
        }
        // Word 0 holds the first four bytes exactly as the packet does.
        let w = words("10.1.2.3".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [10, 1, 2, 3]);
    }
}
