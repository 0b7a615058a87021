//! Suite `control`: the control plane's costs, each against a same-run baseline.
//!
//! - Maglev table computation (M = 65537, N = 10, 100, 1000) against filling the trivial
//!   round-robin table of the same size.
//! - How long a destination removal takes to reach the data plane: in a lab namespace, SYN
//!   frames that went to the removed backend are run through the attached program with
//!   `BPF_PROG_TEST_RUN` until none goes there any more.
//! - Applying 1,000 services × 10 backends to a fresh balancer, against the Maglev builds
//!   alone; plus the balancer's load time and the kernel memory of its maps.
//! - Maglev's disruption when one of 100 backends leaves, against the leaving backend's
//!   own share (the unavoidable part).

mod bulk;
#[path = "control_lab.rs"]
mod lab;
mod maglev;
mod removal;

use std::time::Duration;

use anyhow::Context as _;

use crate::{object, report::Figure};

use bulk::bulk_apply;
use maglev::{disruption, maglev_build_times};
use removal::removal_latency;

const SUITE: &str = "control";
/// Table size the targets are stated for.
const M: u32 = fulcrum::maglev::DEFAULT_SIZE;

/// Runs the suite: Maglev build times, disruption, removal latency, bulk apply.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(1)
        .or_else(|_| object::pin_to_cpu(0))
        .context("pinning the control suite to one CPU")?;
    let mut figures = maglev_build_times().context("Maglev build times")?;
    figures.extend(disruption().context("Maglev disruption")?);
    figures.extend(removal_latency().context("removal latency to the data plane")?);
    figures.extend(bulk_apply().context("applying 1,000 services × 10 backends")?);
    Ok(figures)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
