//! `make bench`: every suite, one table, and `target/bench/results.json`.
//!
//! Every figure is judged against a baseline measured in the same run, because these
//! machines are shared and noisy (see ../shared/BENCHMARKING.md).

mod control;
mod dataplane;
mod e2e;
mod fleet;
mod flowsync;
mod object;
mod packet;
mod report;
mod restart;
mod scale;
mod sharing;
mod tunnel;

use std::path::PathBuf;

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let all = [
        "packet", "sharing", "scale", "e2e", "control", "restart", "flowsync", "fleet", "tunnel",
    ];
    for w in &wanted {
        if !all.contains(&w.as_str()) {
            bail!("unknown suite '{w}'; suites are: {}", all.join(", "));
        }
    }
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let mut figures = Vec::new();
    if run("packet") {
        figures.extend(packet::run()?);
    }
    if run("sharing") {
        figures.extend(sharing::run()?);
    }
    if run("scale") {
        figures.extend(scale::run()?);
    }
    if run("e2e") {
        figures.extend(e2e::run()?);
    }
    if run("control") {
        figures.extend(control::run()?);
    }
    if run("restart") {
        figures.extend(restart::run()?);
    }
    if run("flowsync") {
        figures.extend(flowsync::run()?);
    }
    if run("fleet") {
        figures.extend(fleet::run()?);
    }
    if run("tunnel") {
        figures.extend(tunnel::run()?);
    }
    println!("{}", report::table(&figures));
    let path = PathBuf::from(
        std::env::var("FULCRUM_BENCH_OUT").unwrap_or_else(|_| "target/bench/results.json".into()),
    );
    report::write_json(&path, &figures)?;
    println!("wrote {}", path.display());
    Ok(())
}
