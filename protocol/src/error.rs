//! Typed errors for decoding frames from bytes and reading them from streams.

use std::io;

/// Why a frame's bytes could not be turned into a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announced more bytes than this kind of frame may carry.
    /// Checked before anything is allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// A zero-length frame: every message has at least one byte.
    #[error("empty frame")]
    EmptyFrame,
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed {what} frame: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    /// The payload decoded, but bytes were left over after the message.
    #[error("{extra} trailing bytes after {what} frame")]
    TrailingBytes { what: &'static str, extra: usize },
    /// An exchange identity with more groups than the protocol allows.
    #[error("exchange identity with {count} groups; at most {max} are allowed")]
    TooManyGroups { count: usize, max: usize },
    /// An exchange identity with a group name longer than the protocol allows.
    #[error("exchange identity with a group of {len} bytes; at most {max} are allowed")]
    GroupTooLong { len: usize, max: usize },
}

/// Why a frame could not be read from, or written to, a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended cleanly before a frame started.
    #[error("stream closed before a {what} frame")]
    Closed { what: &'static str },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a {what} frame")]
    Truncated { what: &'static str },
    /// The message could not be encoded (it is larger than the frame limit).
    #[error("cannot encode {what} frame: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}
