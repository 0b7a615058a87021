//! Fulcrum's XDP program: steer packets for virtual services to backends.
//!
//! Rules, in the order they apply (each is a counter, see `fulcrum_common::Counter`):
//! what cannot be VIP traffic (short frames, neither IPv4 nor IPv6, unreadable IP headers,
//! other destinations, ICMPv6 neighbour discovery) passes to the kernel untouched; VIP
//! traffic that is malformed or unsupported (bad header, length beyond the frame,
//! fragments, IPv4 options, IPv6 extension headers beyond the rule in `parse`, a TCP/UDP
//! header cut short, a TCP data offset below 5, a UDP length below 8) is dropped; ICMP to
//! a VIP goes to `icmp_to_vip`; VIP traffic with no service for its port passes; a
//! service with no usable backend drops; everything else is forwarded to a usable
//! backend by its mode (`forward`). `crates/fulcrum-lab/tests/fuzz` holds the program to
//! these rules.
#![no_std]
#![no_main]
// BPF without ALU32 has 64-bit atomic adds but no `AtomicU64::fetch_add`; the intrinsic
// compiles to one `lock xadd` (BPF_ATOMIC | BPF_ADD).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod choose;
mod counters;
mod csum;
mod flow;
mod flow_events;
mod forward;
mod icmp;
mod maps;
mod parse;
mod probe;
mod talkers;
mod verdict;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use fulcrum_common::{Counter, IPPROTO_UDP, VipInfo, vip_filter_bucket, vip_filter_bucket6};
use fulcrum_ebpf::header::{ETH_P_IP, ETH_P_IPV6, Ipv4, Ipv6, frame_len, ptr_at};

use flow::{Chosen, Family, Fresh, Pinned, Slot, V4, V6};
use maps::VIP_FILTER;
use parse::{L2, L4, Packet};
use verdict::Verdict;

#[xdp]
pub fn fulcrum(ctx: XdpContext) -> u32 {
    counters::finish(balance(&ctx))
}

/// Health probes through the tunnel (see `probe`), on the egress of the balancer's
/// interfaces.
#[classifier]
pub fn fulcrum_probe(ctx: TcContext) -> i32 {
    probe::egress(&ctx)
}

/// Lets a veth accept frames its peer sends with `XDP_TX` (labs put it on the far end).
#[xdp]
pub fn fulcrum_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Verdict {
    let l2 = match parse::l2(ctx) {
        Ok(l2) => l2,
        Err(v) => return v,
    };
    if l2.ether_type == ETH_P_IP.to_be() {
        balance4(ctx, &l2)
    } else if l2.ether_type == ETH_P_IPV6.to_be() {
        balance6(ctx, &l2)
    } else {
        Verdict::Pass(Counter::PassNotIp)
    }
}

#[inline(always)]
fn balance4(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4>(ctx, l2.l3) else {
        return Verdict::Pass(Counter::PassMalformedIp);
    };
    // SAFETY: bounds checked by ptr_at.
    let dst = unsafe { (*ip).dst };
    if !may_be_vip(vip_filter_bucket(dst)) {
        return Verdict::Pass(Counter::PassNotVip);
    }
    balance_ip::<V4>(ctx, parse::ipv4(ctx, ip, l2), &dst)
}

#[inline(always)]
fn balance6(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = ptr_at::<Ipv6>(ctx, l2.l3) else {
        return Verdict::Pass(Counter::PassMalformedIp);
    };
    // SAFETY: bounds checked by ptr_at.
    let dst = unsafe { (*ip).dst };
    if !may_be_vip(vip_filter_bucket6(&dst)) {
        return Verdict::Pass(Counter::PassNotVip);
    }
    balance_ip::<V6>(ctx, parse::ipv6(ctx, ip, l2), &dst)
}

/// One array read that keeps traffic for addresses in VIP-free buckets off every hash
/// lookup.
#[inline(always)]
fn may_be_vip(bucket: u32) -> bool {
    VIP_FILTER.get(bucket).is_some_and(|n| *n != 0)
}

/// A parsed packet whose address bucket holds a VIP.
#[inline(always)]
fn balance_ip<F: icmp::IcmpFamily>(
    ctx: &XdpContext,
    parsed: Result<L4<F::Key>, Verdict>,
    dst: &F::Addr,
) -> Verdict {
    let pkt = match parsed {
        Ok(L4::Flow(pkt)) => pkt,
        Ok(L4::Icmp(pkt)) => {
            return match F::vip(dst) {
                // SAFETY: a map value; plain data.
                Some(info) => icmp_to_vip::<F>(ctx, &pkt, unsafe { &*info }),
                None => Verdict::Pass(Counter::PassNotVip),
            };
        }
        Err(v) => return confirm_vip::<F>(dst, v),
    };
    let flow = &pkt.flow;
    let slot = Slot::<F>::of(flow);
    let proto = F::proto(flow);
    // Established flows: this CPU's cache, else the flow table; no service lookup.
    let (mut fresh, mut reason) = if pkt.syn {
        (Fresh::Syn, Counter::FlowNewSyn)
    } else if proto == IPPROTO_UDP {
        (Fresh::Miss, Counter::FlowNewUdp)
    } else {
        (Fresh::Miss, Counter::FlowMissNonSyn)
    };
    if !pkt.syn {
        match flow::pinned::<F>(flow, &slot) {
            Pinned::Hit(chosen) => return forward::<F>(ctx, &pkt, chosen),
            Pinned::Stale => (fresh, reason) = (Fresh::Stale, Counter::FlowStale),
            // Unproven on this CPU: maybe proven by this packet on another.
            Pinned::Miss => {
                if let Some(chosen) = flow::pending_elsewhere::<F>(flow, &slot) {
                    return forward::<F>(ctx, &pkt, chosen);
                }
            }
        }
    }
    let Some(service) = F::service(flow) else {
        return confirm_vip::<F>(dst, Verdict::Pass(Counter::PassNoService));
    };
    match choose::choose::<F>(flow, fresh, &service, &slot, reason) {
        Ok(chosen) => forward::<F>(ctx, &pkt, chosen),
        Err(v) => v,
    }
}

/// A verdict reached for a packet whose address bucket holds a VIP: only packets for a
/// VIP keep it, others pass untouched.
#[inline(always)]
fn confirm_vip<F: Family>(dst: &F::Addr, verdict: Verdict) -> Verdict {
    if F::vip(dst).is_none() {
        return Verdict::Pass(Counter::PassNotVip);
    }
    verdict
}

/// ICMP (ICMPv6 other than ND) to a VIP: echo answered, errors about a flow forwarded to
/// its backend, the rest passed (see `icmp`).
#[inline(always)]
fn icmp_to_vip<F: icmp::IcmpFamily>(
    ctx: &XdpContext,
    pkt: &Packet<F::Key>,
    vip: &VipInfo,
) -> Verdict {
    icmp::handle::<F>(ctx, pkt, vip)
}

/// Counts the backend's traffic and sends the packet by the backend's mode.
#[inline(always)]
fn forward<F: Family>(ctx: &XdpContext, pkt: &Packet<F::Key>, chosen: Chosen) -> Verdict {
    // SAFETY: an entry of BACKENDS (array values stay put); plain data.
    let b = unsafe { &*chosen.backend };
    let new_flow = !matches!(chosen.reason, Counter::FlowHit) as u64;
    let seen = counters::traffic(chosen.backend_slot, frame_len(ctx) as u64, new_flow);
    talkers::count::<F>(&pkt.flow, chosen.backend_slot, new_flow, seen);
    let hash = if forward::needs_hash(b) {
        F::hash(&pkt.flow, false)
    } else {
        0
    };
    forward::send(ctx, pkt, b, hash, chosen.reason)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
