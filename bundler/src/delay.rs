//! [`SharedDelay`]: a delay threshold that can change while the bundler runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest delay: `Instant + Duration` panics past what an instant holds.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A delay threshold shared between a bundler and whoever tunes it while it runs
/// ([`Builder::shared_delay`](crate::Builder::shared_delay)): a bundle opened after a
/// [`set`](SharedDelay::set) goes that long after its first item; a bundle already open keeps
/// the deadline it was given. Cloning shares it.
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let delay = bundler::SharedDelay::new(Duration::from_millis(20));
/// let bundler = bundler::Bundler::builder()
///     .shared_delay(delay.clone())
///     .build(|items: Vec<u32>| async move { println!("{items:?}") });
/// // Data flows in bulk: a bundle need not wait for company any more.
/// delay.set(Duration::ZERO);
/// assert_eq!(delay.get(), Duration::ZERO);
/// bundler.add(1, 1).unwrap();
/// bundler.close().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SharedDelay(Arc<AtomicU64>);

impl SharedDelay {
    /// A delay of `delay` (at most a century, as [`Builder::delay_threshold`](crate::Builder::delay_threshold)).
    pub fn new(delay: Duration) -> Self {
        SharedDelay(Arc::new(AtomicU64::new(nanos(delay))))
    }

    /// Changes it, for bundles opened from now on.
    pub fn set(&self, delay: Duration) {
        self.0.store(nanos(delay), Ordering::Relaxed);
    }

    /// What it is now.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

fn nanos(delay: Duration) -> u64 {
    // A century is 3.2e18 ns, within a u64.
    delay.min(MAX_DELAY).as_nanos() as u64
}
