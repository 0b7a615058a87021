//! Fulcrum's data plane as a library.
pub mod maglev;
pub mod netlink;
