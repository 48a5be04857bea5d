//! The properties the fuzz targets check, here so that `cargo test` replays the committed corpus
//! through the very same code on stable (see `tests/fuzz_corpus.rs`).

use crate::wire::Batch;
use crate::wire::text::{self, TextEncoding};

/// Decoding arbitrary bytes never panics; what decodes re-encodes to the same bytes (the format
/// is canonical), and decodes again to the same batch.
pub fn batch(data: &[u8]) {
    let Ok(batch) = Batch::new_checked(data) else {
        return;
    };
    let frames: Vec<&[u8]> = batch.frames().collect();
    assert_eq!(frames.len(), batch.frame_count() as usize);
    let mut again = Vec::new();
    batch
        .header()
        .emit(&frames, &mut again)
        .expect("decoded frames fit");
    assert_eq!(again, data, "decode then encode changed the bytes");
    let reparsed = Batch::new_checked(&again[..]).expect("re-encoded batch decodes");
    assert_eq!(reparsed.header(), batch.header());
}

/// Decoding arbitrary text never panics; what decodes re-encodes to the same text.
pub fn text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut bytes = Vec::new();
    if text::decode(text, &mut bytes).is_err() {
        return;
    }
    let encoding = if text.starts_with('z') {
        TextEncoding::Z85
    } else {
        TextEncoding::Base64
    };
    let mut again = String::new();
    text::encode(&bytes, encoding, &mut again);
    assert_eq!(again, text, "decode then encode changed the text");
    // A text-borne batch goes through both decoders in a link.
    batch(&bytes);
}

/// Reading any bytes as an IPv6 packet (what a tunnel does with every packet from its device
/// and from the link) never panics; an echo request is answered with a valid reply.
pub fn ip(data: &[u8]) {
    use crate::net::ip::{Ipv6, echo, echo_reply};
    let Some(packet) = Ipv6::new_checked(data) else {
        return;
    };
    let _ = (packet.src(), packet.dst(), packet.payload().len());
    if let Some(reply) = echo_reply(&packet) {
        let reply = Ipv6::new_checked(&reply).expect("a reply is a packet");
        let answer = echo(&reply).expect("a reply is an echo");
        assert!(!answer.request);
        assert_eq!(reply.dst(), packet.src());
    }
}
