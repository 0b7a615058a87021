//! The benchmark-only XDP object and CPU pinning.

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};

/// The compiled benchmark programs (`fulcrum-bench-ebpf`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum-bench"));

/// Loads one program of the bench object and attaches it natively to `iface` (in the
/// calling thread's network namespace). Keep the returned `Ebpf`: dropping it detaches.
pub fn attach(program: &str, iface: &str) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(OBJECT).context("loading the bench object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .with_context(|| format!("no program {program}"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifying {program}"))?;
    prog.attach(iface, XdpMode::Driver)
        .with_context(|| format!("attaching {program} to {iface}"))?;
    Ok(ebpf)
}

/// The program `name` of a loaded bench object.
pub fn program<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

/// Pins the calling thread to one CPU, so per-CPU maps behave as in production.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    fulcrum_lab::testrun::pin_to_cpu(cpu).context("sched_setaffinity")
}
