//! `make demo`: a client, a balancer and three HTTP backends in network namespaces;
//! `fulcrum balance` runs on the balancer and the client sends a burst of requests.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fulcrum_lab::{
    dsr::{BALANCER, CLIENT, DsrLab, LB_IFACE, VIP, backend_addr},
    traffic::http_get,
};

const BACKENDS: u8 = 3;
const REQUESTS: usize = 12;

fn main() -> anyhow::Result<()> {
    let fulcrum = fulcrum_binary()?;
    println!("== Fulcrum demo: L2 Direct Server Return in XDP ==");
    println!("Building the lab (network namespaces on one bridge):");
    println!("  client    {CLIENT}   routes {VIP} via the balancer");
    println!("  balancer  {BALANCER}   runs `fulcrum balance`");
    for n in 1..=BACKENDS {
        println!(
            "  backend-{n} {}  HTTP on :80, holds {VIP} on lo",
            backend_addr(n)
        );
    }
    let lab = DsrLab::with_prefix("fulcrum-demo", BACKENDS)?;
    let vip_http = SocketAddr::from((VIP, 80));
    let servers = lab.http_servers()?;

    let backends: Vec<String> = (1..=BACKENDS)
        .map(|n| backend_addr(n).to_string())
        .collect();
    let mut args = vec![
        fulcrum.to_string_lossy().into_owned(),
        "balance".into(),
        LB_IFACE.into(),
        format!("{VIP}:80"),
    ];
    args.extend(backends);
    args.extend(["--interval".into(), "1".into()]);
    println!(
        "\n$ ip netns exec {} {}",
        lab.balancer.ns.name(),
        args.join(" ")
    );
    let mut cmd = lab.balancer.ns.command(&args[0]);
    cmd.args(&args[1..])
        .stdout(Stdio::piped())
        .env("FULCRUM_LOG", "warn");
    let mut child = KillOnDrop(cmd.spawn().context("starting fulcrum balance")?);
    let lines = echo_output(&mut child.0)?;
    wait_for(&lines, "balancing", Duration::from_secs(10))?;

    println!("\nThe client sends {REQUESTS} HTTP requests to {vip_http}, one connection each:");
    let mut tally = BTreeMap::new();
    for i in 1..=REQUESTS {
        let answer = http_get(&lab.client.ns, vip_http)?;
        println!(
            "  request {i:>2}: answered by {} (which saw the client as {})",
            answer.server, answer.peer
        );
        *tally.entry(answer.server).or_insert(0) += 1;
    }
    println!("\nShare per backend:");
    for (server, n) in &tally {
        println!("  {server}: {n} of {REQUESTS}");
    }
    println!(
        "Replies go straight from the backends to the client (Direct Server Return): the \
         balancer forwards only the client's packets, as its counters below show."
    );

    std::thread::sleep(Duration::from_millis(1500));
    println!("\nStopping fulcrum (SIGINT):");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    let status = child.0.wait().context("waiting for fulcrum")?;
    std::thread::sleep(Duration::from_millis(200));
    if !status.success() {
        bail!("fulcrum exited with {status}");
    }
    if lab.balancer_has_xdp()? {
        bail!("an XDP program is still attached to the balancer's {LB_IFACE}");
    }
    println!("No XDP program is left on the balancer's {LB_IFACE}. Removing the lab.");
    drop(servers);
    drop(lab);
    println!("Done.");
    Ok(())
}

/// Stops fulcrum if the demo fails half way, so nothing outlives the lab.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Prints the child's output as it comes, and hands every line to the caller too.
fn echo_output(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("fulcrum's stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("  [fulcrum] {line}");
            let _ = tx.send(line);
        }
    });
    Ok(rx)
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    bail!("fulcrum did not print '{needle}' within {limit:?}")
}

/// `fulcrum` next to this binary (both live in target/release), or `$FULCRUM_BIN`.
fn fulcrum_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FULCRUM_BIN") {
        return Ok(path.into());
    }
    let me = std::env::current_exe().context("finding this binary")?;
    let path = me.with_file_name("fulcrum");
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}
