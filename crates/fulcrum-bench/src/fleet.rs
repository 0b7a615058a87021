//! The fleet suite: failover time of two balancers behind a BIRD router, from a balancer's
//! death until the router has withdrawn its path and the survivor carries its flows,
//! against the BGP hold time configured in the same run; and the connections that broke,
//! with flow sharing and without.

use std::time::Duration;

use anyhow::Context as _;
use fulcrum_lab::failover::{self, Death, HOLD_SECS, Outcome, SHUTDOWN_DELAY_MS};

use crate::report::Figure;

const CONNECTIONS: usize = 120;

/// Runs with flow sharing per way of dying: the timings are their median, and every
/// run's broken connections count.
const ROUNDS: usize = 3;

pub fn run() -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe()?
        .parent()
        .context("the bench binary's directory")?
        .join("fulcrum");
    let hold_ms = f64::from(HOLD_SECS) * 1e3;
    let mut figures = Vec::new();
    for (death, what) in [(Death::Crash, "crash"), (Death::Stop, "SIGTERM")] {
        let shared = (0..ROUNDS)
            .map(|_| failover::run("bf", &exe, true, death, CONNECTIONS, false))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("failover after a {what}, flow sharing on"))?;
        let alone = failover::run("bn", &exe, false, death, CONNECTIONS, false)
            .with_context(|| format!("failover after a {what}, flow sharing off"))?;
        figures.extend(timings(what, &shared, hold_ms));
        figures.extend(broken(what, &shared, &alone));
    }
    Ok(figures)
}

/// Median, min and max of `pick` over the runs, in ms.
fn spread(runs: &[Outcome], pick: impl Fn(&Outcome) -> Duration) -> (f64, f64, f64) {
    let mut v: Vec<f64> = runs.iter().map(|o| ms(pick(o))).collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timings(what: &str, runs: &[Outcome], hold_ms: f64) -> Vec<Figure> {
    let how = match what {
        "crash" => "SIGKILL with the balancer's port down (no FIN reaches the router)",
        _ => "SIGTERM: withdraw, NOTIFICATION Cease, 1 s shutdown_delay",
    };
    // A crash is noticed when the hold time runs out; a stop must be carried before the
    // stopping balancer detaches, `shutdown_delay` later.
    let (base, base_ms) = match what {
        "crash" => ("BGP hold time", hold_ms),
        _ => ("shutdown_delay", SHUTDOWN_DELAY_MS as f64),
    };
    let withdrawn = spread(runs, |o| o.withdrawn_after);
    let carried = spread(runs, |o| o.carried_after);
    let on_victim: Vec<u64> = runs.iter().map(|o| o.victim_flows).collect();
    vec![
        Figure::new(
            "fleet",
            format!("{what}: router withdrew the path"),
            withdrawn.0,
            "ms",
        )
        .against(base, base_ms)
        .note(format!(
            "{how}; until the router's kernel route has only the survivor, polled every 50 ms; \
             median of {ROUNDS} (min {:.0}, max {:.0})",
            withdrawn.1, withdrawn.2
        )),
        Figure::new(
            "fleet",
            format!("{what}: survivor carries every flow"),
            carried.0,
            "ms",
        )
        .against(base, base_ms)
        .note(format!(
            "until all {CONNECTIONS} keep-alive connections answered again ({on_victim:?} were on \
             the dead balancer); median of {ROUNDS} (min {:.0}, max {:.0})",
            carried.1, carried.2
        )),
    ]
}

fn broken(what: &str, shared: &[Outcome], alone: &Outcome) -> Vec<Figure> {
    let on: usize = shared.iter().map(|o| o.broken_at_failover.len()).sum();
    let off = alone.broken_at_failover.len();
    vec![
        Figure::new(
            "fleet",
            format!("{what}: connections broken, sharing on"),
            on as f64,
            "count",
        )
        .against("sharing off", off as f64)
        .target("0", on == 0)
        .note(format!(
            "over {ROUNDS} runs of {CONNECTIONS}; a backend was added before the failover, so \
             hashing alone would move some flows"
        )),
        Figure::new(
            "fleet",
            format!("{what}: connections broken, sharing off"),
            off as f64,
            "count",
        )
        .note(format!(
            "of {CONNECTIONS} (the dead balancer carried {}): what sharing saves",
            alone.victim_flows
        )),
    ]
}
