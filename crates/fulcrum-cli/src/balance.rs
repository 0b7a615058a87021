//! `fulcrum balance`: the quick start. One service, attached until Ctrl-C or SIGTERM.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use fulcrum::{AttachMode, Balancer, Counter, Destination, Scheduler, Service, ServiceId};

#[derive(clap::Args)]
pub struct Args {
    /// Interface clients' packets arrive on (and backends are reached through).
    iface: String,
    /// The service: VIP[:PORT][/tcp|/udp] ([IPv6]:PORT); no port means every port, no
    /// protocol means tcp.
    service: String,
    /// Backend addresses, on a subnet directly connected to IFACE.
    #[arg(required = true)]
    backends: Vec<String>,
    /// Where XDP runs: native (in the driver) or generic (any interface, slower).
    #[arg(long, default_value = "native", value_parser = ["native", "generic"])]
    xdp_mode: String,
    /// Send every connection of a client to the same backend (hash the source address only).
    #[arg(long)]
    sticky: bool,
    /// Seconds between stats lines.
    #[arg(long, default_value_t = 2)]
    interval: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::capabilities::require("fulcrum balance")?;
    let id: ServiceId = args.service.parse()?;
    let backends = args
        .backends
        .iter()
        .map(|b| {
            b.parse::<IpAddr>()
                .map_err(|_| anyhow!("backend '{b}' is not an IP address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mode = match args.xdp_mode.as_str() {
        "generic" => AttachMode::Generic,
        _ => AttachMode::Native,
    };
    let mut lb = Balancer::builder()
        .max_services(1)
        .build()
        .context("starting the balancer")?;
    lb.attach(&args.iface, mode)?;
    let service = Service {
        id,
        scheduler: if args.sticky {
            Scheduler::SourceIp
        } else {
            Scheduler::FiveTuple
        },
        ..Service::new(id)
    };
    lb.add_service(service)?;
    let dests: Vec<Destination> = backends.iter().copied().map(Destination::new).collect();
    lb.set_destinations(&id, &dests)?;
    wait_for_neighbours(&mut lb, Duration::from_secs(3))?;
    println!(
        "balancing {id} on {} ({} mode) across {} backends; Ctrl-C to stop",
        args.iface,
        args.xdp_mode,
        backends.len()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(&mut lb, Duration::from_secs(args.interval.max(1))))?;
    drop(lb);
    println!("detached from {}", args.iface);
    Ok(())
}

/// Refreshes neighbours every second and prints stats until a signal arrives.
async fn serve(lb: &mut Balancer, interval: Duration) -> anyhow::Result<()> {
    crate::foreground::until_signal(interval, |print| {
        if let Err(e) = lb.refresh_neighbours() {
            tracing::warn!(error = %e, "neighbour refresh failed");
        }
        if print {
            println!("{}", stats_line(lb)?);
        }
        Ok(())
    })
    .await
}

fn wait_for_neighbours(lb: &mut Balancer, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        lb.refresh_neighbours()?;
        let unresolved: Vec<String> = lb
            .services()?
            .iter()
            .flat_map(|s| &s.destinations)
            .filter(|d| d.next_hop.is_none())
            .map(|d| d.destination.address.to_string())
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            tracing::warn!(
                backends = unresolved.join(", "),
                "no MAC yet (no ARP reply); these backends take traffic once they answer"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stats_line(lb: &Balancer) -> anyhow::Result<String> {
    let mut line = String::new();
    for service in lb.services()? {
        for d in &service.destinations {
            let state = match (d.next_hop.is_some(), d.drained) {
                (false, _) => " (unresolved)",
                (true, true) => " (drained)",
                _ => "",
            };
            line.push_str(&format!(
                "{}{state}: {} pkts {} flows  ",
                d.destination.address, d.traffic.packets, d.traffic.new_flows
            ));
        }
    }
    let stats = lb.stats()?;
    line.push_str(&format!(
        "| passed {} dropped {}",
        stats.get(Counter::Pass),
        stats.get(Counter::Drop)
    ));
    Ok(line)
}
