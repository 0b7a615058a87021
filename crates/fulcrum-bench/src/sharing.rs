//! What flow sharing costs: the data plane's added cost per new flow with sharing on,
//! against the same frames through a balancer with it off (measured in the same rounds),
//! and user space's cost of getting flows out (ring, scan) and in (import).
//!
//! An A/A run (both balancers off) read 0–1% apart on the new-flow paths and ~7 ns
//! (~7%) apart on the established one, from the balancers' placement alone: the
//! established figure tells only that sharing adds nothing beyond that.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Instant,
};

use anyhow::{bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use fulcrum::{Balancer, Counter, FlowEvent, FlowRecord, Protocol};
use fulcrum_common::{FlowKey, FlowValue, maps};
use fulcrum_lab::{frame::FrameBuilder, testrun::run_frame};

use crate::{
    dataplane::{DataPlane, VIP, backend, median_spread},
    object,
    report::Figure,
};

const ROUNDS: usize = 12;
const CALLS: usize = 10_000;
/// New flows each balancer takes in a row before the other's turn.
const SLICE: usize = 250;
/// Flows in the table for the scan and import figures.
const TABLE: u32 = 100_000;
const TABLE_ROUNDS: usize = 5;

fn client(n: u32) -> SocketAddrV4 {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 60, 0, 0)) + (n >> 14));
    SocketAddrV4::new(addr, 1024 + (n & 0x3fff) as u16)
}

/// What a measured packet does, each measured on balancers with sharing off and on.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// A TCP packet that is not a SYN, of a flow never seen: chosen, and waits unproven
    /// in the cache (nothing pinned, nothing reported).
    MidStream,
    /// The handshake ACK after its SYN (untimed): the pending choice is pinned.
    FirstAck,
    /// A packet of one flow pinned before the rounds: no flow written, nothing reported;
    /// the check that sharing leaves the established path alone.
    Established,
}

const PATHS: [Path; 3] = [Path::MidStream, Path::FirstAck, Path::Established];

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(0)?;
    // Every handshake pinned: the insert budget would leave most of them pending.
    let builder = || {
        Balancer::builder()
            .max_services(8)
            .max_flows(1 << 20)
            .flow_insert_budget(u32::MAX)
    };
    let off = DataPlane::new(builder(), 1, 3)?;
    let mut on = DataPlane::new(builder().share_flows(true), 1, 3)?;
    // The thread is in `on`'s namespace from here; `off`'s program is run with the same
    // ingress index, which only has to match its backends' egress (both veths are made
    // in the same order).
    ensure!(
        off.fx0 == on.fx0,
        "the two namespaces' fx0 differ ({} vs {})",
        off.fx0,
        on.fx0
    );
    let mut events = on.lb.flow_events()?;
    let mut drained = Vec::new();
    let vip = SocketAddrV4::new(VIP, 80);
    let cases: Vec<(Path, bool)> = PATHS
        .iter()
        .flat_map(|p| [(*p, false), (*p, true)])
        .collect();
    // The established flow, pinned on both balancers before the rounds.
    let established = SocketAddrV4::new(Ipv4Addr::new(10, 61, 0, 1), 4000);
    for dp in [&off, &on] {
        for frame in [
            FrameBuilder::tcp(established, vip).syn().build(),
            FrameBuilder::tcp(established, vip).build(),
        ] {
            run_frame(dp.balancer()?, &frame, dp.fx0)?;
        }
    }
    let index = |c: (Path, bool)| cases.iter().position(|x| *x == c).unwrap_or(0);
    let mut means = vec![Vec::new(); cases.len()];
    let mut next = 0u32;
    for round in 0..=ROUNDS {
        // The same new flows for both balancers; on and off take turns every SLICE
        // flows, so a neighbour's burst on this shared machine hits both alike.
        let base = next;
        next += CALLS as u32;
        for k in 0..PATHS.len() {
            let path = PATHS[(k + round) % PATHS.len()];
            // First-ACK flows live apart from mid-stream ones, so each is new to its path.
            let offset = if path == Path::FirstAck { 1 << 23 } else { 0 };
            let mut total = [0u128; 2];
            for (s, slice) in (base..base + CALLS as u32)
                .collect::<Vec<_>>()
                .chunks(SLICE)
                .enumerate()
            {
                for turn in 0..2 {
                    let sharing = (turn + s) % 2 == 1;
                    let dp = if sharing { &on } else { &off };
                    let program = dp.balancer()?;
                    for n in slice {
                        let c = match path {
                            Path::Established => established,
                            _ => client(n + offset),
                        };
                        if path == Path::FirstAck {
                            run_frame(program, &FrameBuilder::tcp(c, vip).syn().build(), dp.fx0)?;
                        }
                        let ack = FrameBuilder::tcp(c, vip).build();
                        total[usize::from(sharing)] +=
                            run_frame(program, &ack, dp.fx0)?.duration.as_nanos();
                    }
                }
            }
            if round > 0 {
                for sharing in [false, true] {
                    let i = index((path, sharing));
                    means[i].push(total[usize::from(sharing)] as f64 / CALLS as f64);
                }
            }
        }
        // Read out between rounds, untimed, as the daemon's reader would meanwhile.
        drained.clear();
        events.drain(&mut drained);
    }
    let stats = on.lb.stats()?;
    let lost = stats.get(Counter::FlowEventsLost);
    let emitted = stats.get(Counter::FlowEventsEmitted);
    ensure!(lost == 0, "{lost} flow events lost: the ring filled");
    // The handshakes of every round, and the established flow's pin (first packets
    // without a SYN are unproven: nothing to report).
    let want = (ROUNDS as u64 + 1) * CALLS as u64 + 1;
    ensure!(
        emitted == want,
        "{emitted} flow events for {want} flows pinned with sharing on"
    );

    // Round by round, on against off: what the machine's drift moves, it moves for both.
    let per_round = |path: Path| {
        let (off, on) = (&means[index((path, false))], &means[index((path, true))]);
        let mut ratios: Vec<f64> = on.iter().zip(off).map(|(a, b)| a / b).collect();
        median_spread(&mut ratios)
    };
    let round_ratios = PATHS.map(per_round);
    let stats: Vec<(f64, f64)> = means.iter_mut().map(|m| median_spread(m)).collect();
    let mut figures = Vec::new();
    for ((path, name), (ratio, ratio_spread)) in [
        (Path::MidStream, "new flow, first packet not a SYN"),
        (Path::FirstAck, "new flow, handshake ACK pins it"),
        (Path::Established, "established flow (flow hit)"),
    ]
    .into_iter()
    .zip(round_ratios)
    {
        let at = |sharing| {
            cases
                .iter()
                .position(|c| *c == (path, sharing))
                .map(|i| stats[i])
                .unwrap_or((f64::NAN, f64::NAN))
        };
        let ((off_ns, off_spread), (on_ns, on_spread)) = (at(false), at(true));
        let how = format!(
            "median of {ROUNDS} rounds x {CALLS} new flows, repeat=1, CPU 0; spread on {on_spread:.1} ns, off {off_spread:.1} ns"
        );
        figures.push(
            Figure::new("sharing", format!("{name}, sharing on"), on_ns, "ns")
                .against("sharing off", off_ns)
                .note(how),
        );
        figures.push(
            Figure::new(
                "sharing",
                format!("{name}, added by sharing"),
                on_ns - off_ns,
                "ns",
            )
            .note("on − off, same frames, same rounds"),
        );
        figures.push(
            Figure::new(
                "sharing",
                format!("{name}, added by sharing, per round"),
                (ratio - 1.0) * 100.0,
                "%",
            )
            .note(format!(
                "median over rounds of each round's on / off − 1; spread {:.1} points",
                ratio_spread * 100.0
            )),
        );
    }
    let (on_info, off_info) = (on.balancer()?.info()?, off.balancer()?.info()?);
    figures.push(
        Figure::new(
            "sharing",
            "translated program size, sharing on",
            f64::from(on_info.size_translated().unwrap_or(0)),
            "bytes",
        )
        .against(
            "sharing off",
            f64::from(off_info.size_translated().unwrap_or(0)),
        )
        .note("after verification: off, the verifier removed the emission"),
    );
    drop(events);
    figures.extend(user_space(&mut on)?);
    // `on` drops first: its namespace guard returns the thread to `off`'s.
    Ok(figures)
}

/// Per 100k flows: translating ring events, scanning the table, importing records.
fn user_space(dp: &mut DataPlane) -> anyhow::Result<Vec<Figure>> {
    let per = f64::from(TABLE) / 100_000.0;
    let records: Vec<FlowRecord> = (0..TABLE)
        .map(|n| FlowRecord {
            protocol: Protocol::Tcp,
            client: SocketAddr::V4(client((1 << 24) + n)),
            vip: SocketAddr::V4(SocketAddrV4::new(VIP, 80)),
            service_port: 80,
            backend: IpAddr::V4(backend(1 + (n % 3) as u16)),
        })
        .collect();
    let mut table = flow_table(&dp.lb)?;
    let lb = &mut dp.lb;
    let mut import = Vec::new();
    let mut scan = Vec::new();
    let mut walk = Vec::new();
    let mut translate = Vec::new();
    for _ in 0..TABLE_ROUNDS {
        let keys: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = table.remove(k);
        }
        let t = Instant::now();
        let report = lb.import_flows(&records);
        import.push(t.elapsed().as_secs_f64() * 1e3 / per);
        ensure!(
            report.imported == records.len(),
            "import into an empty table: {report:?}"
        );
        let t = Instant::now();
        let count = lb.flow_count()?;
        walk.push(t.elapsed().as_secs_f64() * 1e3 / per);
        let t = Instant::now();
        let scanned = lb.scan_flows()?;
        scan.push(t.elapsed().as_secs_f64() * 1e3 / per);
        if scanned.len() != records.len() || count < records.len() {
            bail!(
                "scanned {} flows, walked {count}, of {} imported",
                scanned.len(),
                records.len()
            );
        }
        // The events the data plane would have written for these flows.
        let events: Vec<FlowEvent> = table
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| FlowEvent {
                key: fulcrum_common::FlowKey6::from_v4(&key),
                value,
                family: fulcrum_common::FLOW_FAMILY_IPV4,
                _pad: 0,
            })
            .collect();
        let t = Instant::now();
        let translated = lb.flow_records(&events);
        translate.push(t.elapsed().as_secs_f64() * 1e3 / per);
        ensure!(translated.len() == records.len(), "every event translates");
    }
    let (import, import_spread) = median_spread(&mut import);
    let (scan, scan_spread) = median_spread(&mut scan);
    let (walk, _) = median_spread(&mut walk);
    let (translate, translate_spread) = median_spread(&mut translate);
    let how = |spread: f64| {
        format!("median of {TABLE_ROUNDS} runs over {TABLE} flows; spread {spread:.1} ms")
    };
    Ok(vec![
        Figure::new("sharing", "scan_flows per 100k flows", scan, "ms")
            .against("walking the table's keys (flow_count)", walk)
            .note(how(scan_spread)),
        Figure::new("sharing", "import_flows per 100k records", import, "ms")
            .note(how(import_spread)),
        Figure::new(
            "sharing",
            "flow_records per 100k ring events",
            translate,
            "ms",
        )
        .note(how(translate_spread)),
    ])
}

/// The balancer's flow table, opened by id for what the library does not do (emptying it).
fn flow_table(lb: &Balancer) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
    let info = lb.program()?.info()?;
    for id in info.map_ids()?.unwrap_or_default() {
        let data = MapData::from_id(id)?;
        if data.info()?.name_as_str() == Some(maps::FLOWS) {
            return Ok(HashMap::try_from(Map::from_map_data(data)?)?);
        }
    }
    bail!("the program uses no map {}", maps::FLOWS)
}
