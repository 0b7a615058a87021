//! Running frames through the verified program with `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions, Xdp};

/// What the program did with one frame.
#[derive(Debug)]
pub struct Ran {
    /// The XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The kernel's measurement of this run.
    pub duration: Duration,
}

/// XDP actions, for readable assertions.
pub mod action {
    /// Dropped.
    pub const DROP: u32 = 1;
    /// Passed to the kernel.
    pub const PASS: u32 = 2;
    /// Sent back out of the receiving interface.
    pub const TX: u32 = 3;
    /// Redirected.
    pub const REDIRECT: u32 = 4;
}

/// Runs `frame` once through `program` as if it arrived on `ingress_ifindex` (an interface
/// of the calling thread's network namespace).
pub fn run_frame(program: &Xdp, frame: &[u8], ingress_ifindex: u32) -> anyhow::Result<Ran> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ingress_ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(Ran {
        action: result.return_value,
        frame: out,
        duration: result.duration,
    })
}

/// Pins the calling thread to one CPU. The flow cache is per CPU, so a thread running
/// frames through the program must stay on one CPU for one call to see what the last
/// left (and a fixture can move it on purpose to show what another CPU sees).
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: no arguments; returns -1 only where the kernel lacks getcpu.
    usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0)
}
