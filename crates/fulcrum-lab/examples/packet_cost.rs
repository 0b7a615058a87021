//! Per-packet cost of the balancer's paths with BPF_PROG_TEST_RUN, measured as
//! ../shared/BENCHMARKING.md says: repeat = 1 per call, interleaved rounds, every
//! compared program attached, net = case − XDP_PASS. The seed of `make bench`.
//!
//! `cargo run --release -p fulcrum-lab --example packet_cost`

use std::{net::SocketAddrV4, time::Duration};

use fulcrum::{AttachMode, Balancer, Destination, PassProgram, Protocol, Service, ServiceId};
use fulcrum_lab::{
    frame::FrameBuilder,
    netns::{NetNs, unique_prefix},
    testrun::run_frame,
};

const ROUNDS: usize = 15;
const CALLS: usize = 20_000;

fn main() -> anyhow::Result<()> {
    pin_to_cpu(0)?;
    let ns = NetNs::create(&format!("{}-cost", unique_prefix("b")))?;
    for (a, b) in [("fx0", "fx1"), ("fp0", "fp1")] {
        ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        ns.ip(&["link", "set", a, "up"])?;
        ns.ip(&["link", "set", b, "up"])?;
    }
    ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "fx0"])?;
    for n in 1..=3 {
        ns.ip(&[
            "neigh",
            "replace",
            &format!("10.88.0.1{n}"),
            "lladdr",
            &format!("02:be:00:00:00:0{n}"),
            "dev",
            "fx0",
            "nud",
            "permanent",
        ])?;
    }
    let _inside = ns.enter()?;
    let mut lb = Balancer::builder()
        .max_services(4)
        .max_flows(1 << 16)
        .build()?;
    lb.attach("fx0", AttachMode::Native)?;
    let pass = PassProgram::attach("fp0")?;
    let web = ServiceId::new([10, 88, 99, 1].into(), 80, Protocol::Tcp);
    lb.add_service(Service::new(web))?;
    let dests: Vec<_> = (1..=3)
        .map(|n| Destination::new([10, 88, 0, 10 + n].into()))
        .collect();
    lb.set_destinations(&web, &dests)?;
    let fx0 = ifindex("fx0");
    let fp0 = ifindex("fp0");

    let client: SocketAddrV4 = "10.88.50.7:40000".parse()?;
    let vip: SocketAddrV4 = "10.88.99.1:80".parse()?;
    let syn = FrameBuilder::tcp(client, vip).syn().build();
    let est = FrameBuilder::tcp(client, vip).build();
    let not_vip = FrameBuilder::tcp(client, "10.88.0.1:22".parse()?).build();
    let program = lb.program()?;
    let pass_prog = pass
        .program()
        .ok_or_else(|| anyhow::anyhow!("pass program"))?;
    run_frame(program, &syn, fx0)?;

    let cases: [(&str, &aya::programs::Xdp, &[u8], u32); 4] = [
        ("XDP_PASS baseline", pass_prog, &est, fp0),
        ("TCP established", program, &est, fx0),
        ("TCP SYN to a VIP", program, &syn, fx0),
        ("not for a VIP", program, &not_vip, fx0),
    ];
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..=ROUNDS {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (_, prog, frame, ingress) = cases[i];
            let mut total = Duration::ZERO;
            for _ in 0..CALLS {
                total += run_frame(prog, frame, ingress)?.duration;
            }
            if round > 0 {
                means[i].push(total.as_nanos() as f64 / CALLS as f64);
            }
        }
    }
    let medians: Vec<f64> = means.iter_mut().map(|m| median(m)).collect();
    println!(
        "{:<20} {:>9} {:>9} {:>13}",
        "case", "ns/call", "net ns", "spread (p-p)"
    );
    for (i, (name, ..)) in cases.iter().enumerate() {
        let spread = means[i].last().unwrap_or(&0.0) - means[i].first().unwrap_or(&0.0);
        println!(
            "{name:<20} {:>9.1} {:>9.1} {:>12.1}",
            medians[i],
            medians[i] - medians[0],
            spread
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
