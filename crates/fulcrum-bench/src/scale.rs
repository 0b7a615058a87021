//! How the established path holds up as the flow table fills (8 services × 100 backends
//! configured), what the maps cost in kernel memory, and the largest flow table that loads.

use std::net::{Ipv4Addr, SocketAddrV4};

use fulcrum::Balancer;
use fulcrum_lab::{frame::FrameBuilder, testrun::run_frame};

use crate::{
    dataplane::{DataPlane, mean_ns, median_spread, service_vip},
    object,
    report::Figure,
};

const SERVICES: u16 = 8;
const BACKENDS: u16 = 100;
const TABLE: u32 = 1 << 22;
const ROUNDS: usize = 10;
const CALLS: usize = 20_000;
/// Established frames cycled through when measuring: enough to leave the CPU caches.
const WORKING_SET: u32 = 1 << 16;

/// Flow `n`'s client: 2^14 ports per address.
fn client(n: u32) -> SocketAddrV4 {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 60, 0, 0)) + (n >> 14));
    SocketAddrV4::new(addr, 1024 + (n & 0x3fff) as u16)
}

fn frame(n: u32, syn: bool) -> Vec<u8> {
    let vip = service_vip((n % u32::from(SERVICES)) as u16);
    let b = FrameBuilder::tcp(client(n), SocketAddrV4::new(vip, 80));
    if syn { b.syn() } else { b }.build()
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(0)?;
    let mut figures = Vec::new();
    {
        let dp = DataPlane::new(
            Balancer::builder()
                .max_services(SERVICES.into())
                .max_backends(1024)
                .max_flows(TABLE)
                .flow_insert_budget(u32::MAX),
            SERVICES,
            BACKENDS,
        )?;
        let program = dp.balancer()?;
        let mut filled = 0u32;
        let mut one_flow: Option<f64> = None;
        for target in [1u32, 100_000, 1 << 20] {
            // A SYN and its ACK: the ACK proves the flow and pins it.
            while filled < target {
                run_frame(program, &frame(filled, true), dp.fx0)?;
                run_frame(program, &frame(filled, false), dp.fx0)?;
                filled += 1;
            }
            let held = dp.lb.scan_flows()?.len();
            anyhow::ensure!(
                held >= target as usize,
                "the flow table holds {held} flows after {target} were pinned"
            );
            // One flow of the table, hot in the caches: what the table's size costs a lookup.
            let hot = vec![frame(target / 2, false)];
            // Many flows of the table in turn: what memory latency adds when they are cold.
            let set = target.min(WORKING_SET);
            let step = (target / set).max(1);
            let cycled: Vec<Vec<u8>> = (0..set).map(|i| frame(i * step, false)).collect();
            let (hot_net, hot_spread) = net_cost(&dp, &hot)?;
            let (cold_net, cold_spread) = net_cost(&dp, &cycled)?;
            let base = *one_flow.get_or_insert(hot_net);
            let mut f = Figure::new(
                "scale",
                format!("established, {target} flows in table, net"),
                hot_net,
                "ns",
            )
            .note(format!(
                "one flow of the table, repeated; spread {hot_spread:.1} ns"
            ));
            if target > 1 {
                f = f
                    .against("1 flow", base)
                    .target("<= 1.5x the 1-flow cost", hot_net <= 1.5 * base);
            }
            figures.push(f);
            if target > 1 {
                figures.push(
                    Figure::new("scale", format!("established, {target} flows, {set} cycled, net"), cold_net, "ns")
                        .against("1 flow", base)
                        .note(format!("flows spread over the table taken in turn (cache and TLB misses); spread {cold_spread:.1} ns")),
                );
            }
        }
        figures.push(
            Figure::new(
                "scale",
                format!("kernel memory of all maps ({TABLE} flow slots)"),
                map_memory()? as f64,
                "bytes",
            )
            .note("sum of memlock over this process's BPF map fds"),
        );
    }
    figures.push(largest_table()?);
    Ok(figures)
}

/// Median net ns (balancer − XDP_PASS, same rounds) over `frames`, and its spread.
fn net_cost(dp: &DataPlane, frames: &[Vec<u8>]) -> anyhow::Result<(f64, f64)> {
    let mut nets = Vec::new();
    for round in 0..=ROUNDS {
        let lb = mean_ns(dp.balancer()?, frames, dp.fx0, CALLS)?;
        let pass = mean_ns(dp.pass()?, &frames[..1], dp.fp0, CALLS)?;
        if round > 0 {
            nets.push(lb - pass);
        }
    }
    Ok(median_spread(&mut nets))
}

/// Sum of `memlock` of every BPF map this process holds open.
fn map_memory() -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// The largest power-of-two flow table that loads, up to 2^26 flows.
fn largest_table() -> anyhow::Result<Figure> {
    let mut largest = None;
    for shift in [22u32, 24, 26] {
        let flows = 1u32 << shift;
        match Balancer::builder()
            .max_services(SERVICES.into())
            .max_flows(flows)
            .build()
        {
            Ok(lb) => {
                largest = Some((flows, map_memory()?));
                drop(lb);
            }
            Err(e) => {
                eprintln!("scale: a table of {flows} flows does not load: {e}");
                break;
            }
        }
    }
    let (flows, bytes) = largest.unwrap_or((0, 0));
    Ok(Figure::new(
        "scale",
        "largest flow table that loads",
        f64::from(flows),
        "flows",
    )
    .note(format!(
        "tried 2^22..2^26; {:.0} MiB of map memory at that size",
        bytes as f64 / (1 << 20) as f64
    )))
}
