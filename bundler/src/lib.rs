//! Batching by count, bytes and delay, with backpressure, API limits and call budgets, and no
//! lost items.
//!
//! When every call to an API is billed (an S3 PUT, a CloudWatch Logs PutLogEvents, an SQS
//! SendMessageBatch), the number of calls is the bill. A [`Bundler`] collects items from any
//! number of producers and hands them to a handler in bundles, so that one call carries many
//! items:
//!
//! - a bundle goes when it reaches `count_threshold` items or `byte_threshold` bytes, or
//!   `delay_threshold` after its first item, whichever comes first;
//! - it never breaks `byte_limit` or the [`ApiLimits`] of the API it is for, counted as the API
//!   counts (CloudWatch Logs adds 26 bytes per event);
//! - `buffered_byte_limit` bounds the memory: [`Bundler::add`] refuses what does not fit, and
//!   hands the item back, [`Bundler::add_wait`] waits for room;
//! - a [`Budget`] of calls per window is a ceiling the handler is never called
//!   above: while it is spent, bundles grow instead;
//! - [`Bundler::flush`] and [`Bundler::close`] return when what was added has been handled;
//!   nothing accepted is lost or handled twice.
//!
//! [`KeyedBundler`] keeps one open bundle per key (per destination, per log stream).
//!
//! It is the Rust successor of Go's `google.golang.org/api/support/bundler`, with the same
//! setting names, and fixed where that one hurts: `add_wait` of an item that can never fit
//! fails at once instead of blocking forever, a panicking handler does not wedge the bundler,
//! and `flush` waits only for what was added before it.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use bundler::{ApiLimits, Bundler};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bundler = Bundler::builder()
//!     .delay_threshold(Duration::from_millis(50))
//!     .count_threshold(500)
//!     .limits(ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS)
//!     .build(|events: Vec<String>| async move {
//!         // put_log_events(events).await
//! #       drop(events);
//!     });
//!
//! for line in ["one", "two", "three"] {
//!     bundler.add(line.to_string(), line.len()).expect("room for a few lines");
//! }
//! bundler.close().await; // every line was handed to the handler
//! # }
//! ```
#![forbid(unsafe_code)]

mod builder;
mod core;
mod delay;
mod dispatch;
mod error;
mod lane;
mod limits;
pub mod metrics;

pub use builder::Builder;
pub use cardio::Budget;
pub use core::{Bundler, KeyedBundler};
pub use delay::SharedDelay;
pub use error::{AddError, AddErrorKind};
pub use limits::{ApiLimits, S3_MAX_PUT_OBJECT_BYTES};
pub use metrics::Reason;
