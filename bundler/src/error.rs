//! The error `add` returns: what went wrong, and the item, handed back.

use std::fmt;

/// Why an item was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddErrorKind {
    /// The item alone counts more than any bundle may hold (`byte_limit`, the API's item limit)
    /// or than `buffered_byte_limit`: it can never be accepted, so `add_wait` fails at once.
    Oversized {
        /// What the item counts, overhead included.
        size: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// Accepting the item now would take the bytes buffered (accepted, not yet handled) past
    /// `buffered_byte_limit`. Try again later, or wait for room with `add_wait`.
    Overflow {
        /// What the item counts, overhead included.
        size: usize,
        /// `buffered_byte_limit`.
        limit: usize,
    },
    /// The bundler was closed (or every handle to it dropped); it accepts nothing more.
    Closed,
}

impl fmt::Display for AddErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddErrorKind::Oversized { size, limit } => {
                write!(
                    f,
                    "item of {size} bytes is larger than the limit of {limit}"
                )
            }
            AddErrorKind::Overflow { size, limit } => write!(
                f,
                "no room for an item of {size} bytes within the buffered byte limit of {limit}"
            ),
            AddErrorKind::Closed => f.write_str("bundler is closed"),
        }
    }
}

/// An item the bundler did not accept, handed back with the reason.
///
/// # Examples
///
/// ```
/// use bundler::{AddErrorKind, Bundler};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bundler = Bundler::builder()
///     .byte_limit(100)
///     .build(|bundle: Vec<String>| async move { drop(bundle) });
/// let err = bundler.add("x".repeat(200), 200).unwrap_err();
/// assert_eq!(err.kind(), AddErrorKind::Oversized { size: 200, limit: 100 });
/// assert_eq!(err.to_string(), "item of 200 bytes is larger than the limit of 100");
/// let item: String = err.into_item(); // nothing is lost: the caller decides what to do
/// # bundler.close().await;
/// # }
/// ```
pub struct AddError<T> {
    kind: AddErrorKind,
    item: T,
}

impl<T> AddError<T> {
    pub(crate) fn new(kind: AddErrorKind, item: T) -> Self {
        AddError { kind, item }
    }

    /// Why the item was not accepted.
    pub fn kind(&self) -> AddErrorKind {
        self.kind
    }

    /// Whether the bundler was closed.
    pub fn is_closed(&self) -> bool {
        self.kind == AddErrorKind::Closed
    }

    /// Whether there was no room now, and may be later.
    pub fn is_overflow(&self) -> bool {
        matches!(self.kind, AddErrorKind::Overflow { .. })
    }

    /// Whether the item can never be accepted.
    pub fn is_oversized(&self) -> bool {
        matches!(self.kind, AddErrorKind::Oversized { .. })
    }

    /// The item that was not accepted.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// Takes back the item that was not accepted.
    pub fn into_item(self) -> T {
        self.item
    }
}

impl<T> fmt::Debug for AddError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AddError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl<T> std::error::Error for AddError<T> {}
