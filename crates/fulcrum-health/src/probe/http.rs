//! A minimal HTTP/1.1 client: one GET with `Connection: close`, the status line, and the body
//! only when a substring is expected. Enough for health endpoints, a few dozen lines to audit.

use std::{io, net::SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ProbeError;
use crate::{BODY_LIMIT, HttpCheck};

/// Headers larger than this are not a health endpoint's.
const HEADER_LIMIT: usize = 16 * 1024;

/// Sends the GET and checks the answer.
pub(super) async fn get<S>(
    mut stream: S,
    addr: SocketAddr,
    check: &HttpCheck,
    tls: bool,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = request(addr, check, tls);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| read_error("write", &e))?;
    stream.flush().await.map_err(|e| read_error("write", &e))?;

    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEADER_LIMIT {
            return Err(ProbeError::Malformed("headers too large"));
        }
        if read_some(&mut stream, &mut buf).await? == 0 {
            return Err(ProbeError::Malformed("closed before the headers ended"));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ProbeError::Malformed("headers are not text"))?;
    let status = status(head)?;
    if status != check.expect_status {
        return Err(ProbeError::Status {
            got: status,
            want: check.expect_status,
        });
    }
    let Some(want) = &check.expect_body else {
        return Ok(());
    };

    let framing = framing(head);
    let mut body = buf.split_off(head_end);
    loop {
        let (found, complete) = match framing {
            Framing::Chunked => {
                let (decoded, complete) = decode_chunked(&body)?;
                (find(&decoded, want.as_bytes()).is_some(), complete)
            }
            Framing::Length(n) => (find(&body, want.as_bytes()).is_some(), body.len() >= n),
            Framing::Close => (find(&body, want.as_bytes()).is_some(), false),
        };
        if found {
            return Ok(());
        }
        if complete || body.len() >= BODY_LIMIT || read_some(&mut stream, &mut body).await? == 0 {
            return Err(ProbeError::Body(want.clone()));
        }
    }
}

fn request(addr: SocketAddr, check: &HttpCheck, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    let host = match (&check.host, addr) {
        (Some(h), _) => h.clone(),
        (None, a) if a.port() == default_port => match a {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        },
        (None, a) => a.to_string(),
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fulcrum-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.path
    )
}

/// Reads what is available; EOF is 0. A TLS peer that closes without close_notify is EOF too:
/// with `Connection: close` that is how many servers end the answer.
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, ProbeError> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(read_error("read", &e)),
    }
}

/// Keeps TLS failures readable ("tls: ...") instead of hiding them behind an io kind.
pub(super) fn read_error(op: &'static str, e: &io::Error) -> ProbeError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ProbeError::Tls(tls.to_string()),
        None => ProbeError::io(op, e),
    }
}

fn status(head: &str) -> Result<u16, ProbeError> {
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse()
            .map_err(|_| ProbeError::Malformed("bad status code")),
        _ => Err(ProbeError::Malformed("bad status line")),
    }
}

#[derive(Debug, PartialEq)]
enum Framing {
    Chunked,
    Length(usize),
    Close,
}

fn framing(head: &str) -> Framing {
    let mut framing = Framing::Close;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return Framing::Chunked;
        }
        if name.eq_ignore_ascii_case("content-length")
            && let Ok(n) = value.parse()
        {
            framing = Framing::Length(n);
        }
    }
    framing
}

/// Decodes as much of a chunked body as has arrived: (data so far, whether the last chunk was
/// seen). Trailers are ignored.
fn decode_chunked(mut rest: &[u8]) -> Result<(Vec<u8>, bool), ProbeError> {
    let bad = ProbeError::Malformed("bad chunked encoding");
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok((out, false));
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| bad.clone())?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad.clone())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((out, true));
        }
        if rest.len() < size {
            out.extend_from_slice(rest);
            return Ok((out, false));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        match rest {
            [b'\r', b'\n', tail @ ..] => rest = tail,
            [] | [b'\r'] => return Ok((out, false)),
            _ => return Err(bad),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: Option<&str>) -> HttpCheck {
        HttpCheck {
            path: "/health".into(),
            host: host.map(Into::into),
            expect_status: 200,
            expect_body: None,
        }
    }

    #[test]
    fn request_names_the_host() {
        let r = request("10.0.0.1:80".parse().unwrap(), &check(None), false);
        assert!(
            r.starts_with("GET /health HTTP/1.1\r\nHost: 10.0.0.1\r\n"),
            "{r}"
        );
        let r = request("[::1]:8080".parse().unwrap(), &check(None), false);
        assert!(r.contains("\r\nHost: [::1]:8080\r\n"), "{r}");
        let r = request(
            "10.0.0.1:443".parse().unwrap(),
            &check(Some("a.example")),
            true,
        );
        assert!(
            r.contains("\r\nHost: a.example\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    #[test]
    fn status_line() {
        assert_eq!(status("HTTP/1.1 503 Service Unavailable\r\n"), Ok(503));
        assert_eq!(status("HTTP/1.0 200\r\n"), Ok(200));
        assert!(status("SSH-2.0-OpenSSH\r\n").is_err());
        assert!(status("HTTP/1.1 20x OK\r\n").is_err());
    }

    #[test]
    fn framing_from_headers() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(framing(head), Framing::Length(12));
        let head =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(framing(head), Framing::Chunked);
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
    }

    #[test]
    fn chunked_bodies() {
        let body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n";
        assert_eq!(decode_chunked(body), Ok((b"Wikipedia ".to_vec(), true)));
        assert_eq!(decode_chunked(b"4\r\nWi"), Ok((b"Wi".to_vec(), false)));
        assert_eq!(
            decode_chunked(b"4\r\nWiki\r"),
            Ok((b"Wiki".to_vec(), false))
        );
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"2\r\nabXX").is_err());
        assert!(decode_chunked(b"ffffffffffffffffffffff\r\n").is_err());
    }
}
