//! Benchmarks and the cost simulation for the workspace.
//!
//! The criterion benches live in `benches/`; the cost simulation is the `costsim` binary
//! (`cargo run --release -p benches --bin costsim`), built from this library: [`traces`] of
//! traffic, the [`sim`] that replays them through the real node code on a paused clock,
//! [`pcap`] to replay a capture of your own, the [`report`], and the [`fleet`] simulation
//! (`costsim --nodes`): many nodes on one bucket or one account, with its [`fleet_report`].

pub mod ceiling;
pub mod fleet;
pub mod fleet_report;
pub mod pcap;
pub mod report;
pub mod sim;
pub mod traces;
