//! The stdio transport's framing: one JSON-RPC message per line, UTF-8,
//! `\n`-terminated, no embedded newlines (MCP stdio transport).
//!
//! Reading is capped: a child that writes a longer line than the cap is
//! misbehaving, and the line is refused before it is held in memory whole.

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line a child may write (16 MiB).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("the server wrote a line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("reading the server's output failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads `\n`-terminated lines of at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next line without its terminator (`\n` or `\r\n`); `None` at the
    /// end of the stream. A last line without `\n` still counts.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if self.buf.len() + chunk.len() > self.max {
                return Err(FramingError::TooLong { max: self.max });
            }
            self.buf.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(found);
            self.inner.consume(used);
            if found {
                return Ok(Some(self.take_line()));
            }
        }
    }

    /// The reader, for draining what is left.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn take_line(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        line
    }
}

/// One message as a line for the child's stdin. serde_json escapes control
/// characters inside strings, so the only newline is the terminator.
pub fn encode(msg: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, String>> {
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        loop {
            match r.next_line().await {
                Ok(Some(l)) => out.push(Ok(l)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_across_small_reads() {
        let got = lines(b"{\"a\":1}\n\r\n{\"b\":\"xy\"}\r\nlast", 100).await;
        let want: Vec<Result<Vec<u8>, String>> = vec![
            Ok(b"{\"a\":1}".to_vec()),
            Ok(Vec::new()),
            Ok(b"{\"b\":\"xy\"}".to_vec()),
            Ok(b"last".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn refuses_a_line_over_the_cap() {
        let got = lines(b"12345\n1234567890\nafter\n", 8).await;
        assert_eq!(got[0], Ok(b"12345".to_vec()));
        assert_eq!(
            got[1],
            Err("the server wrote a line longer than 8 bytes".to_owned())
        );
        assert_eq!(got.len(), 2, "reading stops at the first oversized line");
        // Exactly at the cap is fine.
        assert_eq!(
            lines(b"12345678\n", 8).await,
            vec![Ok(b"12345678".to_vec())]
        );
    }

    #[test]
    fn encoded_messages_are_one_line() {
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "params": {"q": "a\nb\r\n"}});
        let line = encode(&msg);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(back, msg);
    }
}
