//! Top talkers: 1 in `TALKER_SAMPLE` forwarded packets counted per client prefix and
//! backend slot (see `fulcrum_common::talkers`). Off (0, the default), the verifier
//! prunes it; on, a sampled-out packet costs a few instructions on the backend's packet
//! count (a helper call for a random number cost 20 ns here, half an established packet).

use fulcrum_common::{
    FLOW_FAMILY_IPV4, FlowKey, FlowKey6, mix32,
    talkers::{FAMILY_IPV4, FAMILY_IPV6, TalkerCounts, TalkerKey},
};

use crate::{flow::Family, maps::TOP_TALKERS};

/// 1 in N packets counted; 0 off. The loader overwrites it before verification.
#[unsafe(no_mangle)]
static TALKER_SAMPLE: u32 = 0;

/// IPv4 prefix mask, network order; set by the loader.
#[unsafe(no_mangle)]
static TALKER_MASK4: u32 = 0;

/// IPv6 prefix mask, network order words; set by the loader.
#[unsafe(no_mangle)]
static TALKER_MASK6: [u32; 4] = [0; 4];

/// Counts a forwarded packet of `flow` for `backend_slot`, if sampled: 1 in
/// `TALKER_SAMPLE` of the packets the backend forwards on this CPU, picked by `seen`
/// (its count so far) through a bijective mix, so that sources sending in round robin
/// are not sampled in step with their period. `new_flow` is 1 when the flow was chosen
/// rather than found pinned.
#[inline(always)]
pub fn count<F: Family>(flow: &F::Key, backend_slot: u32, new_flow: u64, seen: u64) {
    // SAFETY: a global the loader sets; volatile so it is not folded at compile time.
    let sample = unsafe { core::ptr::read_volatile(&TALKER_SAMPLE) };
    if sample == 0 {
        return;
    }
    if sample > 1 && !mix32(seen as u32).is_multiple_of(sample) {
        return;
    }
    let mut key = TalkerKey {
        backend_slot,
        ..TalkerKey::default()
    };
    if F::EVENT_FAMILY == FLOW_FAMILY_IPV4 {
        // SAFETY: the IPv4 family's key is a FlowKey.
        let k = unsafe { &*(flow as *const F::Key as *const FlowKey) };
        key.family = FAMILY_IPV4;
        // SAFETY: as above.
        key.prefix[0] = k.src & unsafe { core::ptr::read_volatile(&TALKER_MASK4) };
    } else {
        // SAFETY: the IPv6 family's key is a FlowKey6.
        let k = unsafe { &*(flow as *const F::Key as *const FlowKey6) };
        // SAFETY: as above.
        let m = unsafe { core::ptr::read_volatile(&TALKER_MASK6) };
        key.family = FAMILY_IPV6;
        key.prefix = [
            k.src[0] & m[0],
            k.src[1] & m[1],
            k.src[2] & m[2],
            k.src[3] & m[3],
        ];
    }
    match TOP_TALKERS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; only this CPU writes it while the program runs.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).new_flows += new_flow;
        },
        None => {
            let first = TalkerCounts {
                packets: 1,
                new_flows: new_flow,
            };
            // Full or raced: the LRU evicts, and a lost sample is only a sample.
            let _ = TOP_TALKERS.insert(key, first, 0);
        }
    }
}
