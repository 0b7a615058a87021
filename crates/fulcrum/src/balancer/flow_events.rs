//! The data plane's ring of new and changed flows, read out for flow sharing.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::maps::{MapData, RingBuf};
use fulcrum_common::{FlowEvent, maps};

use super::Balancer;
use crate::BalancerError;

/// Bytes of the event ring while sharing is on: 131 072 events of 32 bytes (with the
/// kernel's header), a second of a million new flows a second, well beyond what a
/// reader woken by each batch falls behind.
const RING_BYTES: u32 = 1 << 22;

/// Size of the event ring: the smallest the kernel takes (a page) while sharing is off.
pub(super) fn ring_bytes(share_flows: bool) -> u32 {
    if share_flows {
        return RING_BYTES;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).unwrap_or(4096)
}

/// Flows the data plane pinned or re-pinned since the last [`FlowEvents::drain`], in
/// the order it wrote them. Readable (poll, `tokio::io::unix::AsyncFd`) when events wait.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
}

impl FlowEvents {
    /// Appends the waiting events to `out`, at most a full ring's worth per call, so a
    /// reader is never held here by a data plane that writes as fast as it reads.
    pub fn drain(&mut self, out: &mut Vec<FlowEvent>) {
        let most = RING_BYTES as usize / 32;
        for _ in 0..most {
            let Some(item) = self.ring.next() else {
                return;
            };
            if item.len() >= size_of::<FlowEvent>() {
                // SAFETY: the program writes whole FlowEvents; any bytes are a valid one.
                out.push(unsafe { item.as_ptr().cast::<FlowEvent>().read_unaligned() });
            }
        }
    }
}

impl AsFd for FlowEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for FlowEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Balancer {
    /// Takes the data plane's ring of new and changed flows out of the balancer (once),
    /// to be read where it suits: translate what it yields with
    /// [`Balancer::flow_records`]. Needs [`BalancerBuilder::share_flows`](crate::BalancerBuilder::share_flows).
    pub fn flow_events(&mut self) -> Result<FlowEvents, BalancerError> {
        if !self.limits.share_flows {
            return Err(BalancerError::FlowEvents(
                "flow sharing is off (BalancerBuilder::share_flows)",
            ));
        }
        let Some(map) = self.ebpf.take_map(maps::FLOW_EVENTS) else {
            return Err(BalancerError::FlowEvents("already taken"));
        };
        let ring = RingBuf::try_from(map).map_err(BalancerError::map(maps::FLOW_EVENTS, "open"))?;
        Ok(FlowEvents { ring })
    }
}
