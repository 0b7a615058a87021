//! What the program decides for a packet.

use fulcrum_common::Counter;

/// What to do with a packet and why; every packet counts both.
#[derive(Clone, Copy)]
pub enum Verdict {
    Tx(Counter),
    Redirect(Counter),
    Pass(Counter),
    Drop(Counter),
}
