//! Present so the bench crate's build script can depend on this crate; the programs are
//! the `fulcrum-bench` binary target.
#![no_std]
