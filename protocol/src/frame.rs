//! Length-prefixed postcard frames.
//!
//! A frame is a big-endian `u32` payload length followed by that many bytes of
//! postcard. The length is checked against a [`FrameLimit`] before any buffer is
//! allocated, so a peer cannot make us reserve memory by announcing a huge frame.

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{DecodeError, FrameError};

/// Bytes taken by the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// The largest payload a kind of frame may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimit(pub usize);

impl FrameLimit {
    /// Handshake and control messages: small by construction.
    pub const CONTROL: FrameLimit = FrameLimit(64 * 1024);
    /// Exchange and response heads carry HTTP headers; 256 KiB is above what
    /// any HTTP server accepts in a request head.
    pub const HEAD: FrameLimit = FrameLimit(256 * 1024);
}

/// Appends one frame holding `msg` to `dst`.
pub fn encode_frame<T: Serialize>(
    what: &'static str,
    msg: &T,
    limit: FrameLimit,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let payload = postcard::to_stdvec(msg).map_err(|e| FrameError::Encode {
        what,
        reason: e.to_string(),
    })?;
    if payload.len() > limit.0 {
        return Err(FrameError::Encode {
            what,
            reason: format!("{} bytes exceed the limit of {}", payload.len(), limit.0),
        });
    }
    dst.reserve(LENGTH_PREFIX + payload.len());
    // The limit is far below u32::MAX, so the cast cannot truncate.
    dst.put_u32(payload.len() as u32);
    dst.put_slice(&payload);
    Ok(())
}

/// Decodes one frame from the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame (and leaves it
/// untouched), or the message and consumes its bytes.
pub fn decode_frame<T: DeserializeOwned>(
    what: &'static str,
    src: &mut BytesMut,
    limit: FrameLimit,
) -> Result<Option<T>, DecodeError> {
    if src.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    check_len(len, limit)?;
    if src.len() < LENGTH_PREFIX + len {
        return Ok(None);
    }
    src.advance(LENGTH_PREFIX);
    let payload = src.split_to(len);
    decode_payload(what, &payload).map(Some)
}

/// Decodes a complete payload (without its length prefix).
pub fn decode_payload<T: DeserializeOwned>(
    what: &'static str,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let (msg, rest) = postcard::take_from_bytes(payload)
        .map_err(|source| DecodeError::Malformed { what, source })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(msg)
}

fn check_len(len: usize, limit: FrameLimit) -> Result<(), DecodeError> {
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > limit.0 {
        return Err(DecodeError::FrameTooLarge { len, max: limit.0 });
    }
    Ok(())
}

/// Reads the raw payload of one frame from `r`.
pub async fn read_payload<R: AsyncRead + Unpin>(
    what: &'static str,
    r: &mut R,
    limit: FrameLimit,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    let mut filled = 0;
    while filled < LENGTH_PREFIX {
        let n = r.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed { what }
            } else {
                FrameError::Truncated { what }
            });
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    check_len(len, limit)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated { what }
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(payload)
}

/// Reads and decodes one frame from `r`.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    what: &'static str,
    r: &mut R,
    limit: FrameLimit,
) -> Result<T, FrameError> {
    let payload = read_payload(what, r, limit).await?;
    Ok(decode_payload(what, &payload)?)
}

/// Encodes `msg` as one frame and writes it to `w` (one write, then flush).
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
    what: &'static str,
    w: &mut W,
    msg: &T,
    limit: FrameLimit,
) -> Result<(), FrameError> {
    let mut buf = BytesMut::new();
    encode_frame(what, msg, limit, &mut buf)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}
