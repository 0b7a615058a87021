//! `fulcrum run --config FILE`: the daemon, until SIGINT or SIGTERM (stop: detach and
//! remove) or SIGUSR2 (handover: exit with status 75 leaving the data plane for the next
//! daemon).

use std::path::PathBuf;

use anyhow::Context as _;
use fulcrum_daemon::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

/// Exit status after a handover (EX_TEMPFAIL).
const HANDED_OVER: i32 = 75;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration (see examples/fulcrum.yaml).
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::capabilities::require("the daemon")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let how = runtime.block_on(async {
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut handover =
            signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = interrupt.recv() => Shutdown::Stop,
                _ = terminate.recv() => Shutdown::Stop,
                _ = handover.recv() => Shutdown::Handover,
            }
        };
        fulcrum_daemon::serve(args.config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })?;
    if how == Shutdown::Handover {
        // EX_TEMPFAIL: the data plane was left for the next daemon; systemd restarts us.
        std::process::exit(HANDED_OVER);
    }
    Ok(())
}
