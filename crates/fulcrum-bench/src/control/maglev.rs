//! Maglev itself: how long a table takes to compute, and how much of it moves when one of
//! 100 backends leaves.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use fulcrum::maglev::{self, Member};

use super::{M, SUITE, lab::Spread, micros};
use crate::report::Figure;

/// `n` members with ids `1..=n`, equal weights, addresses from `first` upwards.
fn members(n: u32, first: Ipv4Addr) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: i + 1,
            address: IpAddr::V4(Ipv4Addr::from(u32::from(first) + i)),
            weight: 1,
        })
        .collect()
}

/// `n` members with equal weights at scattered addresses (a fixed pseudo-random sequence).
fn scattered_members(n: u32) -> Vec<Member> {
    let mut seen = std::collections::BTreeSet::new();
    let mut x: u32 = 0x2545_f491;
    let mut out = Vec::new();
    while out.len() < n as usize {
        // xorshift32: deterministic, so every run measures the same sets.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if seen.insert(x) {
            out.push(Member {
                id: out.len() as u32 + 1,
                address: IpAddr::V4(Ipv4Addr::from(x)),
                weight: 1,
            });
        }
    }
    out
}

// Table computation.

const MAGLEV_ROUNDS: usize = 21;
const MAGLEV_SIZES: [u32; 3] = [10, 100, 1000];

pub(super) fn maglev_build_times() -> anyhow::Result<Vec<Figure>> {
    let sets: Vec<Vec<Member>> = MAGLEV_SIZES
        .iter()
        .map(|&n| members(n, Ipv4Addr::new(10, 1, 0, 1)))
        .collect();
    let ids: Vec<u32> = (1..=1000).collect();
    // Case 0 is the baseline (round-robin fill), cases 1.. the Maglev sizes.
    let cases = sets.len() + 1;
    let mut samples = vec![Vec::with_capacity(MAGLEV_ROUNDS); cases];
    for round in 0..=MAGLEV_ROUNDS {
        // Rotate the order each round; round 0 warms up and is discarded.
        for k in 0..cases {
            let case = (k + round) % cases;
            let start = Instant::now();
            if case == 0 {
                let table = round_robin(black_box(&ids), M);
                black_box(&table);
            } else {
                let table = maglev::build(black_box(&sets[case - 1]), M)
                    .context("building a Maglev table")?;
                black_box(&table);
            }
            let took = start.elapsed();
            if round > 0 {
                samples[case].push(micros(took));
            }
        }
    }
    let baseline = Spread::of(&samples[0])?;
    let mut figures = Vec::new();
    for (i, &n) in MAGLEV_SIZES.iter().enumerate() {
        let s = Spread::of(&samples[i + 1])?;
        let mut f = Figure::new(SUITE, format!("Maglev build M=65537 N={n}"), s.median, "µs")
            .against("round-robin fill", baseline.median)
            .note(format!(
                "maglev::build, equal weights; {}; baseline: 65537-slot Vec<u32> filled \
                 round-robin over 1000 ids, {}",
                s.text("µs"),
                baseline.text("µs")
            ));
        if n == 1000 {
            f = f.target("< 50 ms", s.median < 50_000.0);
        }
        figures.push(f);
    }
    Ok(figures)
}

/// The trivial table: slot `i` goes to `ids[i % len]`.
fn round_robin(ids: &[u32], size: u32) -> Vec<u32> {
    ids.iter().copied().cycle().take(size as usize).collect()
}

// Disruption when one of 100 backends leaves.

const DISRUPTION_N: u32 = 100;

struct Leave {
    /// Slots the leaving backend owned.
    own: usize,
    /// Other slots whose owner changed.
    extra: usize,
}

pub(super) fn disruption() -> anyhow::Result<Vec<Figure>> {
    let sets = [
        (
            "consecutive",
            members(DISRUPTION_N, Ipv4Addr::new(10, 1, 0, 1)),
        ),
        ("scattered", scattered_members(DISRUPTION_N)),
    ];
    let mut leaves = Vec::new();
    for (label, set) in &sets {
        let before = maglev::build(set, M).context("building the 100-backend table")?;
        for gone in 0..set.len() {
            let mut rest = set.clone();
            let removed = rest.remove(gone);
            let after = maglev::build(&rest, M).context("building the 99-backend table")?;
            ensure!(
                after.iter().all(|&s| s != removed.id),
                "{label} set: backend {} still owns slots after leaving",
                removed.address
            );
            let own = before.iter().filter(|&&s| s == removed.id).count();
            let changed = maglev::changed_slots(&before, &after);
            leaves.push(Leave {
                own,
                extra: changed - own,
            });
        }
    }
    let pct = |slots: usize| 100.0 * slots as f64 / f64::from(M);
    let extra: Vec<f64> = leaves.iter().map(|l| pct(l.extra)).collect();
    let own: Vec<f64> = leaves.iter().map(|l| pct(l.own)).collect();
    let extra_s = Spread::of(&extra)?;
    let own_s = Spread::of(&own)?;
    let extra_mean = mean(&extra);
    let own_mean = mean(&own);
    let count = leaves.len();
    let how = format!(
        "each of 100 backends leaves in turn, 2 address sets (consecutive 10.1.0.1.., \
         scattered), M=65537; {count} removals"
    );
    Ok(vec![
        Figure::new(
            SUITE,
            "Maglev disruption 1 of 100 leaves, worst",
            extra_s.max,
            "%",
        )
        .against("leaver's own share", own_mean)
        .target("< 1.5% of M beyond own", extra_s.max < 1.5)
        .note(format!(
            "slots changing owner beyond the leaver's own, % of M (ideal 0); {how}"
        )),
        Figure::new(
            SUITE,
            "Maglev disruption 1 of 100 leaves, mean",
            extra_mean,
            "%",
        )
        .against("leaver's own share", own_mean)
        .note(format!(
            "beyond the leaver's own slots, % of M; median {:.3}, range {:.3}–{:.3}; {how}",
            extra_s.median, extra_s.min, extra_s.max
        )),
        Figure::new(SUITE, "Maglev leaver's own share (N=100)", own_mean, "%")
            .against("ideal 1/N", 100.0 / f64::from(DISRUPTION_N))
            .note(format!(
                "slots the leaving backend owned, % of M; range {:.3}–{:.3}; {how}",
                own_s.min, own_s.max
            )),
    ])
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
