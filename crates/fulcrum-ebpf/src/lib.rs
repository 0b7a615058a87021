//! What the XDP programs share (header layouts, pointer access); the programs themselves are
//! the binary targets `fulcrum` (balancer) and `fulcrum-decap` (decapsulator), which link it.
#![no_std]

pub mod header;
