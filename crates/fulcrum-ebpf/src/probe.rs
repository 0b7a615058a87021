//! The probe program, on the egress of the balancer's interfaces: packets whose socket
//! mark is a probe mark (`fulcrum_common::probe`) are health probes to a VIP; each is
//! encapsulated to the backend its mark names, with the outer headers the data plane
//! writes (`forward::ipip::outer4`/`outer6`, `forward::gue::header`), and redirected to
//! the backend's egress. Every other packet leaves untouched.
//!
//! The kernel's helpers grow the packet (`bpf_skb_adjust_room` with the encapsulation
//! flags), so checksum and segmentation offloads of the inner packet stay correct.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        TC_ACT_OK, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::{bpf_get_hash_recalc, bpf_redirect, bpf_skb_vlan_push},
    programs::TcContext,
};
use fulcrum_common::{
    BACKEND_V_TUNNEL6, BACKEND_V_VLAN, BackendValue, FORWARD_GUE, FORWARD_IPIP, IPPROTO_UDP,
    probe::{PROBE_MARK, PROBE_MARK_MASK, ProbeCounters},
};
use fulcrum_ebpf::header::{ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, Eth, IPPROTO_IPIP, IPPROTO_IPV6};

use crate::{
    forward::{gue, ipip},
    maps::{PROBE_STATS, PROBES},
};

const ETH_LEN: usize = size_of::<Eth>();

/// Why a marked packet was dropped.
enum Dropped {
    NoPath,
    Failed,
}

/// Encapsulates a marked packet to its backend; leaves others alone.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    // SAFETY: the context's skb is valid for the whole call.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & PROBE_MARK_MASK != PROBE_MARK {
        return TC_ACT_OK;
    }
    let outcome = send(ctx, mark);
    if let Some(c) = PROBE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let c: &mut ProbeCounters = unsafe { &mut *c };
        match outcome {
            Ok(_) => c.sent += 1,
            Err(Dropped::NoPath) => c.no_path += 1,
            Err(Dropped::Failed) => c.failed += 1,
        }
    }
    outcome.unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn send(ctx: &TcContext, mark: u32) -> Result<i32, Dropped> {
    // SAFETY: a lookup; the value is only read.
    let b: &BackendValue = unsafe { PROBES.get(mark) }.ok_or(Dropped::NoPath)?;
    if b.ifindex == 0 || (b.mode != FORWARD_IPIP && b.mode != FORWARD_GUE) {
        return Err(Dropped::NoPath);
    }
    // SAFETY: as above.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let (inner_v6, tos) = match protocol {
        ETH_P_IP => (
            false,
            ctx.load::<[u8; 2]>(ETH_LEN).map_err(|_| Dropped::Failed)?[1],
        ),
        ETH_P_IPV6 => {
            let [b0, b1] = ctx.load::<[u8; 2]>(ETH_LEN).map_err(|_| Dropped::Failed)?;
            (true, (b0 << 4) | (b1 >> 4))
        }
        _ => return Err(Dropped::Failed),
    };
    let inner_len = (ctx.len() as usize).saturating_sub(ETH_LEN) as u16;
    // SAFETY: as above.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let gue = b.mode == FORWARD_GUE;
    let (udp_len, proto) = match (gue, inner_v6) {
        (true, _) => (gue::UDP_LEN, IPPROTO_UDP),
        (false, true) => (0, IPPROTO_IPV6),
        (false, false) => (0, IPPROTO_IPIP),
    };
    let payload = inner_len + udp_len;
    let v6_out = b.flags & BACKEND_V_TUNNEL6 != 0;
    let mut flags = if v6_out {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
    } else {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    };
    if gue {
        flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
    }
    let ip_len = ipip::outer_ip_len(b);
    ctx.adjust_room(
        i32::from(ip_len + udp_len),
        BPF_ADJ_ROOM_MAC,
        u64::from(flags),
    )
    .map_err(|_| Dropped::Failed)?;
    let stored = if v6_out {
        ctx.store(ETH_LEN, &ipip::outer6(b, hash, tos, payload, proto), 0)
    } else {
        ctx.store(ETH_LEN, &ipip::outer4(b, hash, tos, payload, proto), 0)
    };
    stored.map_err(|_| Dropped::Failed)?;
    if gue {
        let udp = gue::header(b, hash, inner_len);
        ctx.store(ETH_LEN + usize::from(ip_len), &udp, 0)
            .map_err(|_| Dropped::Failed)?;
    }
    let ether_type = if v6_out { ETH_P_IPV6 } else { ETH_P_IP };
    let eth = Eth {
        // SAFETY: `mac` then `src_mac` are the 12 bytes of the two addresses.
        macs: unsafe { *(&raw const b.mac).cast::<[u16; 6]>() },
        ether_type: ether_type.to_be(),
    };
    ctx.store(0, &eth, 0).map_err(|_| Dropped::Failed)?;
    if b.flags & BACKEND_V_VLAN != 0 {
        // SAFETY: the helper only needs the program's skb.
        let ret =
            unsafe { bpf_skb_vlan_push(ctx.skb.skb, ETH_P_8021Q.to_be(), u16::from_be(b.vlan)) };
        if ret != 0 {
            return Err(Dropped::Failed);
        }
    }
    // Encapsulated once: a redirect passes this hook again.
    ctx.set_mark(0);
    // SAFETY: as above.
    if b.ifindex == unsafe { (*ctx.skb.skb).ifindex } {
        return Ok(TC_ACT_OK);
    }
    // SAFETY: the helper only needs a device index.
    Ok(unsafe { bpf_redirect(b.ifindex, 0) } as i32)
}
