//! Programs only benchmarks load. Baselines are measured in the same run as the balancer.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
