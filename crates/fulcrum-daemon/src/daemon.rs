//! The daemon: the configuration, the health checks and the data plane kept in step.
//!
//! [`serve`] starts the [owner](crate::owner) of the data plane on its own thread, feeds it
//! health changes, SIGHUP reloads and ticks, and serves the API from the snapshots it
//! publishes, until the shutdown future says how to stop.

use std::{
    path::PathBuf,
    sync::{Arc, mpsc},
    time::Duration,
};

use fulcrum_config::Config;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use crate::{
    api::Snapshot,
    handle::DaemonHandle,
    http::{HttpLimits, HttpStats},
    owner::{Command, Owner},
};

/// How the daemon is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop means stop: detach from every interface and remove the data plane.
    Stop,
    /// Restart or upgrade: exit leaving the data plane forwarding, for the next daemon to
    /// adopt.
    Handover,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file is invalid; the message names file, line and field.
    #[error(transparent)]
    Config(#[from] fulcrum_config::ConfigError),
    /// A valid configuration that cannot run here (a VIP on this host's address); one line
    /// per problem, naming file, line and field.
    #[error("{0}")]
    Refused(String),
    /// The data plane could not be loaded, attached or configured.
    #[error("data plane")]
    Balancer(#[from] fulcrum::BalancerError),
    /// The health checker refused the configured checks.
    #[error("health checks")]
    Health(#[from] fulcrum_health::CheckerError),
    /// The API address could not be bound.
    #[error("listening on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The API token file cannot be used.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// The flow sharing key file cannot be used; the message names it.
    #[error(transparent)]
    FlowKey(#[from] fulcrum_flowsync::KeyError),
    /// Flow sharing could not bind or join its group.
    #[error(transparent)]
    FlowSharing(#[from] fulcrum_flowsync::FlowSyncError),
    /// The data plane's flow event ring cannot be polled.
    #[error("polling the flow event ring")]
    FlowRing(#[source] std::io::Error),
    /// The owner thread could not be started.
    #[error("starting the data plane's owner thread")]
    Thread(#[source] std::io::Error),
}

/// The API token, from `api.token_file`.
fn token(config: &Config) -> Result<Option<String>, DaemonError> {
    let Some(path) = &config.api.token_file else {
        return Ok(None);
    };
    Ok(Some(crate::token::read_token(path)?))
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Runs the daemon until `shutdown` resolves: the API, the health loop, SIGHUP reloads.
/// Returns how it stopped, so the caller can say so in its exit status.
pub async fn serve(
    config_path: PathBuf,
    shutdown: impl std::future::Future<Output = Shutdown>,
) -> Result<Shutdown, DaemonError> {
    let (view, reader) = watch::channel(Arc::new(Snapshot::default()));
    let (mut owner, mut health) = Owner::start(&config_path, view)?;
    let token = token(&owner.config)?;
    if token.is_none() {
        warn!("no api.token_file: drain, undrain and reload through the API are refused");
    }
    let listen = owner.config.api.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen,
            source,
        })?;
    let restarted = owner.lb.adopted();
    let talkers = owner.talkers.view.subscribe();
    let (commands, inbox) = mpsc::channel();
    let (announce_gate_tx, announce_gate) = watch::channel(true);
    let (flows, flow_view) =
        crate::flow_sharing::prepare(&mut owner, announce_gate_tx, announce_gate.clone())?;
    // Flow sharing drives the gate: closed until its start-up sync ends.
    let (bgp_view, bgp_reader) = watch::channel(crate::bgp::BgpView::default());
    let (stop_bgp, bgp_stop) = tokio::sync::oneshot::channel();
    let bgp_task = crate::bgp::spawn(reader.clone(), announce_gate, restarted, bgp_view, bgp_stop);
    let thread = std::thread::Builder::new()
        .name("fulcrum-owner".into())
        .spawn(move || owner.run(inbox))
        .map_err(DaemonError::Thread)?;
    let flow_tasks = flows.run(&commands)?;
    info!(%listen, "API listening");
    let handle = DaemonHandle::new(commands.clone(), reader)
        .with_flow_sharing(flow_view)
        .with_bgp(bgp_reader)
        .with_top_talkers(talkers);
    let app = crate::api::router(handle, token);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(
        listener,
        app,
        HttpLimits::default(),
        Arc::new(HttpStats::default()),
        async move {
            let _ = server_stopped.await;
        },
    ));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    let how = loop {
        let command = tokio::select! {
            how = &mut shutdown => break how,
            Some(event) = health.recv() => Command::Health(event),
            Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                Command::Reload { reply: None }
            }
            _ = tick.tick() => Command::Tick,
        };
        if commands.send(command).is_err() {
            error!("the data plane's owner stopped");
            break Shutdown::Stop;
        }
    };
    // Routes go first (withdrawn and `shutdown_delay` waited, or handed over), while the
    // data plane still forwards.
    let (bgp_done, bgp_finished) = tokio::sync::oneshot::channel();
    if stop_bgp.send((how, bgp_done)).is_ok() {
        let _ = bgp_finished.await;
    }
    let _ = bgp_task.await;
    let _ = stop_server.send(());
    let _ = server.await;
    flow_tasks.iter().for_each(JoinHandle::abort);
    let _ = commands.send(Command::Stop(how));
    drop(commands);
    match tokio::task::spawn_blocking(move || thread.join()).await {
        Ok(Ok(_)) => {}
        _ => error!("the data plane's owner thread panicked"),
    }
    Ok(how)
}
