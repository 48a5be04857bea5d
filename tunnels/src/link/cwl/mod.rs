//! The CloudWatch Logs link: batches as log events, a log stream per sender per destination.
//!
//! (Layout, reading and resuming are described once the link lands.)

#[cfg(feature = "aws")]
mod aws;
mod inbox;
pub mod layout;
pub mod limits;
mod link;
mod memory;
mod outbox;
pub mod store;

#[cfg(feature = "aws")]
pub use aws::{CwlStore, CwlStoreConfig};
pub use limits::{LimitError, check_put};
pub use link::{CwlLink, CwlLinkConfig, DEFAULT_READ_RATE, ReadMode, read_rate};
pub use memory::{LogsModel, MemoryLogs};
pub use store::{Call, FilterPage, FoundEvent, LogEvent, LogPage, LogStore, ReadFrom};
