//! The suite's figures, from the measured rounds.

use super::{
    FEW_FLOWS_PER_CPU, FLOWS_PER_CPU, GEN_THREADS, ROUNDS, Segment, WINDOW,
    lab::{BASELINE, FEW_FLOWS, FULCRUM, PATHS},
};
use crate::report::Figure;

/// Median, minimum and maximum.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    let min = v.first().copied().unwrap_or(0.0);
    let max = v.last().copied().unwrap_or(0.0);
    (median, min, max)
}

pub(super) fn figures(rounds: &[Vec<Segment>]) -> Vec<Figure> {
    let of = |i: usize, f: fn(&Segment) -> f64| -> Vec<f64> {
        rounds.iter().filter_map(|r| r.get(i)).map(f).collect()
    };
    let ratio_to_baseline = |i: usize| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| Some(r.get(i)?.pps / r.get(BASELINE)?.pps))
            .collect()
    };
    let (f_med, f_min, f_max) = stats(of(FULCRUM, |s| s.pps));
    let (b_med, b_min, b_max) = stats(of(BASELINE, |s| s.pps));
    let (few_med, few_min, few_max) = stats(of(FEW_FLOWS, |s| s.pps));
    let (r_med, r_min, r_max) = stats(ratio_to_baseline(FULCRUM));
    let (few_r_med, ..) = stats(ratio_to_baseline(FEW_FLOWS));
    let (f_offered, ..) = stats(of(FULCRUM, |s| s.offered));
    let (b_offered, ..) = stats(of(BASELINE, |s| s.offered));
    let stray: u64 = rounds.iter().flatten().map(|s| s.stray).sum();
    let counted: u64 = rounds.iter().flatten().flat_map(|s| &s.slots).sum();
    let stray = 100.0 * stray as f64 / counted.max(1) as f64;

    // How evenly Fulcrum spread the flows over the backends, over all rounds.
    let per_backend: Vec<u64> = PATHS[FULCRUM]
        .slots()
        .into_iter()
        .map(|s| {
            rounds
                .iter()
                .filter_map(|r| r.get(FULCRUM)?.slots.get(s))
                .sum()
        })
        .collect();
    let total = per_backend.iter().sum::<u64>().max(1) as f64;
    let shares = per_backend
        .iter()
        .map(|n| format!("{:.1}", 100.0 * *n as f64 / total))
        .collect::<Vec<_>>()
        .join("/");

    let flows = GEN_THREADS as u32 * FLOWS_PER_CPU;
    let how = format!(
        "veth lab; 64 B TCP ACKs (established flows) to VIP:80 from {flows} source ports; \
         live-frames generator on {GEN_THREADS} pinned CPUs XDP_TX into the forwarder's veth, \
         forwarder XDP_TX back, XDP counter at the far end; median of {ROUNDS} rounds of \
         {} ms per forwarder, order rotated each round",
        WINDOW.as_millis()
    );
    let mpps = |v: f64| v / 1e6;
    vec![
        Figure::new(
            "e2e",
            format!("forwarding rate, Fulcrum, {flows} flows"),
            f_med,
            "pps",
        )
        .against("MAC-swap XDP_TX", b_med)
        .target(">= 80% of baseline", f_med >= 0.8 * b_med)
        .note(format!(
            "{how}; min-max {:.2}-{:.2} Mpps; backends {shares}%; generator sent {:.2} Mpps \
             (self-clocked: each CPU generates, forwards and counts its own frames)",
            mpps(f_min),
            mpps(f_max),
            mpps(f_offered)
        )),
        Figure::new(
            "e2e",
            "forwarding rate, baseline MAC-swap XDP_TX",
            b_med,
            "pps",
        )
        .note(format!(
            "same lab, run and rounds, its own veth pair; min-max {:.2}-{:.2} Mpps; generator \
             sent {:.2} Mpps",
            mpps(b_min),
            mpps(b_max),
            mpps(b_offered)
        )),
        Figure::new(
            "e2e",
            "forwarding rate, Fulcrum / baseline",
            100.0 * r_med,
            "%",
        )
        .target(">= 80%", r_med >= 0.8)
        .note(format!(
            "median of per-round ratios (both measured within 0.7 s); min-max {:.0}-{:.0}%; \
             frames counted in another path's window: {stray:.3}%",
            100.0 * r_min,
            100.0 * r_max
        )),
        Figure::new(
            "e2e",
            format!(
                "attribution: Fulcrum, {} flows",
                GEN_THREADS as u32 * FEW_FLOWS_PER_CPU
            ),
            few_med,
            "pps",
        )
        .against("MAC-swap XDP_TX", b_med)
        .note(format!(
            "a second Fulcrum on a third identical path, same rounds, flow state small \
             enough to stay in cache: the gap to the {flows}-flow figure is what the larger \
             flow working set costs; per-round ratio median {:.0}%; min-max {:.2}-{:.2} Mpps",
            100.0 * few_r_med,
            mpps(few_min),
            mpps(few_max)
        )),
    ]
}
