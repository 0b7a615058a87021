//! The few bytes of DNS a health check needs (RFC 1035 §4.1): a one-question query, and the
//! id, QR bit and RCODE of the answer.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::ProbeError;
use crate::{DnsCheck, QueryType, Rcode};

/// Encodes a name as length-prefixed labels ending with the root label. `""` and `"."` are
/// the root; one trailing dot is allowed.
pub(crate) fn encode_name(name: &str) -> Result<Vec<u8>, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if !label.is_ascii() {
                return Err("names must be ASCII (use the xn-- form)");
            }
            match label.len() {
                0 => return Err("empty label"),
                n @ 1..=63 => out.push(n as u8),
                _ => return Err("label longer than 63 bytes"),
            }
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() > 255 {
        return Err("name longer than 255 bytes");
    }
    Ok(out)
}

/// A standard query with recursion desired, one question of class IN.
pub(crate) fn encode_query(id: u16, name: &str, qtype: QueryType) -> Result<Vec<u8>, &'static str> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1, AN=NS=AR=0
    q.extend_from_slice(&encode_name(name)?);
    q.extend_from_slice(&qtype.0.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(q)
}

/// Checks that `answer` answers query `id` with `want`.
pub(crate) fn check_answer(answer: &[u8], id: u16, want: Rcode) -> Result<(), ProbeError> {
    let Some(&[i0, i1, f0, f1, ..]) = answer.first_chunk::<12>() else {
        return Err(ProbeError::Malformed("shorter than a DNS header"));
    };
    let got = u16::from_be_bytes([i0, i1]);
    if got != id {
        return Err(ProbeError::DnsId { got, want: id });
    }
    if f0 & 0x80 == 0 {
        return Err(ProbeError::Malformed("not a DNS response"));
    }
    let got = Rcode(f1 & 0x0f);
    if got != want {
        return Err(ProbeError::Rcode { got, want });
    }
    Ok(())
}

pub(super) async fn query(
    addr: SocketAddr,
    source: Option<IpAddr>,
    via: Option<&super::Via>,
    check: &DnsCheck,
) -> Result<(), ProbeError> {
    let id = super::random_u64(u64::from(addr.port())) as u16;
    let query = encode_query(id, &check.query, check.query_type)
        .map_err(|why| ProbeError::Invalid(format!("query {:?}: {why}", check.query)))?;
    let socket = UdpSocket::bind(super::local_addr(addr.ip(), source)?)
        .await
        .map_err(|e| ProbeError::io("bind", &e))?;
    if let Some(via) = via {
        super::steer(&socket, via)?;
    }
    // Connected, so the kernel drops datagrams from anyone else and reports ICMP unreachable.
    socket
        .connect(addr)
        .await
        .map_err(|e| ProbeError::io("connect", &e))?;
    socket
        .send(&query)
        .await
        .map_err(|e| ProbeError::io("send", &e))?;
    let mut buf = [0u8; 1500];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|e| ProbeError::io("recv", &e))?;
    check_answer(&buf[..n], id, check.expect_rcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes() {
        let q = encode_query(0xbeef, "example.com.", QueryType::AAAA).unwrap();
        #[rustfmt::skip]
        let want = [
            0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
            0, 28, 0, 1,
        ];
        assert_eq!(q, want);
    }

    #[test]
    fn names() {
        assert_eq!(encode_name(""), Ok(vec![0]));
        assert_eq!(encode_name("."), Ok(vec![0]));
        assert_eq!(encode_name("a"), Ok(vec![1, b'a', 0]));
        assert_eq!(encode_name("a..b"), Err("empty label"));
        assert_eq!(encode_name(".a"), Err("empty label"));
        assert_eq!(
            encode_name(&"x".repeat(64)),
            Err("label longer than 63 bytes")
        );
        assert!(encode_name(&"x".repeat(63)).is_ok());
        let long = ["y".repeat(63).as_str(); 4].join(".");
        assert_eq!(encode_name(&long), Err("name longer than 255 bytes"));
        assert!(encode_name("bücher.example").is_err());
    }

    fn answer(id: u16, flags: u16) -> Vec<u8> {
        let mut a = id.to_be_bytes().to_vec();
        a.extend_from_slice(&flags.to_be_bytes());
        a.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        a
    }

    #[test]
    fn answers() {
        assert_eq!(check_answer(&answer(7, 0x8180), 7, Rcode::NOERROR), Ok(()));
        assert_eq!(
            check_answer(&answer(7, 0x8183), 7, Rcode::NOERROR),
            Err(ProbeError::Rcode {
                got: Rcode::NXDOMAIN,
                want: Rcode::NOERROR
            })
        );
        assert_eq!(check_answer(&answer(7, 0x8183), 7, Rcode::NXDOMAIN), Ok(()));
        assert_eq!(
            check_answer(&answer(8, 0x8180), 7, Rcode::NOERROR),
            Err(ProbeError::DnsId { got: 8, want: 7 })
        );
        assert_eq!(
            check_answer(&answer(7, 0x0100), 7, Rcode::NOERROR),
            Err(ProbeError::Malformed("not a DNS response"))
        );
        assert!(check_answer(&[0, 7, 0x81], 7, Rcode::NOERROR).is_err());
    }
}
