//! Present so the library's build script can depend on this crate and rebuild when it changes;
//! the program itself is the `fulcrum` binary target.
#![no_std]
