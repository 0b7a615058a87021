//! Programs only benchmarks load. Baselines are measured in the same run as the balancer.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// The floor: returns `XDP_PASS` and touches nothing.
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The minimal forwarder: swaps source and destination MAC and sends the frame back.
#[xdp]
pub fn bench_macswap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 bytes are inside the frame, checked above.
    unsafe {
        let mut macs = *eth;
        macs.rotate_left(6);
        *eth = macs;
    }
    xdp_action::XDP_TX
}

/// Length of every frame the end-to-end generator sends.
const GEN_FRAME_LEN: usize = 64;
/// Offset of the TCP source port in the template (Ethernet, IPv4 without options, TCP).
const GEN_SPORT_OFFSET: usize = 14 + 20;
/// Offset of the TCP checksum in the template.
const GEN_TCP_CSUM_OFFSET: usize = 14 + 20 + 16;
/// Templates, indexed by the interface the generator sends into (ifindex < this).
const GEN_TEMPLATES: u32 = 64;
/// Slots of the end-to-end counter: indexed by the low 4 bits of the destination MAC.
const COUNT_SLOTS: u32 = 16;

/// What user space gives the end-to-end generator (same layout as in `e2e.rs`).
#[repr(C)]
pub struct GenTemplate {
    /// The frame, as 8-byte words; its TCP source port is 0 and its checksum computed so.
    pub frame: [u64; GEN_FRAME_LEN / 8],
    /// Distinct source ports each CPU cycles through (0 sends nothing).
    pub flows: u32,
    /// The first source port; CPU `c` uses `base + c * flows ..`.
    pub port_base: u32,
}

/// The generator's templates, one per interface it sends into (index = ifindex), written
/// by user space.
#[map]
static E2E_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(GEN_TEMPLATES, 0);

/// Frames each CPU has generated (so also the sequence that picks the source port).
#[map]
static E2E_SENT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Frames that arrived at the far end, by the low 4 bits of their destination MAC.
#[map]
static E2E_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_SLOTS, 0);

/// The end-to-end traffic generator, run with `BPF_PROG_TEST_RUN` in live-frames mode.
/// Live frames are reused without being restored, so every run rewrites the whole frame
/// from the template of its "ingress" interface, then sets a per-CPU cycling source port
/// (fixing the TCP checksum) and returns `XDP_TX`: the kernel transmits the frame out of
/// that interface.
#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + GEN_FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let Some(template) = E2E_TEMPLATE.get(ctx.ingress_ifindex() as u32) else {
        return xdp_action::XDP_ABORTED;
    };
    let flows = template.flows;
    if flows == 0 {
        return xdp_action::XDP_DROP;
    }
    let Some(sent) = E2E_SENT.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot of a per-CPU map; nothing else writes it during this run.
    let seq = unsafe {
        let seq = *sent;
        *sent = seq.wrapping_add(1);
        seq
    };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let port = template
        .port_base
        .wrapping_add(cpu.wrapping_mul(flows))
        .wrapping_add(seq % flows) as u16;
    // SAFETY: the frame holds GEN_FRAME_LEN bytes (checked above) and starts at an
    // 8-byte aligned offset (XDP headroom) of its page.
    unsafe {
        // Word by word: a plain array copy becomes a byte-wise memmove subprogram call.
        let words = start as *mut u64;
        for (i, word) in template.frame.iter().enumerate() {
            core::ptr::write_volatile(words.add(i), *word);
        }
        let csum = (start + GEN_TCP_CSUM_OFFSET) as *mut [u8; 2];
        let old = u16::from_be_bytes(*csum);
        // The template's port is 0, so the incremental update only adds the new port.
        let mut sum = u32::from(!old) + u32::from(port);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        *csum = (!(sum as u16)).to_be_bytes();
        *((start + GEN_SPORT_OFFSET) as *mut [u8; 2]) = port.to_be_bytes();
    }
    xdp_action::XDP_TX
}

/// The far end's counter: counts each frame by the low 4 bits of its destination MAC
/// (which backend the forwarder chose) and drops it.
#[xdp]
pub fn bench_count(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 6 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: byte 5 is inside the frame, checked above.
    let last = unsafe { *((start + 5) as *const u8) };
    if let Some(count) = E2E_COUNTS.get_ptr_mut(u32::from(last) % COUNT_SLOTS) {
        // SAFETY: this CPU's slot of a per-CPU map.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

/// Frame kinds of the flood generator: a SYN, an ACK (TCP) and a UDP datagram.
const FLOOD_KINDS: u32 = 3;
/// Offset of the IPv4 header checksum.
const FLOOD_IP_CSUM_OFFSET: usize = 14 + 10;
/// Offset of the low 16 bits of the IPv4 source address.
const FLOOD_SADDR_LO_OFFSET: usize = 14 + 14;

/// One frame kind of the flood generator (same layout as in the flood lab): its source
/// address ends in 0.0 and its source port is 0, checksums computed so.
#[repr(C)]
pub struct FloodTemplate {
    /// The frame, as 8-byte words.
    pub frame: [u64; GEN_FRAME_LEN / 8],
    /// 1 for TCP (its checksum covers the changed address and port), 0 for UDP (checksum 0).
    pub tcp: u32,
    /// 0 sends nothing: a kind user space has not written.
    pub enabled: u32,
}

/// The flood's frame kinds, indexed by kind, written by user space.
#[map]
static FLOOD_TEMPLATE: Array<FloodTemplate> = Array::with_max_entries(FLOOD_KINDS, 0);

/// Frames each CPU has generated in the flood.
#[map]
static FLOOD_SENT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Folds a one's-complement sum into 16 bits.
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The spoofed-flood generator, run like `bench_gen` with live frames: every frame is a
/// new flow from a new source (address low 16 bits and port from a per-CPU sequence,
/// the CPU in the top bits), cycling SYN, ACK and UDP.
#[xdp]
pub fn bench_flood(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + GEN_FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let Some(sent) = FLOOD_SENT.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot of a per-CPU map; nothing else writes it during this run.
    let seq = unsafe {
        let seq = *sent;
        *sent = seq.wrapping_add(1);
        seq
    };
    let Some(template) = FLOOD_TEMPLATE.get(seq % FLOOD_KINDS) else {
        return xdp_action::XDP_ABORTED;
    };
    if template.enabled == 0 {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // 2^24 flows per CPU before a source repeats.
    let n = (cpu << 24) | (seq & 0x00ff_ffff);
    let addr_lo = (n >> 16) as u16;
    let port = n as u16;
    // SAFETY: the frame holds GEN_FRAME_LEN bytes (checked above) and starts at an
    // 8-byte aligned offset (XDP headroom) of its page.
    unsafe {
        let words = start as *mut u64;
        for (i, word) in template.frame.iter().enumerate() {
            core::ptr::write_volatile(words.add(i), *word);
        }
        // The template's address ends in 0.0 and its port is 0: the updates only add.
        let ip = (start + FLOOD_IP_CSUM_OFFSET) as *mut [u8; 2];
        let old = u16::from_be_bytes(*ip);
        *ip = (!fold(u32::from(!old) + u32::from(addr_lo))).to_be_bytes();
        *((start + FLOOD_SADDR_LO_OFFSET) as *mut [u8; 2]) = addr_lo.to_be_bytes();
        if template.tcp != 0 {
            let l4 = (start + GEN_TCP_CSUM_OFFSET) as *mut [u8; 2];
            let old = u16::from_be_bytes(*l4);
            let sum = u32::from(!old) + u32::from(addr_lo) + u32::from(port);
            *l4 = (!fold(sum)).to_be_bytes();
        }
        *((start + GEN_SPORT_OFFSET) as *mut [u8; 2]) = port.to_be_bytes();
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
