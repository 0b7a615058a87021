//! The loop of the commands that keep an XDP program attached in the foreground
//! (`fulcrum balance`, `fulcrum decap`): a tick a second until SIGINT or SIGTERM.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

/// Calls `tick` every second, with `true` once every `interval` (time to print counters),
/// and returns when SIGINT or SIGTERM arrives; the caller then detaches.
pub async fn until_signal(
    interval: Duration,
    mut tick: impl FnMut(bool) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut last_print = Instant::now();
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = second.tick() => {
                let print = last_print.elapsed() >= interval;
                if print {
                    last_print = Instant::now();
                }
                tick(print)?;
            }
        }
    }
}
