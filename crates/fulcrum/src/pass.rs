//! A program that passes every frame, for the far end of a veth.

use aya::{Ebpf, programs::XdpMode};
use fulcrum_common::programs;

use crate::{
    BalancerError,
    balancer::{OBJECT, xdp_mut},
};

/// `XDP_PASS` attached to an interface. A veth only accepts frames its peer sends with
/// `XDP_TX` or a redirect when the receiving end runs an XDP program; labs and
/// benchmarks put this one there. Detaches on drop.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    /// Loads the program and attaches it natively to `iface` in the calling thread's
    /// network namespace.
    pub fn attach(iface: &str) -> Result<Self, BalancerError> {
        let fail = |what: &str, e| BalancerError::Program {
            what: format!("{what} the pass program on '{iface}'"),
            source: Box::new(e),
        };
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| BalancerError::Load(Box::new(e)))?;
        let program = xdp_mut(&mut ebpf, programs::PASS)?;
        program.load().map_err(|e| fail("loading", e))?;
        program
            .attach(iface, XdpMode::Driver)
            .map_err(|e| fail("attaching", e))?;
        Ok(Self { _ebpf: ebpf })
    }
}
