//! A namespace holding the balancer and the baselines, each attached to its own veth, for
//! per-packet measurements with BPF_PROG_TEST_RUN (BENCHMARKING.md: attach every
//! program you compare, repeat = 1, interleave, pin the CPU).

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Context as _;
use aya::{Ebpf, programs::Xdp};
use fulcrum::{AttachMode, Balancer, BalancerBuilder, Destination, Protocol, Service, ServiceId};
use fulcrum_lab::{
    netns::{NetNs, NsGuard, unique_prefix},
    testrun::run_frame,
};

use crate::object;

/// The VIP of the bench services (service `i` uses VIP + i).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 1);

/// Backend `n` (1-based) on the balancer's subnet.
pub fn backend(n: u16) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 88, 0, 0)) + 10 + u32::from(n))
}

/// The balancer on `fx0`, `bench_pass` on `fp0`, `bench_macswap` on `fm0`, inside a
/// namespace the calling thread stays in until this drops.
pub struct DataPlane {
    pub lb: Balancer,
    pub fx0: u32,
    pub fp0: u32,
    pub fm0: u32,
    pass: Ebpf,
    macswap: Ebpf,
    _guard: NsGuard,
    _ns: NetNs,
}

impl DataPlane {
    /// `services` TCP services on port 80 (VIP, VIP+1, ...) with `backends` destinations each.
    pub fn new(builder: BalancerBuilder, services: u16, backends: u16) -> anyhow::Result<Self> {
        let ns = NetNs::create(&format!("{}-dp", unique_prefix("b")))?;
        for (a, b) in [("fx0", "fx1"), ("fp0", "fp1"), ("fm0", "fm1")] {
            ns.ip(&["link", "add", "name", a, "type", "veth", "peer", "name", b])?;
            ns.ip(&["link", "set", a, "up"])?;
            ns.ip(&["link", "set", b, "up"])?;
        }
        ns.ip(&["addr", "add", "10.88.0.1/16", "dev", "fx0"])?;
        let batch: String = (1..=backends)
            .map(|n| {
                let [_, _, hi, lo] = backend(n).octets();
                format!(
                    "neigh replace {} lladdr 02:be:00:00:{hi:02x}:{lo:02x} dev fx0 nud permanent\n",
                    backend(n)
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!("{}.neigh", ns.name()));
        std::fs::write(&path, batch)?;
        let added = ns.ip(&["-batch", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        added?;

        let guard = ns.enter()?;
        let mut lb = builder.build().context("loading the balancer")?;
        lb.attach("fx0", AttachMode::Native)?;
        let dests: Vec<_> = (1..=backends)
            .map(|n| Destination::new(backend(n)))
            .collect();
        for i in 0..services {
            let id = service(i);
            lb.add_service(Service::new(id))?;
            lb.set_destinations(&id, &dests)?;
        }
        let pass = object::attach("bench_pass", "fp0")?;
        let macswap = object::attach("bench_macswap", "fm0")?;
        Ok(Self {
            lb,
            fx0: ifindex("fx0")?,
            fp0: ifindex("fp0")?,
            fm0: ifindex("fm0")?,
            pass,
            macswap,
            _guard: guard,
            _ns: ns,
        })
    }

    /// Enters this data plane's namespace until the guard drops: test runs resolve the
    /// ingress interface there, so several data planes measured in the same rounds take
    /// turns. Drop data planes in the reverse order of their creation.
    pub fn enter(&self) -> anyhow::Result<NsGuard> {
        self._ns.enter()
    }

    /// The balancer program.
    pub fn balancer(&self) -> anyhow::Result<&Xdp> {
        Ok(self.lb.program()?)
    }

    /// The XDP_PASS baseline.
    pub fn pass(&self) -> anyhow::Result<&Xdp> {
        object::program(&self.pass, "bench_pass")
    }

    /// The MAC-swap XDP_TX baseline.
    pub fn macswap(&self) -> anyhow::Result<&Xdp> {
        object::program(&self.macswap, "bench_macswap")
    }
}

/// The `i`th bench service.
pub fn service(i: u16) -> ServiceId {
    ServiceId::new(service_vip(i), 80, Protocol::Tcp)
}

/// The `i`th bench service's VIP.
pub fn service_vip(i: u16) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(VIP) + u32::from(i))
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => anyhow::bail!("no interface {name}"),
        i => Ok(i),
    }
}

/// Mean kernel-reported ns per call over `frames`, cycling through them `calls` times.
pub fn mean_ns(
    program: &Xdp,
    frames: &[Vec<u8>],
    ingress: u32,
    calls: usize,
) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for i in 0..calls {
        let frame = &frames[i % frames.len()];
        total += run_frame(program, frame, ingress)?.duration;
    }
    Ok(total.as_nanos() as f64 / calls as f64)
}

/// Median and spread (max − min) of per-round means.
pub fn median_spread(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let spread = values.last().copied().unwrap_or(0.0) - values.first().copied().unwrap_or(0.0);
    (median, spread)
}
