//! The generator and the counter: the generator's template and threads, and both maps.

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use fulcrum_lab::{frame::FrameBuilder, netns::NetNs};

use super::{
    BATCH, CLIENT, COUNT_SLOTS, FRAME_LEN, FRAMES_PER_CALL, PORT, PORT_BASE, TEMPLATES, VIP,
    lab::{Path, STOP},
};
use crate::object;

/// The generator's template; same layout as `GenTemplate` in `fulcrum-bench-ebpf`.
#[repr(C)]
#[derive(Clone, Copy)]
struct GenTemplate {
    frame: [u64; FRAME_LEN / 8],
    flows: u32,
    port_base: u32,
}

// SAFETY: plain integers, no padding (64 + 4 + 4 bytes).
unsafe impl aya::Pod for GenTemplate {}

/// One generator thread, pinned to `cpu`: sends into the `genN` of the path `phase`
/// names, until `phase` is `STOP`.
pub(super) fn generate(
    ns: &NetNs,
    program: &Xdp,
    ingress: &[u32],
    cpu: usize,
    phase: &AtomicUsize,
) -> anyhow::Result<()> {
    let result = (|| {
        let _guard = ns.enter()?;
        object::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
        let frame = [0u8; FRAME_LEN];
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let ctx: Vec<Vec<u8>> = ingress
            .iter()
            .map(|ifindex| {
                [0, FRAME_LEN as u32, 0, *ifindex, 0, 0]
                    .iter()
                    .flat_map(|v| v.to_ne_bytes())
                    .collect()
            })
            .collect();
        loop {
            let Some(ctx) = ctx.get(phase.load(Ordering::Relaxed)) else {
                return Ok(());
            };
            program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(ctx),
                    repeat: FRAMES_PER_CALL,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::default()
                })
                .context("BPF_PROG_TEST_RUN with live frames")?;
        }
    })();
    if result.is_err() {
        // Stop the others; the schedule then sees nothing delivered and stops too.
        phase.store(STOP, Ordering::Relaxed);
    }
    result
}

/// Writes the generator's template for frames sent into `ifindex`: a 64-byte TCP ACK
/// from CLIENT:0 to VIP:80, from the path's `genN` to its `lbN`.
pub(super) fn write_template(
    generator: &mut Ebpf,
    ifindex: u32,
    path: &Path,
) -> anyhow::Result<()> {
    if ifindex >= TEMPLATES {
        bail!("ifindex {ifindex} is beyond the generator's {TEMPLATES} templates");
    }
    let bytes = FrameBuilder::tcp(SocketAddrV4::new(CLIENT, 0), SocketAddrV4::new(VIP, PORT))
        .macs(path.lb_mac, path.gen_mac)
        .payload(&[0; FRAME_LEN - 54])
        .build();
    if bytes.len() != FRAME_LEN {
        bail!("template is {} bytes, not {FRAME_LEN}", bytes.len());
    }
    let mut frame = [0u64; FRAME_LEN / 8];
    for (word, chunk) in frame.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    let template = GenTemplate {
        frame,
        flows: path.flows,
        port_base: PORT_BASE,
    };
    let mut map: Array<&mut MapData, GenTemplate> = generator
        .map_mut("E2E_TEMPLATE")
        .context("no map E2E_TEMPLATE")?
        .try_into()?;
    map.set(ifindex, template, 0)
        .context("writing the generator's template")?;
    Ok(())
}

pub(super) fn per_cpu<'a, T: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &str,
) -> anyhow::Result<PerCpuArray<&'a MapData, T>> {
    Ok(ebpf
        .map(name)
        .with_context(|| format!("no map {name}"))?
        .try_into()?)
}

/// Every counter slot, summed over CPUs.
pub(super) fn read_slots(map: &PerCpuArray<&MapData, u64>) -> anyhow::Result<Vec<u64>> {
    (0..COUNT_SLOTS)
        .map(|i| Ok(map.get(&i, 0).context("reading E2E_COUNTS")?.iter().sum()))
        .collect()
}

/// Frames each CPU has generated so far (a wrapping count).
pub(super) fn read_sent(map: &PerCpuArray<&MapData, u32>) -> anyhow::Result<Vec<u32>> {
    Ok(map
        .get(&0, 0)
        .context("reading E2E_SENT")?
        .iter()
        .copied()
        .collect())
}

/// Frames generated between two `read_sent`s, over all CPUs.
pub(super) fn sent_between(before: &[u32], after: &[u32]) -> u64 {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| u64::from(a.wrapping_sub(*b)))
        .sum()
}

#[cfg(test)]
mod tests {
    use fulcrum_lab::frame::checksum;

    use super::*;
    use crate::{
        e2e::{
            FLOWS_PER_CPU, GEN_THREADS,
            lab::{FULCRUM, PATHS},
        },
        object::OBJECT,
    };

    /// The generator's frames are the template with a cycling source port, and both
    /// checksums stay valid. Needs root (loads the program).
    #[test]
    fn generator_frames_are_valid() -> anyhow::Result<()> {
        let mut generator = Ebpf::load(OBJECT)?;
        let prog: &mut Xdp = generator
            .program_mut("bench_gen")
            .context("no bench_gen")?
            .try_into()?;
        prog.load()?;
        // Frames "arrive" on lo (ifindex 1) in the test's namespace.
        write_template(&mut generator, 1, &PATHS[FULCRUM])?;
        let template =
            FrameBuilder::tcp(SocketAddrV4::new(CLIENT, 0), SocketAddrV4::new(VIP, PORT))
                .macs(PATHS[FULCRUM].lb_mac, PATHS[FULCRUM].gen_mac)
                .payload(&[0; FRAME_LEN - 54])
                .build();
        let program = object::program(&generator, "bench_gen")?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            // Stale bytes, as a reused live frame would hold.
            let ran = fulcrum_lab::testrun::run_frame(program, &[0xa5; FRAME_LEN], 1)?;
            assert_eq!(ran.action, fulcrum_lab::testrun::action::TX);
            let f = ran.frame;
            assert_eq!(f.len(), FRAME_LEN);
            assert_eq!(f[..34], template[..34], "Ethernet and IPv4 as the template");
            assert_eq!(f[36..50], template[36..50], "TCP header as the template");
            assert_eq!(f[52..], template[52..], "payload as the template");
            assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 checksum");
            let mut pseudo = f[26..34].to_vec();
            pseudo.extend_from_slice(&[0, 6, 0, (FRAME_LEN - 34) as u8]);
            pseudo.extend_from_slice(&f[34..]);
            assert_eq!(checksum(&pseudo, 0), 0, "TCP checksum");
            ports.push(u16::from_be_bytes([f[34], f[35]]));
        }
        let range = PORT_BASE..PORT_BASE + GEN_THREADS as u32 * FLOWS_PER_CPU;
        assert!(
            ports.iter().all(|p| range.contains(&u32::from(*p))),
            "{ports:?}"
        );
        assert!(
            ports.windows(2).all(|w| w[1] == w[0] + 1),
            "cycling: {ports:?}"
        );
        Ok(())
    }
}
