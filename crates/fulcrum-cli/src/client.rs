//! `fulcrum status`, `drain`, `undrain` and `reload`: clients of the daemon's REST API.
//!
//! The client is a few lines of HTTP/1.1 over [`TcpStream`] (plain `http://` only, one
//! request per connection) and local copies of the parts of the API's JSON it shows, so
//! that it needs no HTTP stack and stays usable against a newer daemon: fields it does not
//! know are ignored.

mod endpoint;
mod response;
mod table;
mod talkers;
mod text;

use std::{
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, anyhow, bail};

use endpoint::{Endpoint, percent_encode};
use table::{Snapshot, TABLE_WIDTH, render};
use text::one_line;

/// Where `fulcrum run` listens unless `api.listen` says otherwise.
const DEFAULT_API: &str = "http://127.0.0.1:9180";

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
    // Older daemons answer 404; with counting off or no traffic there is nothing to add.
    if let Ok(talkers) = api.request("GET", "/api/v1/top-talkers", None)
        && talkers.status == 200
        && let Ok(talkers) = serde_json::from_slice::<serde_json::Value>(&talkers.body)
    {
        text.push_str(&talkers::render(&talkers));
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
