//! An HTTP/1.1 answer: reading it off the connection and saying what a failed one means.

use std::io::{self, BufRead as _, Read as _};

use anyhow::bail;
use serde::Deserialize;

use super::{
    endpoint::Endpoint,
    text::{one_line, truncate},
};

/// The largest answer accepted, far above any real one.
const MAX_BODY: u64 = 64 << 20;

/// An HTTP answer.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    reason: String,
    pub(super) body: Vec<u8>,
}

impl Response {
    /// The body of a 2xx answer; otherwise one line saying what went wrong. `what` names
    /// the operation, `token` is what was sent.
    pub(super) fn success(
        self,
        what: &str,
        api: &Endpoint,
        token: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        match self.status {
            200..=299 => Ok(self.body),
            401 if token.is_none() => bail!(
                "{what}: the API at {} needs a token: pass --token TOKEN or --token-file PATH, \
                 or set FULCRUM_TOKEN",
                api.base()
            ),
            401 => bail!(
                "{what}: the API at {} refused the token: it must be the content of the \
                 daemon's api.token_file (without one, the daemon refuses every change)",
                api.base()
            ),
            404 if self.server_error().is_none() => bail!(
                "{what}: {} answered 404 {}; is --api pointing at the fulcrum API?",
                api.base(),
                one_line(&self.reason)
            ),
            500..=599 => bail!("{what} failed in the daemon: {}", self.message()),
            _ => bail!("{what}: {}", self.message()),
        }
    }

    /// The `error` of a JSON error answer.
    fn server_error(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .map(|b| b.error)
    }

    /// The server's error message, or the status and the start of the body, on one line.
    pub(super) fn message(&self) -> String {
        if let Some(error) = self.server_error() {
            return one_line(&error);
        }
        let text = String::from_utf8_lossy(&self.body);
        let text = one_line(text.trim());
        let mut message = format!("{} {}", self.status, one_line(&self.reason));
        if !text.is_empty() {
            message.push_str(": ");
            message.push_str(&truncate(&text, 200));
        }
        message
    }
}

/// Why an answer could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one answer: status line, headers, and a body framed by `Transfer-Encoding:
/// chunked`, `Content-Length` or the end of the connection. Informational (1xx) answers
/// are skipped.
pub(super) fn read_response(mut reader: impl io::BufRead) -> Result<Response, ReadError> {
    loop {
        let line = read_line(&mut reader)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(ReadError::Malformed(format!(
                "status line '{}'",
                truncate(&one_line(&line), 60)
            )));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ReadError::Malformed("no status code".into()))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut content_length = None;
        let mut chunked = false;
        for n in 0.. {
            let line = read_line(&mut reader)?;
            if line.is_empty() {
                break;
            }
            if n == 100 {
                return Err(ReadError::Malformed("over 100 header lines".into()));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ReadError::Malformed("a header without ':'".into()))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<u64>().map_err(|_| {
                    ReadError::Malformed(format!("Content-Length '{}'", one_line(value)))
                })?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if chunked {
            read_chunked(&mut reader)?
        } else if let Some(length) = content_length {
            if length > MAX_BODY {
                return Err(ReadError::Malformed(format!("a body of {length} bytes")));
            }
            let mut body = Vec::with_capacity(length as usize);
            reader.by_ref().take(length).read_to_end(&mut body)?;
            if (body.len() as u64) < length {
                return Err(ReadError::Malformed(format!(
                    "the body ended after {} of {length} bytes",
                    body.len()
                )));
            }
            body
        } else {
            let mut body = Vec::new();
            reader.by_ref().take(MAX_BODY).read_to_end(&mut body)?;
            body
        };
        return Ok(Response {
            status,
            reason,
            body,
        });
    }
}

/// A chunked body, trailers skipped.
fn read_chunked(reader: &mut impl io::BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| ReadError::Malformed(format!("chunk size '{}'", one_line(size))))?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(ReadError::Malformed("a body over 64 MiB".into()));
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if ((body.len() - before) as u64) < size {
            return Err(ReadError::Malformed("the body ended inside a chunk".into()));
        }
        if !read_line(reader)?.is_empty() {
            return Err(ReadError::Malformed("no line break after a chunk".into()));
        }
    }
}

/// One header-section line without its line break; the end of the stream is malformed.
fn read_line(reader: &mut impl io::BufRead) -> Result<String, ReadError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(16 * 1024)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(ReadError::Malformed(if line.is_empty() {
            "the connection closed before the answer ended".into()
        } else {
            "a line too long or cut short".into()
        }));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_chunked_and_unframed_bodies() {
        let r = read_response(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
                [..],
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = read_response(
            &b"HTTP/1.1 422 Unprocessable Entity\r\ntransfer-encoding: chunked\r\n\r\n\
               4;ext=1\r\n{\"er\r\n10\r\nror\":\"bad line\"}\r\n0\r\nTrailer: x\r\n\r\n"[..],
        )
        .unwrap();
        assert_eq!(r.status, 422);
        assert_eq!(r.reason, "Unprocessable Entity");
        assert_eq!(r.server_error().as_deref(), Some("bad line"));
        let r = read_response(&b"HTTP/1.0 200 OK\nServer: x\n\n[1]"[..]).unwrap();
        assert_eq!(r.body, b"[1]");
    }

    #[test]
    fn refuses_malformed_answers() {
        for answer in [
            &b""[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2",
        ] {
            assert!(
                matches!(read_response(answer), Err(ReadError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
