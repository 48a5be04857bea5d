//! The CloudWatch Logs link: batches as log events, a log stream per sender per destination.
//!
//! (Layout, reading and resuming are described once the link lands.)

pub mod limits;
pub mod store;

pub use limits::{LimitError, check_put};
pub use store::{Call, LogEvent, LogPage, LogStore, ReadFrom};
