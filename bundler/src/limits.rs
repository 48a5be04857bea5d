//! What an API accepts in one call, counted the way the API counts it.
//!
//! Local test servers do not enforce these limits (moto accepts a PutLogEvents call of any
//! size), so a bundle that would break them in production passes every test against them. A
//! bundler built with [`ApiLimits`] never makes such a bundle; its tests check that, not the
//! server.

/// The limits of one API call: bytes per call, items per call, bytes per item, and the bytes the
/// API adds to each item when it counts.
///
/// Sizes passed to [`add`](crate::Bundler::add) are the item's *encoded* size (what goes on the
/// wire, not `size_of::<T>()`); the bundler adds [`item_overhead`](ApiLimits::item_overhead) to
/// each and keeps every bundle within the limits.
///
/// # Examples
///
/// ```
/// use bundler::ApiLimits;
///
/// let logs = ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS;
/// // A PutLogEvents call counts each message's UTF-8 bytes plus 26.
/// assert_eq!(logs.encoded_size(100), 126);
///
/// // 8 MiB objects of frames that each carry a 4-byte length prefix.
/// let s3 = ApiLimits::s3_put_object(8 << 20).with_item_overhead(4);
/// assert_eq!(s3.max_bundle_bytes(), 8 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    name: &'static str,
    max_bundle_bytes: usize,
    max_items: usize,
    max_item_bytes: usize,
    item_overhead: usize,
}

/// The largest object a single S3 PutObject call may upload: 5 GiB.
pub const S3_MAX_PUT_OBJECT_BYTES: usize = 5 << 30;

impl ApiLimits {
    /// CloudWatch Logs PutLogEvents: at most 1,048,576 bytes per call, counted as the sum of
    /// the messages' UTF-8 bytes plus 26 bytes per event; at most 10,000 events; an event of at
    /// most 1 MB (with its 26 bytes, within the call's limit).
    ///
    /// The API also rejects a batch whose events span more than 24 hours. That concerns the
    /// events' timestamps, which the handler sets when it sends; stamp them then.
    pub const CLOUDWATCH_PUT_LOG_EVENTS: ApiLimits = ApiLimits {
        name: "cloudwatch-logs:PutLogEvents",
        max_bundle_bytes: 1_048_576,
        max_items: 10_000,
        max_item_bytes: 1_048_576,
        item_overhead: 26,
    };

    /// Amazon SQS SendMessageBatch: at most 10 messages and 1 MiB (1,048,576 bytes) of payload
    /// per call, each message at most 1 MiB.
    pub const SQS_SEND_MESSAGE_BATCH: ApiLimits = ApiLimits {
        name: "sqs:SendMessageBatch",
        max_bundle_bytes: 1_048_576,
        max_items: 10,
        max_item_bytes: 1_048_576,
        item_overhead: 0,
    };

    /// Amazon S3 PutObject, bundling items into objects of at most `object_bytes`.
    ///
    /// One PUT may upload up to 5 GiB, and any number of items; the object size is your trade:
    /// larger objects mean fewer PUTs per GiB, smaller ones less to re-send when a PUT fails.
    ///
    /// # Panics
    ///
    /// Panics if `object_bytes` is zero or more than 5 GiB.
    pub const fn s3_put_object(object_bytes: usize) -> ApiLimits {
        assert!(
            object_bytes > 0 && object_bytes <= S3_MAX_PUT_OBJECT_BYTES,
            "bundler::ApiLimits::s3_put_object: `object_bytes` must be between 1 and 5 GiB"
        );
        ApiLimits {
            name: "s3:PutObject",
            max_bundle_bytes: object_bytes,
            max_items: usize::MAX,
            max_item_bytes: object_bytes,
            item_overhead: 0,
        }
    }

    /// Limits of your own API.
    ///
    /// # Panics
    ///
    /// Panics if any limit is zero.
    pub const fn new(
        name: &'static str,
        max_bundle_bytes: usize,
        max_items: usize,
        max_item_bytes: usize,
    ) -> ApiLimits {
        assert!(
            max_bundle_bytes > 0 && max_items > 0 && max_item_bytes > 0,
            "bundler::ApiLimits::new: limits must not be zero"
        );
        ApiLimits {
            name,
            max_bundle_bytes,
            max_items,
            max_item_bytes,
            item_overhead: 0,
        }
    }

    /// Adds `bytes` to what each item counts: the framing your encoding puts around each item
    /// (a length prefix, a delimiter), so that the bundle's *encoded* size is what is limited.
    pub const fn with_item_overhead(mut self, bytes: usize) -> ApiLimits {
        self.item_overhead = self.item_overhead.saturating_add(bytes);
        self
    }

    /// Caps the items per call below the API's own limit (never above it).
    pub const fn with_max_items(mut self, items: usize) -> ApiLimits {
        if items > 0 && items < self.max_items {
            self.max_items = items;
        }
        self
    }

    /// Caps the bytes per call below the API's own limit (never above it, never to zero).
    /// Items keep their own limit, but none larger than a call.
    ///
    /// ```
    /// use bundler::ApiLimits;
    ///
    /// let logs = ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS.with_max_bundle_bytes(100_000);
    /// assert_eq!(logs.max_bundle_bytes(), 100_000);
    /// assert_eq!(logs.max_item_bytes(), 100_000);
    /// assert_eq!(logs.with_max_bundle_bytes(1 << 30).max_bundle_bytes(), 100_000);
    /// ```
    pub const fn with_max_bundle_bytes(mut self, bytes: usize) -> ApiLimits {
        if bytes > 0 && bytes < self.max_bundle_bytes {
            self.max_bundle_bytes = bytes;
            if self.max_item_bytes > bytes {
                self.max_item_bytes = bytes;
            }
        }
        self
    }

    /// A name for logs and metrics, such as `cloudwatch-logs:PutLogEvents`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The most bytes one call may carry, overheads included.
    pub const fn max_bundle_bytes(&self) -> usize {
        self.max_bundle_bytes
    }

    /// The most items one call may carry.
    pub const fn max_items(&self) -> usize {
        self.max_items
    }

    /// The most bytes one item may count, its overhead included.
    pub const fn max_item_bytes(&self) -> usize {
        self.max_item_bytes
    }

    /// Bytes the API adds to each item when it counts.
    pub const fn item_overhead(&self) -> usize {
        self.item_overhead
    }

    /// What an item of `size` encoded bytes counts against these limits.
    pub const fn encoded_size(&self, size: usize) -> usize {
        size.saturating_add(self.item_overhead)
    }

    /// Whether a bundle of `items` items counting `bytes` in all fits one call.
    pub const fn fits(&self, items: usize, bytes: usize) -> bool {
        items <= self.max_items && bytes <= self.max_bundle_bytes
    }
}
