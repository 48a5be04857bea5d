//! Tunnels over pay-per-call APIs: the wire format that packs many frames into one call, links
//! over S3 (and memory), and the node that ties `cardio` and `bundler` to a link.
//!
//! - [`wire`]: batches of frames with sender, epoch, sequence and checksum.
//! - [`store`]: the small object-store trait the S3 link's logic runs on, and an in-memory
//!   store with per-call accounting, a latency model and prices.
//! - [`s3`]: the S3 link: key layout, sending, and two receive strategies (list and probe).
//! - `aws` (feature `aws`, on by default): the store on the AWS SDK, for S3 and S3-compatible
//!   servers.
//! - [`node`]: a node: frames in, bundled by destination, sent within a call budget; polls on an
//!   adaptive heartbeat; frames out.
//! - [`ip`]: the few IPv6 fields a tunnel reads, node addresses, ICMPv6 echo.
//! - `tun` (feature `tun`, Linux): a TUN device and its configuration through netlink; the only
//!   module with `unsafe` code.
#![deny(unsafe_code)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod ip;
pub mod link;
#[cfg(feature = "aws")]
pub mod local_s3;
pub mod node;
pub mod s3;
pub mod store;
#[cfg(all(feature = "tun", target_os = "linux"))]
#[allow(unsafe_code)]
pub mod tun;
pub mod wire;

pub use link::{Link, LinkError, NodeId, Received};
pub use node::{Node, NodeConfig};

#[doc(hidden)]
pub mod fuzz;
