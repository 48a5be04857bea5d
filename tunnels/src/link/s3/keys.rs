//! The key layout of a network's bucket.
//!
//! ```text
//! {prefix}{dest}/{sender}/{epoch}/{seq}    a batch, every number 16 lower-case hex digits
//! {prefix}{dest}.bell                      "look at your inbox": rung by senders
//! ```
//!
//! Hex of fixed width sorts like the numbers, so listing an inbox (S3 lists in UTF-8 binary
//! order) gives each sender's batches in order, epoch by epoch.

use crate::link::NodeId;

/// The key of a batch.
pub fn batch_key(prefix: &str, dest: NodeId, sender: NodeId, epoch: u64, seq: u64) -> String {
    format!("{prefix}{dest:016x}/{sender:016x}/{epoch:016x}/{seq:016x}")
}

/// The key of a node's bell.
pub fn bell_key(prefix: &str, dest: NodeId) -> String {
    format!("{prefix}{dest:016x}.bell")
}

/// The prefix of a node's inbox: every batch key addressed to it starts with it.
pub fn inbox_prefix(prefix: &str, dest: NodeId) -> String {
    format!("{prefix}{dest:016x}/")
}

/// Where a key listed under an inbox says its batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// A batch key: (sender, epoch, seq).
    Batch(NodeId, u64, u64),
    /// Under the inbox, but not a batch key: someone else's object.
    Foreign,
    /// Not under the inbox at all (a server that answered for another prefix). Never deleted.
    Outside,
}

/// Reads a key a LIST of the inbox `inbox` returned. Never panics, whatever the server sends.
pub fn parse_listed(inbox: &str, key: &str) -> Listed {
    match key.strip_prefix(inbox) {
        None => Listed::Outside,
        Some(rest) => parse_key(rest).map_or(Listed::Foreign, |(s, e, q)| Listed::Batch(s, e, q)),
    }
}

/// Parses `sender/epoch/seq` after an inbox prefix.
fn parse_key(rest: &str) -> Option<(NodeId, u64, u64)> {
    let mut parts = rest.split('/');
    let mut hex = || {
        let part = parts.next()?;
        (part.len() == 16 && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(part, 16).ok())
            .flatten()
    };
    let parsed = (hex()?, hex()?, hex()?);
    parts.next().is_none().then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_their_numbers() {
        let a = batch_key("net/", 1, 2, 3, 9);
        let b = batch_key("net/", 1, 2, 3, 10);
        let c = batch_key("net/", 1, 2, 4, 0);
        assert!(a < b && b < c);
        assert_eq!(
            a,
            "net/0000000000000001/0000000000000002/0000000000000003/0000000000000009"
        );
        assert_eq!(bell_key("net/", 255), "net/00000000000000ff.bell");
        assert_eq!(
            parse_key("0000000000000002/0000000000000003/000000000000000a"),
            Some((2, 3, 10))
        );
        assert_eq!(parse_key("2/3/10"), None);
        assert_eq!(parse_key("0000000000000002/0000000000000003"), None);
        assert_eq!(
            parse_key("0000000000000002/0000000000000003/000000000000000a/x"),
            None
        );
        assert_eq!(
            parse_key("000000000000000g/0000000000000003/000000000000000a"),
            None
        );
    }

    #[test]
    fn listed_keys_outside_the_inbox_or_shorter_than_it_do_not_panic() {
        let inbox = inbox_prefix("net/", 1);
        assert_eq!(
            parse_listed(&inbox, &batch_key("net/", 1, 2, 3, 4)),
            Listed::Batch(2, 3, 4)
        );
        assert_eq!(
            parse_listed(&inbox, "net/0000000000000001/x"),
            Listed::Foreign
        );
        for outside in [
            "",
            "n",
            "net/",
            "net/0000000000000002/x",
            "ñet/0000000000000001/",
        ] {
            assert_eq!(
                parse_listed(&inbox, outside),
                Listed::Outside,
                "{outside:?}"
            );
        }
    }
}
