//! The fleet suite: failover time of two balancers behind a BIRD router, from a balancer's
//! death until the router has withdrawn its path and the survivor carries its flows,
//! against the BGP hold time configured in the same run; and the connections that broke,
//! with flow sharing and without.

use std::time::Duration;

use anyhow::Context as _;
use fulcrum_lab::failover::{self, Death, HOLD_SECS, Outcome};

use crate::report::Figure;

const CONNECTIONS: usize = 120;

pub fn run() -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe()?
        .parent()
        .context("the bench binary's directory")?
        .join("fulcrum");
    let hold_ms = f64::from(HOLD_SECS) * 1e3;
    let mut figures = Vec::new();
    for (death, what) in [(Death::Crash, "crash"), (Death::Stop, "SIGTERM")] {
        let shared = failover::run("bf", &exe, true, death, CONNECTIONS, false)
            .with_context(|| format!("failover after a {what}, flow sharing on"))?;
        let alone = failover::run("bn", &exe, false, death, CONNECTIONS, false)
            .with_context(|| format!("failover after a {what}, flow sharing off"))?;
        figures.extend(timings(what, &shared, hold_ms));
        figures.extend(broken(what, &shared, &alone));
    }
    Ok(figures)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timings(what: &str, o: &Outcome, hold_ms: f64) -> Vec<Figure> {
    let how = match what {
        "crash" => "SIGKILL with the balancer's port down (no FIN reaches the router)",
        _ => "SIGTERM: withdraw, NOTIFICATION Cease, 1 s shutdown_delay",
    };
    vec![
        Figure::new(
            "fleet",
            format!("{what}: router withdrew the path"),
            ms(o.withdrawn_after),
            "ms",
        )
        .against("BGP hold time", hold_ms)
        .note(format!(
            "{how}; until the router's kernel route has only the survivor, polled every 50 ms"
        )),
        Figure::new(
            "fleet",
            format!("{what}: survivor carries every flow"),
            ms(o.carried_after),
            "ms",
        )
        .against("BGP hold time", hold_ms)
        .note(format!(
            "until all {} keep-alive connections answered again ({} were on the dead balancer)",
            o.connections, o.victim_flows
        )),
    ]
}

fn broken(what: &str, shared: &Outcome, alone: &Outcome) -> Vec<Figure> {
    let (on, off) = (
        shared.broken_at_failover.len(),
        alone.broken_at_failover.len(),
    );
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
            "of {} (dead balancer carried {}); a backend was added before, so hashing alone \
             moves some flows",
            shared.connections, shared.victim_flows
        )),
        Figure::new(
            "fleet",
            format!("{what}: connections broken, sharing off"),
            off as f64,
            "count",
        )
        .note(format!(
            "of {} (dead balancer carried {}): what sharing saves",
            alone.connections, alone.victim_flows
        )),
    ]
}
