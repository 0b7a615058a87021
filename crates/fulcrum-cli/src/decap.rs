//! `fulcrum decap`: the decapsulator on a backend, attached until Ctrl-C or SIGTERM.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, anyhow};
use fulcrum::{AttachMode, DecapStats, Decapsulator};

#[derive(clap::Args)]
pub struct Args {
    /// Interface the balancer's tunnelled packets arrive on; its addresses are accepted as
    /// tunnel endpoints (re-read every second).
    iface: String,
    /// UDP port carrying GUE; repeat for several. Default 6080, the balancer's.
    #[arg(long = "gue-port", value_name = "N")]
    gue_ports: Vec<u16>,
    /// A further address tunnel packets may be sent to (IPv4 or IPv6); repeat for several.
    #[arg(long = "address", value_name = "ADDR")]
    addresses: Vec<String>,
    /// Where XDP runs: native (in the driver) or generic (any interface, slower).
    #[arg(long, default_value = "native", value_parser = ["native", "generic"])]
    xdp_mode: String,
    /// Seconds between counter lines.
    #[arg(long, default_value_t = 10)]
    interval: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::capabilities::require("fulcrum decap")?;
    let mut builder = Decapsulator::builder().interface(&args.iface);
    for a in &args.addresses {
        let addr: IpAddr = a
            .parse()
            .map_err(|_| anyhow!("address '{a}' is not an IPv4 or IPv6 address"))?;
        builder = builder.address(addr);
    }
    for port in &args.gue_ports {
        if *port == 0 {
            anyhow::bail!("GUE port 0 is not a port");
        }
        builder = builder.gue_port(*port);
    }
    let mode = match args.xdp_mode.as_str() {
        "generic" => AttachMode::Generic,
        _ => AttachMode::Native,
    };
    let mut decap = builder.mode(mode).build()?;
    let addresses: Vec<String> = decap.addresses().map(|a| a.to_string()).collect();
    let ports: Vec<String> = decap.gue_ports().map(|p| p.to_string()).collect();
    println!(
        "decapsulating IP-in-IP and GUE (UDP {}) to {} on {} ({} mode); Ctrl-C to stop",
        ports.join(", "),
        if addresses.is_empty() {
            "no address yet".to_string()
        } else {
            addresses.join(", ")
        },
        args.iface,
        args.xdp_mode,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(&mut decap, Duration::from_secs(args.interval.max(1))))?;
    println!("{}", counters_line(&decap.counters()?));
    drop(decap);
    println!("detached from {}", args.iface);
    Ok(())
}

/// Re-reads the interface's addresses every second and prints counters until a signal.
async fn serve(decap: &mut Decapsulator, interval: Duration) -> anyhow::Result<()> {
    crate::foreground::until_signal(interval, |print| {
        match decap.refresh_addresses() {
            Ok(true) => {
                let now: Vec<String> = decap.addresses().map(|a| a.to_string()).collect();
                println!("addresses now {}", now.join(", "));
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "re-reading the interface's addresses failed"),
        }
        if print {
            println!("{}", counters_line(&decap.counters()?));
        }
        Ok(())
    })
    .await
}

/// `decapsulated N | passed N | dropped N`, then every counter that is not zero.
fn counters_line(stats: &DecapStats) -> String {
    let mut sums = [0u64; 3];
    let mut detail = Vec::new();
    for (c, v) in stats.iter() {
        let label = c.label();
        let i = if label.starts_with("decap_") {
            0
        } else if label.starts_with("pass_") {
            1
        } else {
            2
        };
        sums[i] += v;
        if v != 0 {
            detail.push(format!("{label} {v}"));
        }
    }
    format!(
        "decapsulated {} | passed {} | dropped {}{}{}",
        sums[0],
        sums[1],
        sums[2],
        if detail.is_empty() { "" } else { " | " },
        detail.join(" ")
    )
}
