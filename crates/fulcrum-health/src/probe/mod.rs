//! The I/O part: one probe against one backend, bounded by the check's timeout. Each failure
//! becomes a [`ProbeError`] whose text is short enough for a console cell and a log line.

pub(crate) mod dns;
mod http;
mod tls;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::Instant,
};

use crate::{CheckSpec, Probe, Rcode};
pub(crate) use tls::server_name;

/// Why a probe failed; the Display text is the "last error" shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The whole probe took longer than the check's timeout.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// Nothing listens on the port (RST or ICMP port unreachable).
    #[error("connect refused")]
    ConnectRefused,
    /// A socket operation failed otherwise.
    #[error("{op}: {kind}")]
    Io {
        /// What was being done: `connect`, `read`, `send`...
        op: &'static str,
        /// The error's kind; the OS text adds nothing an operator can act on.
        kind: io::ErrorKind,
    },
    /// The configured source address cannot be used for this backend.
    #[error("source {addr} cannot reach {target}")]
    Source {
        /// The configured source.
        addr: IpAddr,
        /// The backend.
        target: IpAddr,
    },
    /// The TLS handshake or stream failed (certificate errors land here).
    #[error("tls: {0}")]
    Tls(String),
    /// The answer could not be understood.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The HTTP status was not the expected one.
    #[error("status {got} (want {want})")]
    Status {
        /// What the backend answered.
        got: u16,
        /// What the check expects.
        want: u16,
    },
    /// The HTTP body lacks the expected substring.
    #[error("body lacks {0:?}")]
    Body(String),
    /// The DNS answer does not belong to our query.
    #[error("response id {got:#06x} (want {want:#06x})")]
    DnsId {
        /// The id in the answer.
        got: u16,
        /// The id of the query.
        want: u16,
    },
    /// The DNS answer carries another response code.
    #[error("rcode {got} (want {want})")]
    Rcode {
        /// What the server answered.
        got: Rcode,
        /// What the check expects.
        want: Rcode,
    },
    /// The spec could not be turned into a request (normally caught by validation).
    #[error("invalid check: {0}")]
    Invalid(String),
    /// This host could not run the probe (out of file descriptors, memory, buffers or local
    /// ports; no socket could be created or bound). It says nothing about the backend, so the
    /// state does not count it (see [`ProbeError::is_local`]).
    #[error("local: {reason} ({op})")]
    Local {
        /// What was being done: `socket`, `bind`, `connect`...
        op: &'static str,
        /// What ran out, e.g. `too many open files`.
        reason: String,
    },
}

impl ProbeError {
    fn io(op: &'static str, e: &io::Error) -> Self {
        if let Some(reason) = local_reason(op, e) {
            return Self::Local { op, reason };
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectRefused,
            kind => Self::Io { op, kind },
        }
    }

    /// Whether the failure is this host's own, not evidence against the backend.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local { .. })
    }
}

/// The reason if `e` is a failure of this host rather than of the path to the backend: a
/// socket that cannot be created or bound is always ours; otherwise only the errnos of
/// exhausted local resources.
fn local_reason(op: &'static str, e: &io::Error) -> Option<String> {
    let known = match e.raw_os_error() {
        Some(libc::EMFILE) => Some("too many open files"),
        Some(libc::ENFILE) => Some("too many open files in the system"),
        Some(libc::ENOMEM) => Some("out of memory"),
        Some(libc::ENOBUFS) => Some("no buffer space"),
        Some(libc::EADDRNOTAVAIL) => Some("no local address or port available"),
        _ => None,
    };
    match (known, op) {
        (Some(reason), _) => Some(reason.to_owned()),
        (None, "socket" | "bind") => Some(e.kind().to_string()),
        (None, _) => None,
    }
}

/// How a tunnelled backend is probed: at its service's VIP, through the balancer's own
/// encapsulation, so that only a backend holding the VIP answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    /// The service's VIP, which probes connect to.
    pub vip: IpAddr,
    /// The socket mark that has the balancer encapsulate them to this backend. While the
    /// balancer has no path to it, its probe program drops them: the probes time out.
    pub mark: u32,
    /// The interface probes must leave by (`SO_BINDTODEVICE`): one the balancer's probe
    /// program runs on, so that no probe leaves untunnelled by another route to the VIP
    /// (where any host holding the VIP, or the balancer itself, could answer it).
    pub device: Option<String>,
}

/// Runs one probe of `spec` against `target`, from `source` if given. Returns the latency of a
/// success. Never takes longer than `spec.timeout` (plus scheduling slack).
pub async fn probe(
    target: IpAddr,
    spec: &CheckSpec,
    source: Option<IpAddr>,
) -> Result<Duration, ProbeError> {
    run(target, spec, source, None).await
}

/// Runs one probe of `spec` through the tunnel `via` says (see [`Via`]); the kernel picks
/// the source, by its route to the VIP.
pub async fn probe_via(via: &Via, spec: &CheckSpec) -> Result<Duration, ProbeError> {
    run(via.vip, spec, None, Some(via)).await
}

async fn run(
    target: IpAddr,
    spec: &CheckSpec,
    source: Option<IpAddr>,
    via: Option<&Via>,
) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let addr = SocketAddr::new(target, spec.port);
    let run = async {
        match &spec.probe {
            Probe::Tcp => connect(addr, source, via).await.map(drop),
            Probe::Http(check) => {
                let stream = connect(addr, source, via).await?;
                http::get(stream, addr, check, false).await
            }
            Probe::Https {
                http: check,
                insecure,
            } => {
                let stream = connect(addr, source, via).await?;
                let stream =
                    tls::handshake(stream, target, check.host.as_deref(), *insecure).await?;
                http::get(stream, addr, check, true).await
            }
            Probe::Dns(check) => dns::query(addr, source, via, check).await,
        }
    };
    match tokio::time::timeout(spec.timeout, run).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(spec.timeout)),
    }
}

/// The local address to bind so probes leave from `source`, or the wildcard if none.
fn local_addr(target: IpAddr, source: Option<IpAddr>) -> Result<SocketAddr, ProbeError> {
    match (source, target) {
        (None, IpAddr::V4(_)) => Ok((Ipv4Addr::UNSPECIFIED, 0).into()),
        (None, IpAddr::V6(_)) => Ok((Ipv6Addr::UNSPECIFIED, 0).into()),
        (Some(s), t) if s.is_ipv4() == t.is_ipv4() => Ok((s, 0).into()),
        (Some(addr), target) => Err(ProbeError::Source { addr, target }),
    }
}

async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    via: Option<&Via>,
) -> Result<TcpStream, ProbeError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ProbeError::io("socket", &e))?;
    if let Some(via) = via {
        steer(&socket, via)?;
    }
    if source.is_some() {
        let local = local_addr(addr.ip(), source)?;
        socket.bind(local).map_err(|e| ProbeError::io("bind", &e))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| ProbeError::io("connect", &e))?;
    // Health probes are tiny request/response exchanges: don't let Nagle delay them.
    stream
        .set_nodelay(true)
        .map_err(|e| ProbeError::io("setsockopt", &e))?;
    Ok(stream)
}

/// Marks a probe's socket for the balancer's probe program (`SO_MARK`, which needs
/// CAP_NET_ADMIN) and binds it to the interface that program runs on.
fn steer(socket: &impl std::os::fd::AsRawFd, via: &Via) -> Result<(), ProbeError> {
    let fd = socket.as_raw_fd();
    let mark = via.mark;
    // SAFETY: a valid socket and a 4-byte option value that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        return Err(ProbeError::io("setsockopt SO_MARK", &e));
    }
    let Some(device) = &via.device else {
        return Ok(());
    };
    // SAFETY: a valid socket and the name's bytes, which outlive the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        return Err(ProbeError::io("SO_BINDTODEVICE", &e));
    }
    Ok(())
}

/// A random 64-bit value from the standard library's per-process keyed hasher, which is all
/// the randomness jitter and DNS ids need.
pub(crate) fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u128(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_must_match_the_family() {
        let v4: IpAddr = Ipv4Addr::LOCALHOST.into();
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert_eq!(local_addr(v4, Some(v4)), Ok((v4, 0).into()));
        assert_eq!(
            local_addr(v6, Some(v4)).map_err(|e| e.to_string()),
            Err("source 127.0.0.1 cannot reach ::1".into())
        );
    }

    #[test]
    fn reasons_are_short() {
        let e = ProbeError::Timeout(Duration::from_millis(500));
        assert_eq!(e.to_string(), "timeout after 500ms");
        let e = ProbeError::Status {
            got: 503,
            want: 200,
        };
        assert_eq!(e.to_string(), "status 503 (want 200)");
        let e = ProbeError::Rcode {
            got: Rcode::NXDOMAIN,
            want: Rcode::NOERROR,
        };
        assert_eq!(e.to_string(), "rcode NXDOMAIN (want NOERROR)");
        let e = ProbeError::io("connect", &io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(e.to_string(), "local: too many open files (connect)");
        assert!(e.is_local());
        let e = ProbeError::io("connect", &io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(!e.is_local());
        let e = ProbeError::DnsId {
            got: 1,
            want: 0xbeef,
        };
        assert_eq!(e.to_string(), "response id 0x0001 (want 0xbeef)");
    }
}
