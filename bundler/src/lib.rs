//! Generic batching by count, bytes and delay, with backpressure. Filled in by the bundler issue.
#![forbid(unsafe_code)]
