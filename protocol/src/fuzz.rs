//! What the fuzzers check about the wire format, in one place, so that the
//! fuzz targets (`fuzz/`) and the corpus replay tests
//! (`protocol/tests/fuzz_corpus.rs`) run exactly the same checks.
//!
//! Not part of the API: hidden from the docs, no stability promise.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::handshake::peek_version;
use crate::{
    decode_frame, encode_frame, Control, FrameLimit, Hello, HelloReply, ResponseHead, StreamOpen,
};

/// Feeds `data` to the frame decoder as a peer would send it, for every
/// message kind, and checks:
/// * decoding never panics and never allocates past the limit (the length is
///   checked before the buffer grows);
/// * whatever decodes re-encodes to a frame that decodes to the same value;
/// * `peek_version` reads any payload without panicking.
pub fn frames(data: &[u8]) {
    decode_all::<Hello>(data, FrameLimit::CONTROL);
    decode_all::<HelloReply>(data, FrameLimit::CONTROL);
    decode_all::<Control>(data, FrameLimit::CONTROL);
    decode_all::<StreamOpen>(data, FrameLimit::HEAD);
    decode_all::<ResponseHead>(data, FrameLimit::HEAD);
    let _ = peek_version(data);
}

fn decode_all<T>(data: &[u8], limit: FrameLimit)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    // Whole, then in two pieces split by the first byte's value: a partial
    // frame must say "need more", never fail or succeed early.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    for pieces in [vec![data], vec![&data[..split], &data[split..]]] {
        let mut buf = BytesMut::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match decode_frame::<T>("fuzz", &mut buf, limit) {
                    Ok(Some(msg)) => roundtrip(&msg, limit),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

fn roundtrip<T>(msg: &T, limit: FrameLimit)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let mut out = BytesMut::new();
    if encode_frame("fuzz", msg, limit, &mut out).is_err() {
        // Decoded within the limit, so it re-encodes within it too: postcard
        // is canonical for the values it decodes... except that it accepts
        // non-canonical varints, which can only make the re-encoding shorter.
        panic!("a decoded message failed to re-encode: {msg:?}");
    }
    match decode_frame::<T>("fuzz", &mut out, limit) {
        Ok(Some(again)) => assert_eq!(&again, msg, "re-encoded message decodes differently"),
        other => panic!("a re-encoded message does not decode: {other:?}"),
    }
    assert!(out.is_empty(), "re-encoding left bytes behind");
}
