//! The API's address, from `--api`, and one request to it on a new connection.

use std::{
    fmt::Write as _,
    io::{self, BufReader, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::anyhow;

use super::{
    response::{ReadError, Response, read_response},
    text::one_line,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may stay silent while answering (a reload reads and applies a file).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The API's address, from `--api`.
#[derive(Debug, PartialEq)]
pub(super) struct Endpoint {
    /// `HOST[:PORT]` as given, for the `Host` header and messages.
    authority: String,
    /// The host to connect to, without IPv6 brackets.
    host: String,
    port: u16,
    /// A path the API is mounted under, without a trailing slash; usually empty.
    prefix: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PREFIX]`.
    pub(super) fn parse(url: &str) -> anyhow::Result<Self> {
        let invalid = |why: &str| anyhow!("--api '{}': {why}", one_line(url));
        let Some(rest) = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
        else {
            if url
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            {
                return Err(invalid(
                    "https is not supported; the API speaks plain HTTP (http://HOST:PORT)",
                ));
            }
            return Err(invalid("expected http://HOST[:PORT]"));
        };
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("expected http://HOST[:PORT]"));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported; use --token",
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("expected ':PORT' after ']'"))?,
                    ),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(invalid(
                        "write an IPv6 address in brackets: http://[::1]:9180",
                    ));
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => 80,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?,
        };
        Ok(Self {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The full URL of `path`, for messages.
    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }

    /// The API's URL, for messages.
    pub(super) fn base(&self) -> String {
        self.url("")
    }

    /// One request on a new connection; the whole answer, whatever its status.
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fulcrum/{}\r\n\
             Accept: application/json\r\nConnection: close\r\n",
            self.prefix,
            self.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = token {
            let _ = write!(head, "Authorization: Bearer {token}\r\n");
        }
        if method != "GET" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let io = |e: io::Error| self.io_error(e);
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;
        read_response(BufReader::new(stream)).map_err(|e| match e {
            ReadError::Io(e) => self.io_error(e),
            ReadError::Malformed(why) => anyhow!(
                "{} sent a malformed HTTP answer ({why}); is --api pointing at the fulcrum API?",
                self.base()
            ),
        })
    }

    fn connect(&self) -> anyhow::Result<TcpStream> {
        let unreachable = |why: String| {
            anyhow!(
                "cannot reach the fulcrum API at {}: {why}; is `fulcrum run` running there? \
                 Point --api (or FULCRUM_API) at its api.listen address",
                self.base()
            )
        };
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| {
                anyhow!(
                    "cannot resolve the host of the API at {} ({e}); check --api (or FULCRUM_API)",
                    self.base()
                )
            })?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let timeouts = stream
                        .set_read_timeout(Some(IO_TIMEOUT))
                        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
                    timeouts.map_err(|e| self.io_error(e))?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(unreachable(match last {
            Some(e) if e.kind() == io::ErrorKind::TimedOut => {
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
            }
            Some(e) => e.to_string(),
            None => format!("'{}' has no address", self.host),
        }))
    }

    fn io_error(&self, e: io::Error) -> anyhow::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow!(
                "the fulcrum API at {} did not answer within {} s",
                self.base(),
                IO_TIMEOUT.as_secs()
            ),
            _ => anyhow!(
                "the connection to the fulcrum API at {} failed: {e}",
                self.base()
            ),
        }
    }
}

/// `text` as one URL path segment.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let api = Endpoint::parse("http://127.0.0.1:9180").unwrap();
        assert_eq!(
            api,
            Endpoint {
                authority: "127.0.0.1:9180".into(),
                host: "127.0.0.1".into(),
                port: 9180,
                prefix: String::new(),
            }
        );
        let api = Endpoint::parse("HTTP://lb.example/fulcrum/").unwrap();
        assert_eq!((api.host.as_str(), api.port), ("lb.example", 80));
        assert_eq!(api.prefix, "/fulcrum");
        assert_eq!(
            api.url("/api/v1/reload"),
            "http://lb.example/fulcrum/api/v1/reload"
        );
        let api = Endpoint::parse("http://[::1]:9180/").unwrap();
        assert_eq!((api.host.as_str(), api.port), ("::1", 9180));
        assert_eq!(api.authority, "[::1]:9180");
    }

    #[test]
    fn refuses_urls_it_cannot_use() {
        for (url, why) in [
            ("https://127.0.0.1:9180", "https is not supported"),
            ("127.0.0.1:9180", "expected http://HOST[:PORT]"),
            ("http://127.0.0.1:99999", "from 1 to 65535"),
            ("http://127.0.0.1:0", "from 1 to 65535"),
            ("http://:9180", "no host"),
            ("http://::1:9180", "in brackets"),
            ("http://u:p@host", "use --token"),
            ("http://host/?x=1", "expected http://HOST[:PORT]"),
        ] {
            let e = Endpoint::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.starts_with(&format!("--api '{url}'")), "{url}: {e}");
        }
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(percent_encode("10.66.0.11"), "10.66.0.11");
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }
}
