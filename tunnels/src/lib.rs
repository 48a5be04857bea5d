//! Tunnels over pay-per-call APIs: the wire format that packs many frames into one call, links
//! over S3 and CloudWatch Logs (and memory), and the node that ties `cardio` and `bundler` to a
//! link.
//!
//! - [`wire`]: batches of frames with sender, epoch, sequence and checksum.
//! - [`link`]: the [`Link`] trait and what every link shares (exactly-once delivery, retries,
//!   cost accounting), the S3 link ([`link::s3`]), the CloudWatch Logs link ([`link::cwl`])
//!   and an in-process one ([`link::memory`]).
//! - [`node`]: a node: frames in, bundled by destination, sent within a call budget; polls on an
//!   adaptive heartbeat; frames out.
//! - [`net`]: routing: which node a packet goes to, what a node accepts.
//! - [`device`]: the [`Device`](device::Device) trait; a TUN device (feature `tun`, Linux).
//! - `stack` (feature `userspace`): a TCP/IP stack in the process, a device for nodes with no
//!   device and no privileges, its ports bridged to local sockets.
//!
//! Features: `aws` (default) the S3 and CloudWatch Logs stores on the AWS SDK; `local-s3` an S3-compatible server in
//! process, for demos and tests; `tun` the TUN device. The `tunnel` binary is a crate of its own
//! (`tunnels/cli`), so that using the library compiles no argument parser, exporter or device.
#![forbid(unsafe_code)]

pub mod device;
pub mod link;
pub mod net;
pub mod node;
#[cfg(feature = "userspace")]
pub mod stack;
pub mod wire;

pub use link::{Link, LinkError, NodeId, Received};
pub use node::{Node, NodeConfig};

#[doc(hidden)]
pub mod fuzz;
