//! Test labs for Fulcrum: network namespaces with real hosts, servers and clients, and
//! frame builders for packet fixtures. Used by the tests, the benchmarks and `make demo`.
pub mod bgp_peers;
pub mod bird;
pub mod daemon;
pub mod dsr;
pub mod ecmp;
pub mod failover;
pub mod fixture;
pub mod fleet;
pub mod frame;
pub mod frame_l3;
pub mod frame_tunnel;
pub mod host;
pub mod l3;
pub mod netns;
pub mod testrun;
pub mod traffic;
