//! `fulcrum status`, `drain`, `undrain` and `reload`: clients of the daemon's REST API.
//!
//! The client is a few lines of HTTP/1.1 over [`TcpStream`] (plain `http://` only, one
//! request per connection) and local copies of the parts of the API's JSON it shows, so
//! that it needs no HTTP stack and stays usable against a newer daemon: fields it does not
//! know are ignored.

use std::{
    fmt::Write as _,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

/// Where `fulcrum run` listens unless `api.listen` says otherwise.
const DEFAULT_API: &str = "http://127.0.0.1:9180";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may stay silent while answering (a reload reads and applies a file).
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer accepted, far above any real one.
const MAX_BODY: u64 = 64 << 20;
/// The width `fulcrum status` fits its table into.
const TABLE_WIDTH: usize = 100;
/// The narrowest the last error column gets, however wide the other columns are.
const MIN_ERROR_WIDTH: usize = 24;
/// The most lines a last error is wrapped onto before it is cut.
const MAX_ERROR_LINES: usize = 4;

/// Where the API is: `--api` or `FULCRUM_API`.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// The daemon's API, as http://HOST[:PORT] (its `api.listen`).
    #[arg(long, value_name = "URL", env = "FULCRUM_API", default_value = DEFAULT_API)]
    api: String,
}

/// The token for the calls that change something: `--token`, `--token-file` or
/// `FULCRUM_TOKEN`, in that order.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The API token, as in the daemon's `api.token_file` (visible in `ps`: prefer
    /// --token-file or the environment) [env: FULCRUM_TOKEN]
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the API token from a file, such as the daemon's `api.token_file`
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

/// `fulcrum status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Keep each last error on its backend's line instead of wrapping it to fit 100 columns.
    #[arg(long)]
    wide: bool,
}

/// `fulcrum drain` and `fulcrum undrain`.
#[derive(clap::Args)]
pub struct BackendArgs {
    /// The service's name, as in the configuration, or its id (10.66.99.1:80/tcp,
    /// [2001:db8::1]:443/tcp).
    service: String,
    /// The backend's address, as in the configuration.
    backend: String,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// `fulcrum reload`.
#[derive(clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// Prints the table of services and backends.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let api = Endpoint::parse(&args.api.api)?;
    let response = api.request("GET", "/api/v1/services", None)?;
    let body = response.success("status", &api, None)?;
    let snapshot: Snapshot = serde_json::from_slice(&body).map_err(|e| {
        anyhow!(
            "{} did not answer with the services the fulcrum API lists ({e}); \
             is --api pointing at `fulcrum run`?",
            api.url("/api/v1/services")
        )
    })?;
    let width = (!args.wide).then_some(TABLE_WIDTH);
    let mut text = render(&snapshot, width);
    // Daemons without BGP answer 404 here; their status is the table alone.
    if let Ok(response) = api.request("GET", "/api/v1/bgp", None)
        && response.status == 200
    {
        text.push_str(&crate::bgp_status::render(&response.body));
    }
    // Older daemons and daemons without flow sharing answer 404: nothing to add.
    if let Ok(flows) = api.request("GET", "/api/v1/flow-sharing", None)
        && flows.status == 200
        && let Ok(flows) = serde_json::from_slice::<serde_json::Value>(&flows.body)
        && flows.get("enabled") == Some(&serde_json::Value::Bool(true))
    {
        text.push_str(&crate::flow_status::render(&flows));
    }
    output(&text)
}

/// Drains (`drained`) or undrains a backend of a service.
pub fn drain(args: BackendArgs, drained: bool) -> anyhow::Result<()> {
    let api = Endpoint::parse(&args.api.api)?;
    let token = args.token.resolve()?;
    let verb = if drained { "drain" } else { "undrain" };
    let path = format!(
        "/api/v1/services/{}/backends/{}/{verb}",
        percent_encode(&args.service),
        percent_encode(&args.backend)
    );
    let response = api.request("POST", &path, token.as_deref())?;
    let (service, backend) = (one_line(&args.service), one_line(&args.backend));
    response.success(
        &format!("{verb} {service} {backend}"),
        &api,
        token.as_deref(),
    )?;
    output(&if drained {
        format!("{service}: drained {backend}: it takes no new flows; its flows continue\n")
    } else {
        format!("{service}: undrained {backend}: it takes new flows again while healthy\n")
    })
}

/// Asks the daemon to read its configuration file again and apply the difference.
pub fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let api = Endpoint::parse(&args.api.api)?;
    let token = args.token.resolve()?;
    let response = api.request("POST", "/api/v1/reload", token.as_deref())?;
    if response.status == 422 {
        bail!(
            "reload refused, the running configuration stays: {}",
            response.message()
        );
    }
    response.success("reload", &api, token.as_deref())?;
    output("reloaded the configuration\n")
}

/// Writes `text` to stdout; a reader that went away (`fulcrum status | head -1`) is fine.
fn output(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

impl TokenArgs {
    /// The token to send, if any: the flag, the file, then the environment; trimmed, as
    /// the daemon trims its `api.token_file`.
    fn resolve(self) -> anyhow::Result<Option<String>> {
        let token = if let Some(token) = self.token {
            let token = token.trim().to_string();
            if token.is_empty() {
                bail!("--token is empty");
            }
            Some(token)
        } else if let Some(path) = self.token_file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the token from {}", path.display()))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            Some(token)
        } else {
            std::env::var("FULCRUM_TOKEN")
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        if let Some(token) = &token
            && token.chars().any(|c| c.is_control())
        {
            bail!("the token contains a control character (a line break?); it cannot be sent");
        }
        Ok(token)
    }
}

/// The API's address, from `--api`.
#[derive(Debug, PartialEq)]
struct Endpoint {
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
    fn parse(url: &str) -> anyhow::Result<Self> {
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
    fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }

    /// The API's URL, for messages.
    fn base(&self) -> String {
        self.url("")
    }

    /// One request on a new connection; the whole answer, whatever its status.
    fn request(&self, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<Response> {
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

/// An HTTP answer.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

impl Response {
    /// The body of a 2xx answer; otherwise one line saying what went wrong. `what` names
    /// the operation, `token` is what was sent.
    fn success(self, what: &str, api: &Endpoint, token: Option<&str>) -> anyhow::Result<Vec<u8>> {
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
    fn message(&self) -> String {
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
enum ReadError {
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
fn read_response(mut reader: impl io::BufRead) -> Result<Response, ReadError> {
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

/// `text` as one URL path segment.
fn percent_encode(text: &str) -> String {
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

/// `text` with line breaks as `; ` and other control characters escaped, so that a
/// message from the server or a name stays on one line and cannot drive the terminal.
fn one_line(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect()
        })
        .collect();
    lines.join("; ")
}

/// At most `max` characters of `text`, ending in `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` in lines of at most `width` characters, broken at spaces where it can be, at
/// most `max_lines` of them, the last ending in `…` when cut; one empty line for no text.
fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(2);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let space = usize::from(used > 0);
            if used + space + word.len() <= width {
                if space == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a whole line: split it.
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
    }
    lines.push(line);
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = &mut lines[max_lines - 1];
        if last.chars().count() >= width {
            *last = last.chars().take(width - 1).collect();
        }
        last.push('…');
    }
    lines
}

/// What `GET /api/v1/services` returns, as far as the CLI shows it.
#[derive(Debug, Deserialize)]
struct Snapshot {
    services: Vec<Service>,
    #[serde(default)]
    reload_error: Option<String>,
}

/// One service.
#[derive(Debug, Deserialize)]
struct Service {
    name: String,
    vip: String,
    /// 0 means every port.
    port: u16,
    protocol: String,
    /// `l2-dsr`, `ipip` or `gue`; absent from daemons before tunnels.
    #[serde(default)]
    forwarding: Option<String>,
    #[serde(default)]
    traffic: Traffic,
    #[serde(default)]
    backends: Vec<Backend>,
}

/// One backend of a service.
#[derive(Debug, Deserialize)]
struct Backend {
    address: String,
    weight: u32,
    drained: bool,
    /// `up`, `down` or `unknown`.
    health: String,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    traffic: Traffic,
}

/// Rates; `null` (a rate that was not a number) shows as 0.
#[derive(Debug, Default, Deserialize)]
struct Traffic {
    #[serde(default)]
    packets_per_second: Option<f64>,
    #[serde(default)]
    bits_per_second: Option<f64>,
}

const HEADERS: [&str; 8] = [
    "SERVICE/BACKEND",
    "WEIGHT",
    "HEALTH",
    "DRAINED",
    "PPS",
    "BIT RATE",
    "LAST ERROR",
    "",
];
/// Columns aligned right: the numbers.
const RIGHT: [bool; 8] = [false, true, false, false, true, true, false, false];
/// Backends are indented under their service.
const INDENT: &str = "  ";

/// `VIP:PORT/PROTO`, an IPv6 VIP in brackets when a port follows; `VIP/PROTO` for every port.
fn service_label(vip: &str, port: u16, protocol: &str) -> String {
    match port {
        0 => format!("{vip}/{protocol}"),
        port if vip.contains(':') => format!("[{vip}]:{port}/{protocol}"),
        port => format!("{vip}:{port}/{protocol}"),
    }
}

/// The status table: a line per service (name, `VIP:PORT/PROTO`, its forwarding mode and its rates) and under
/// it a line per backend; last errors wrapped so that lines fit `width` columns when given.
/// Then the reload error, if any.
fn render(snapshot: &Snapshot, width: Option<usize>) -> String {
    let mut out = String::new();
    if snapshot.services.is_empty() {
        out.push_str("no services\n");
    }
    // Cells: SERVICE/BACKEND, WEIGHT, HEALTH, DRAINED, PPS, BIT RATE, LAST ERROR. A service's
    // first cell spans the columns up to PPS.
    let mut rows: Vec<(bool, [String; 7])> = Vec::new();
    for service in &snapshot.services {
        let (name, vip, protocol) = (
            one_line(&service.name),
            one_line(&service.vip),
            one_line(&service.protocol),
        );
        let id = service_label(&vip, service.port, &protocol);
        let label = match &service.forwarding {
            Some(mode) => format!("{name}  {id}  {}", one_line(mode)),
            None => format!("{name}  {id}"),
        };
        let [pps, bits] = rates(&service.traffic);
        rows.push((
            true,
            [label, "".into(), "".into(), "".into(), pps, bits, "".into()],
        ));
        if service.backends.is_empty() {
            let none = format!("{INDENT}(no backends)");
            rows.push((
                false,
                [
                    none,
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ],
            ));
        }
        for backend in &service.backends {
            let [pps, bits] = rates(&backend.traffic);
            rows.push((
                false,
                [
                    format!("{INDENT}{}", one_line(&backend.address)),
                    backend.weight.to_string(),
                    one_line(&backend.health),
                    if backend.drained { "yes" } else { "no" }.into(),
                    pps,
                    bits,
                    backend
                        .last_error
                        .as_deref()
                        .map(one_line)
                        .unwrap_or_default(),
                ],
            ));
        }
    }
    if !rows.is_empty() {
        let mut widths: [usize; 6] = std::array::from_fn(|i| HEADERS[i].chars().count());
        for (is_service, row) in &rows {
            for (i, (w, cell)) in widths.iter_mut().zip(row).enumerate() {
                if !*is_service || i >= 4 {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        // A service's label spans the first four columns; widen the first if it must.
        let span = |widths: &[usize; 6]| widths[..4].iter().sum::<usize>() + 2 * 3;
        for (_, row) in rows.iter().filter(|(is_service, _)| *is_service) {
            let label = row[0].chars().count();
            widths[0] += label.saturating_sub(span(&widths));
        }
        // Everything before the last column, with two spaces between columns.
        let before_error: usize = widths.iter().map(|w| w + 2).sum();
        let error_width =
            width.map(|width| width.saturating_sub(before_error).max(MIN_ERROR_WIDTH));
        let header: [String; 7] = std::array::from_fn(|i| HEADERS[i].to_string());
        for (is_service, row) in std::iter::once(&(false, header)).chain(&rows) {
            let mut line = String::new();
            let pad = |line: &mut String, cell: &str, width: usize, right: bool| {
                let pad = width.saturating_sub(cell.chars().count());
                if right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.push_str("  ");
            };
            let first = if *is_service {
                pad(&mut line, &row[0], span(&widths), false);
                4
            } else {
                0
            };
            for i in first..6 {
                pad(&mut line, &row[i], widths[i], RIGHT[i]);
            }
            let error = match error_width {
                Some(max) => wrap(&row[6], max, MAX_ERROR_LINES),
                None => vec![row[6].clone()],
            };
            for (n, part) in error.iter().enumerate() {
                if n > 0 {
                    line = " ".repeat(before_error);
                }
                line.push_str(part);
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    if let Some(error) = &snapshot.reload_error {
        let _ = writeln!(
            out,
            "\nlast reload refused, the running configuration stays: {}",
            one_line(error)
        );
    }
    out
}

/// Packets per second and bit rate, as shown.
fn rates(traffic: &Traffic) -> [String; 2] {
    [
        si(traffic.packets_per_second.unwrap_or(0.0)),
        format!("{}b/s", si_spaced(traffic.bits_per_second.unwrap_or(0.0))),
    ]
}

/// A rate with an SI prefix and two or three significant digits: `0`, `4.5`, `950`,
/// `12k`, `1.2M`.
fn si(value: f64) -> String {
    let (number, prefix) = scaled(value);
    format!("{number}{prefix}")
}

/// Like [`si`], with a space before the prefix, for a unit to follow: `12.3 M`, `950 `.
fn si_spaced(value: f64) -> String {
    let (number, prefix) = scaled(value);
    format!("{number} {prefix}")
}

fn scaled(value: f64) -> (String, &'static str) {
    let value = if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    };
    if value == 0.0 {
        return ("0".into(), "");
    }
    let mut scaled = value;
    for prefix in ["", "k", "M", "G", "T", "P"] {
        let text = if scaled < 9.95 {
            format!("{scaled:.1}")
        } else {
            format!("{scaled:.0}")
        };
        if text.parse::<f64>().unwrap_or(f64::MAX) < 1000.0 || prefix == "P" {
            return (text, prefix);
        }
        scaled /= 1000.0;
    }
    unreachable!("the loop returns at its last prefix")
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

    #[test]
    fn encodes_path_segments() {
        assert_eq!(percent_encode("10.66.0.11"), "10.66.0.11");
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn formats_rates() {
        let cases = [
            (0.0, "0"),
            (f64::NAN, "0"),
            (-3.0, "0"),
            (0.5, "0.5"),
            (9.96, "10"),
            (950.0, "950"),
            (999.6, "1.0k"),
            (12_345.0, "12k"),
            (1_234_567.0, "1.2M"),
            (10e9, "10G"),
        ];
        for (value, want) in cases {
            assert_eq!(si(value), want, "{value}");
        }
        assert_eq!(si_spaced(12.3e6), "12 M");
        assert_eq!(si_spaced(800.0), "800 ");
    }

    #[test]
    fn one_line_flattens_and_escapes() {
        assert_eq!(
            one_line("a.yaml:1: x\na.yaml:2: y\n"),
            "a.yaml:1: x; a.yaml:2: y"
        );
        assert_eq!(one_line("bad\x1b[31m"), "bad\\u{1b}[31m");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    fn snapshot() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "services": [{
                "name": "web", "vip": "10.66.99.1", "port": 80, "protocol": "tcp",
                "traffic": { "packets_per_second": 2000.0, "bits_per_second": 1.6e7 },
                "new_field": 1,
                "backends": [
                    { "address": "10.66.0.11", "weight": 1, "drained": false, "health": "up",
                      "last_error": null, "checks": [],
                      "traffic": { "packets_per_second": 1520.0, "bits_per_second": 9.1e6 } },
                    { "address": "10.66.0.12", "weight": 2, "drained": true, "health": "down",
                      "last_error": "http: GET http://10.66.0.12:80/: connect: connection refused (os error 111) after 500ms, and more text to be cut",
                      "traffic": { "packets_per_second": null, "bits_per_second": 0.0 } }
                ]
            }, {
                "name": "dns", "vip": "10.66.99.2", "port": 0, "protocol": "udp", "backends": []
            }],
            "counters": [["tx", 5]],
            "events": [],
            "reload_error": "fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address"
        }))
        .unwrap()
    }

    #[test]
    fn renders_a_table_in_100_columns() {
        let text = render(&snapshot(), Some(TABLE_WIDTH));
        print!("{text}");
        let want = "\
SERVICE/BACKEND  WEIGHT  HEALTH  DRAINED   PPS  BIT RATE  LAST ERROR
web  10.66.99.1:80/tcp                    2.0k   16 Mb/s
  10.66.0.11          1  up      no       1.5k  9.1 Mb/s
  10.66.0.12          2  down    yes         0     0 b/s  http: GET http://10.66.0.12:80/: connect:
                                                          connection refused (os error 111) after
                                                          500ms, and more text to be cut
dns  10.66.99.2/udp                          0     0 b/s
  (no backends)

last reload refused, the running configuration stays: fulcrum.yaml:3:5: services[0].vip: 'x' is not an IPv4 address
";
        assert_eq!(text, want);
        let wide = render(&snapshot(), None);
        assert!(wide.contains(
            "0 b/s  http: GET http://10.66.0.12:80/: connect: connection refused (os error 111) \
             after 500ms, and more text to be cut\n"
        ));
    }

    #[test]
    fn a_long_service_label_widens_the_first_column() {
        let mut snapshot = snapshot();
        snapshot.services[1].name = "resolver-for-the-internal-zones".into();
        let text = render(&snapshot, Some(TABLE_WIDTH));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE/BACKEND         WEIGHT  HEALTH  DRAINED   PPS  BIT RATE  LAST ERROR"
        );
        assert_eq!(
            lines[7],
            "resolver-for-the-internal-zones  10.66.99.2/udp     0     0 b/s"
        );
        assert!(
            lines[3].ends_with("0 b/s  http: GET http://10.66.0.12:80/:"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("  connect: connection refused (os"),
            "{text}"
        );
    }

    #[test]
    fn wraps_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("", 10, 4), [""]);
        assert_eq!(wrap("tcp: timed out", 30, 4), ["tcp: timed out"]);
        assert_eq!(
            wrap("connect: connection refused", 10, 4),
            ["connect:", "connection", "refused"]
        );
        assert_eq!(
            wrap("abcdefghijklmnop q", 6, 4),
            ["abcdef", "ghijkl", "mnop q"]
        );
        assert_eq!(wrap("a b c d e f", 3, 2), ["a b", "c …"]);
        assert_eq!(wrap("aaa bbb ccc", 3, 2), ["aaa", "bb…"]);
    }

    #[test]
    fn ipv6_vips_are_bracketed_and_the_mode_follows() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "services": [{
                "name": "web6", "vip": "2001:db8:100::1", "port": 80, "protocol": "tcp",
                "forwarding": "gue",
                "backends": [
                    { "address": "2001:db8:200::10", "weight": 1, "drained": false,
                      "health": "up" }
                ]
            }, {
                "name": "all6", "vip": "2001:db8:100::2", "port": 0, "protocol": "udp",
                "forwarding": "l2-dsr", "backends": []
            }]
        }))
        .unwrap();
        let text = render(&snapshot, Some(TABLE_WIDTH));
        let want = "\
SERVICE/BACKEND     WEIGHT  HEALTH  DRAINED  PPS  BIT RATE  LAST ERROR
web6  [2001:db8:100::1]:80/tcp  gue            0     0 b/s
  2001:db8:200::10       1  up      no         0     0 b/s
all6  2001:db8:100::2/udp  l2-dsr              0     0 b/s
  (no backends)
";
        assert_eq!(text, want, "{text}");
    }

    #[test]
    fn renders_no_services() {
        let snapshot = Snapshot {
            services: vec![],
            reload_error: None,
        };
        assert_eq!(render(&snapshot, Some(TABLE_WIDTH)), "no services\n");
    }
}
