//! The flood lab: live keep-alive HTTP connections through the balancer in the DSR lab
//! survive a flood of spoofed SYNs, ACKs and UDP to the VIP, sent by the bench's
//! live-frames generator (`bench_flood`) as fast as it goes.
//!
//! ```text
//!   client ── keep-alive HTTP, some idle, some active ──┐
//!   bench_flood (live frames, one thread per CPU) ── p-lb ══ eth0 balancer ── backends 1..4
//! ```
//! Backend 4 joins after the connections are open and before the flood, so a connection
//! whose flow the balancer forgets would be re-chosen by Maglev, and a quarter of them
//! would land on a backend that does not know them. The flow table is small, so the
//! flood's inserts fill it many times over. After the flood every connection must still
//! answer from its original backend and every one must still be pinned in the table.
//!
//! `FLOOD_SECONDS` sets the flood's length (3 s by default; the issue's lab is 10 s).

use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use fulcrum::{AttachMode, Balancer, Counter, Destination, Protocol, Service, ServiceId};
use fulcrum_lab::{
    dsr::{CLIENT, DsrLab, LB_IFACE, VIP, backend_addr},
    frame::FrameBuilder,
    traffic::{HttpConnection, http_server},
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum-bench"));

const HTTP: u16 = 80;
const DNS: u16 = 53;
/// Connections left idle for the whole flood.
const IDLE: usize = 24;
/// Connections that keep sending requests during the flood.
const ACTIVE: usize = 8;
/// Small enough that the flood's inserts would evict every idle flow many times over.
const MAX_FLOWS: u32 = 1024;
/// Generator threads at most, one pinned per CPU (the machines have 2).
const GEN_THREADS: usize = 2;
const FRAME_LEN: usize = 64;
/// The spoofed sources: 198.18.0.0/16 (benchmarking range, routed nowhere in the lab).
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

/// Same layout as `FloodTemplate` in `fulcrum-bench-ebpf`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FloodTemplate {
    frame: [u64; FRAME_LEN / 8],
    tcp: u32,
    enabled: u32,
}

// SAFETY: plain integers, no padding (64 + 4 + 4 bytes).
unsafe impl aya::Pod for FloodTemplate {}

fn flood_seconds() -> u64 {
    std::env::var("FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn web() -> ServiceId {
    ServiceId::new(VIP, HTTP, Protocol::Tcp)
}

fn dns() -> ServiceId {
    ServiceId::new(VIP, DNS, Protocol::Udp)
}

/// The balancer in the lab's balancer namespace, with a small flow table, serving HTTP and
/// UDP on the lab's backends.
fn start_balancer(lab: &DsrLab) -> anyhow::Result<Balancer> {
    let mut lb = lab
        .balancer
        .ns
        .run_in(|| -> Result<Balancer, fulcrum::BalancerError> {
            let mut lb = Balancer::builder()
                .max_services(4)
                .max_flows(MAX_FLOWS)
                .build()?;
            lb.attach(LB_IFACE, AttachMode::Native)?;
            Ok(lb)
        })??;
    let dests: Vec<_> = lab
        .backends
        .iter()
        .map(|b| Destination::new(b.addr))
        .collect();
    for id in [web(), dns()] {
        lb.add_service(Service::new(id))?;
        lb.set_destinations(&id, &dests)?;
    }
    wait_resolved(&mut lb)?;
    Ok(lb)
}

fn wait_resolved(lb: &mut Balancer) -> anyhow::Result<()> {
    for _ in 0..100 {
        lb.refresh_neighbours()?;
        if lb
            .services()?
            .iter()
            .flat_map(|s| &s.destinations)
            .all(|d| d.next_hop.is_some())
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(30));
    }
    bail!("backends' MACs were not resolved within 3 s")
}

fn mac_of(out: &str) -> anyhow::Result<[u8; 6]> {
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no link/ether")?;
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// Writes the three frame kinds: SYN and ACK to VIP:80, UDP to VIP:53, each 64 bytes to
/// the balancer's MAC, from `SPOOFED`:0.
fn write_templates(generator: &mut Ebpf, lb_mac: [u8; 6]) -> anyhow::Result<()> {
    let src = SocketAddrV4::new(SPOOFED, 0);
    let gen_mac = [0x02, 0xf1, 0, 0, 0, 1];
    let syn = FrameBuilder::tcp(src, SocketAddrV4::new(VIP, HTTP))
        .syn()
        .macs(lb_mac, gen_mac)
        .payload(&[0; FRAME_LEN - 54])
        .build();
    let ack = FrameBuilder::tcp(src, SocketAddrV4::new(VIP, HTTP))
        .macs(lb_mac, gen_mac)
        .payload(&[0; FRAME_LEN - 54])
        .build();
    let mut udp = FrameBuilder::udp(src, SocketAddrV4::new(VIP, DNS))
        .macs(lb_mac, gen_mac)
        .payload(&[0; FRAME_LEN - 42])
        .build();
    // No UDP checksum (allowed over IPv4): the generator changes the source.
    udp[40..42].fill(0);
    let mut map: Array<&mut MapData, FloodTemplate> = generator
        .map_mut("FLOOD_TEMPLATE")
        .context("no map FLOOD_TEMPLATE")?
        .try_into()?;
    for (i, (bytes, tcp)) in [(syn, 1), (ack, 1), (udp, 0)].into_iter().enumerate() {
        ensure!(
            bytes.len() == FRAME_LEN,
            "template is {} bytes",
            bytes.len()
        );
        let mut frame = [0u64; FRAME_LEN / 8];
        for (word, chunk) in frame.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        let t = FloodTemplate {
            frame,
            tcp,
            enabled: 1,
        };
        map.set(i as u32, t, 0)?;
    }
    Ok(())
}

/// Moves the calling thread into the namespace `name` for good.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    let ns = File::open(format!("/run/netns/{name}")).with_context(|| format!("netns {name}"))?;
    // SAFETY: a valid descriptor of a network namespace; only this thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One generator thread: sends live frames out of `p-lb` (into the balancer's `eth0`)
/// until `stop`.
fn generate(program: &Xdp, switch: &str, cpu: usize, stop: &AtomicBool) -> anyhow::Result<()> {
    enter_netns(switch)?;
    fulcrum_lab::testrun::pin_to_cpu(cpu).context("pinning")?;
    let ifindex = nametoindex("p-lb").context("no p-lb in the switch namespace")?;
    let ctx: Vec<u8> = [0, FRAME_LEN as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let frame = [0u8; FRAME_LEN];
    while !stop.load(Ordering::Relaxed) {
        program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: 1 << 14,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN with live frames")?;
    }
    Ok(())
}

fn nametoindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// What happened to the lab's connections.
#[derive(Debug, Default)]
struct Outcome {
    before: usize,
    working_after: usize,
    broken: BTreeMap<String, usize>,
    unpinned: usize,
    /// Requests the active connections completed during the flood.
    answered_during: usize,
    /// Why the others failed (lost frames retransmitted past the read timeout, when the
    /// flood overruns the balancer's receive ring), by message.
    errors_during: BTreeMap<String, usize>,
    sent: u64,
    forwarded: u64,
    /// What the balancer counted as new SYNs, non-SYN misses and new UDP flows.
    kinds: [u64; 3],
    seconds: f64,
}

fn run_lab() -> anyhow::Result<Outcome> {
    let mut lab = DsrLab::new("fl", 3)?;
    let mut servers = lab.http_servers()?;
    let mut lb = start_balancer(&lab)?;
    let vip = SocketAddr::from((VIP, HTTP));

    let mut conns = Vec::new();
    for _ in 0..IDLE + ACTIVE {
        let mut conn = HttpConnection::open(&lab.client.ns, vip)?;
        let server = conn.get().context("first request")?.server;
        conns.push((conn, server));
    }
    let mut out = Outcome {
        before: conns.len(),
        ..Outcome::default()
    };

    // The backend set changes before the flood: re-chosen flows may land on backend 4.
    let b4 = lab.add_backend(4)?;
    servers.push(http_server(
        &b4.ns,
        "backend-4",
        SocketAddr::from(([0, 0, 0, 0], HTTP)),
    )?);
    for id in [web(), dns()] {
        lb.add_destination(&id, Destination::new(backend_addr(4)))?;
    }
    wait_resolved(&mut lb)?;

    let mut generator = Ebpf::load(OBJECT).context("loading the bench object")?;
    let prog: &mut Xdp = generator
        .program_mut("bench_flood")
        .context("no bench_flood")?
        .try_into()?;
    prog.load().context("verifying bench_flood")?;
    let lb_mac = mac_of(&lab.balancer.ns.ip(&["link", "show", LB_IFACE])?)?;
    write_templates(&mut generator, lb_mac)?;
    let program: &Xdp = generator
        .program("bench_flood")
        .context("no bench_flood")?
        .try_into()?;
    let switch = lab
        .client
        .ns
        .name()
        .strip_suffix("-cl")
        .map(|p| format!("{p}-sw"))
        .context("client namespace name")?;

    let sent_before = read_sent(&generator)?;
    let stats_before = lb.stats()?;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (idle, active) = conns.split_at_mut(IDLE);
    let gen_results = thread::scope(|s| {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let gens: Vec<_> = (0..GEN_THREADS.min(cpus))
            .map(|cpu| {
                let (stop, switch) = (&stop, &switch);
                s.spawn(move || generate(program, switch, cpu, stop))
            })
            .collect();
        let requests = s.spawn(|| {
            let mut answered = 0;
            let mut errors = BTreeMap::<String, usize>::new();
            while !stop.load(Ordering::Relaxed) {
                for (conn, _) in active.iter_mut() {
                    match conn.get() {
                        Ok(_) => answered += 1,
                        Err(e) => *errors.entry(format!("{e:#}")).or_default() += 1,
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            (answered, errors)
        });
        thread::sleep(Duration::from_secs(flood_seconds()));
        stop.store(true, Ordering::Relaxed);
        let generated = gens
            .into_iter()
            .map(|g| g.join().unwrap_or_else(|_| bail!("generator panicked")))
            .collect::<anyhow::Result<Vec<()>>>();
        // The flood's length; a request in flight may still wait out its read timeout.
        out.seconds = started.elapsed().as_secs_f64();
        (out.answered_during, out.errors_during) = requests
            .join()
            .unwrap_or_else(|_| (0, BTreeMap::from([("panicked".into(), 1)])));
        generated
    });
    gen_results?;
    out.sent = read_sent(&generator)?
        .iter()
        .zip(&sent_before)
        .map(|(a, b)| u64::from(a.wrapping_sub(*b)))
        .sum();
    let stats = lb.stats()?.since(&stats_before);
    out.forwarded = stats.get(Counter::Tx);
    out.kinds = [
        Counter::FlowNewSyn,
        Counter::FlowMissNonSyn,
        Counter::FlowNewUdp,
    ]
    .map(|c| stats.get(c));

    // Pinned: the table holds each connection's flow, to the backend that answered it.
    let pinned: BTreeMap<u16, std::net::IpAddr> = lb
        .scan_flows()?
        .into_iter()
        .filter(|r| r.client.ip() == CLIENT && r.vip == vip)
        .map(|r| (r.client.port(), r.backend))
        .collect();
    for (conn, server) in idle.iter_mut().chain(active.iter_mut()) {
        let n: u8 = server.trim_start_matches("backend-").parse()?;
        if pinned.get(&conn.local_port()) != Some(&backend_addr(n).into()) {
            out.unpinned += 1;
        }
    }
    for (conn, server) in idle.iter_mut().chain(active.iter_mut()) {
        match conn.get() {
            Ok(a) if &a.server == server => out.working_after += 1,
            Ok(a) => {
                *out.broken
                    .entry(format!("moved to {}", a.server))
                    .or_default() += 1
            }
            Err(e) => *out.broken.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    Ok(out)
}

fn read_sent(generator: &Ebpf) -> anyhow::Result<Vec<u32>> {
    let map: PerCpuArray<&MapData, u32> = generator
        .map("FLOOD_SENT")
        .context("no map FLOOD_SENT")?
        .try_into()?;
    Ok(map.get(&0, 0)?.iter().copied().collect())
}

#[test]
fn live_connections_survive_a_spoofed_flood() {
    let out = run_lab().expect("the flood lab runs");
    let rate = out.sent as f64 / out.seconds;
    println!(
        "flood: {} frames in {:.1} s ({:.2} Mpps generated, {:.2} Mpps forwarded by the balancer; \
         new SYN / non-SYN miss / new UDP {:?}); \
         connections before {}, working on their backend after {}, broken {:?}, \
         not pinned after the flood {}; during the flood {} requests answered, failed {:?}",
        out.sent,
        out.seconds,
        rate / 1e6,
        out.forwarded as f64 / out.seconds / 1e6,
        out.kinds,
        out.before,
        out.working_after,
        out.broken,
        out.unpinned,
        out.answered_during,
        out.errors_during
    );
    assert!(
        out.forwarded > u64::from(MAX_FLOWS) * 10,
        "the flood reached the balancer: {out:?}"
    );
    assert_eq!(
        out.unpinned, 0,
        "every live flow still pinned after the flood: {out:?}"
    );
    assert_eq!(
        out.working_after, out.before,
        "every connection answers from its original backend: {out:?}"
    );
}

/// The generator's frames: SYN, ACK and UDP in turn, each from a new source, with valid
/// IPv4 and TCP checksums. Needs root (loads the program).
#[test]
fn flood_frames_are_new_flows_with_valid_checksums() -> anyhow::Result<()> {
    use fulcrum_lab::{
        frame::checksum,
        testrun::{action, run_frame},
    };
    let mut generator = Ebpf::load(OBJECT)?;
    let prog: &mut Xdp = generator
        .program_mut("bench_flood")
        .context("no bench_flood")?
        .try_into()?;
    prog.load()?;
    let lb_mac = [0x02, 0, 0, 0, 0, 9];
    write_templates(&mut generator, lb_mac)?;
    let program: &Xdp = generator
        .program("bench_flood")
        .context("no bench_flood")?
        .try_into()?;
    let mut sources = std::collections::BTreeSet::new();
    let mut kinds = Vec::new();
    for _ in 0..6 {
        // Stale bytes, as a reused live frame would hold.
        let ran = run_frame(program, &[0xa5; FRAME_LEN], 1)?;
        assert_eq!(ran.action, action::TX);
        let f = ran.frame;
        assert_eq!(f.len(), FRAME_LEN);
        assert_eq!(f[..6], lb_mac, "to the balancer");
        assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 checksum");
        assert_eq!(f[26..28], [198, 18], "a spoofed source");
        assert_eq!(f[30..34], VIP.octets(), "to the VIP");
        let proto = f[23];
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, proto, 0, (FRAME_LEN - 34) as u8]);
        pseudo.extend_from_slice(&f[34..]);
        let kind = match proto {
            6 => {
                assert_eq!(checksum(&pseudo, 0), 0, "TCP checksum");
                if f[47] & 0x02 != 0 { "syn" } else { "ack" }
            }
            17 => {
                assert_eq!(f[40..42], [0, 0], "no UDP checksum");
                "udp"
            }
            p => bail!("protocol {p}"),
        };
        kinds.push(kind);
        sources.insert(f[26..36].to_vec());
    }
    assert_eq!(kinds, ["syn", "ack", "udp", "syn", "ack", "udp"]);
    assert_eq!(sources.len(), 6, "a new source every frame");
    Ok(())
}
