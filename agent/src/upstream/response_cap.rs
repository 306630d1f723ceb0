//! How much a local MCP server may answer (`agent connect --max-response`):
//! a JSON answer is capped as a whole, an event stream event by event (a
//! stream may live for hours; each event is one message). A local server
//! that goes over is cut off: the client gets an error, never a truncated
//! message that looks complete, and nothing more is read from the server.

/// The cap of one response, chosen from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCap {
    /// No cap (`--plain-http`, or the built-in servers).
    None,
    /// The whole body, at most this many bytes.
    Whole(u64),
    /// Each event (bytes up to a blank line), at most this many bytes.
    PerEvent(u64),
}

impl ResponseCap {
    /// The cap for a response of `content_type` when the limit is `max`.
    pub fn for_response(max: Option<u64>, content_type: Option<&str>) -> ResponseCap {
        let Some(max) = max else {
            return ResponseCap::None;
        };
        let sse = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("text/event-stream"));
        if sse {
            ResponseCap::PerEvent(max)
        } else {
            ResponseCap::Whole(max)
        }
    }
}

/// Counts a response's bytes against its cap.
#[derive(Debug)]
pub struct CapCounter {
    cap: ResponseCap,
    /// Bytes of the body (Whole) or of the current event (PerEvent).
    count: u64,
    /// The last four bytes seen, to find event boundaries across chunks.
    window: u32,
}

impl CapCounter {
    pub fn new(cap: ResponseCap) -> CapCounter {
        CapCounter {
            cap,
            count: 0,
            window: 0,
        }
    }

    /// Counts `chunk`; false when the response went over its cap.
    pub fn admit(&mut self, chunk: &[u8]) -> bool {
        match self.cap {
            ResponseCap::None => true,
            ResponseCap::Whole(max) => {
                self.count += chunk.len() as u64;
                self.count <= max
            }
            ResponseCap::PerEvent(max) => {
                for &b in chunk {
                    self.count += 1;
                    if self.count > max {
                        return false;
                    }
                    // An event ends at a blank line: "\n\n" or "\r\n\r\n".
                    self.window = (self.window << 8) | u32::from(b);
                    if self.window & 0xFFFF == 0x0A0A || self.window == 0x0D0A_0D0A {
                        self.count = 0;
                    }
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_content_type() {
        assert_eq!(
            ResponseCap::for_response(None, Some("application/json")),
            ResponseCap::None
        );
        assert_eq!(
            ResponseCap::for_response(Some(10), Some("application/json")),
            ResponseCap::Whole(10)
        );
        assert_eq!(
            ResponseCap::for_response(Some(10), Some("Text/Event-Stream; charset=utf-8")),
            ResponseCap::PerEvent(10)
        );
    }

    #[test]
    fn a_whole_body_over_the_cap_is_refused() {
        let mut c = CapCounter::new(ResponseCap::Whole(10));
        assert!(c.admit(b"12345"));
        assert!(c.admit(b"67890"));
        assert!(!c.admit(b"x"));
    }

    #[test]
    fn events_are_capped_one_by_one_across_chunks() {
        let mut c = CapCounter::new(ResponseCap::PerEvent(12));
        // Many small events: fine however long the stream.
        for _ in 0..1000 {
            assert!(c.admit(b"data: 1\n\n"));
        }
        // A boundary split across chunks.
        assert!(c.admit(b"data: 2\n"));
        assert!(c.admit(b"\ndata: 3\n\n"));
        // One event over the cap, arriving in pieces.
        assert!(c.admit(b"data: 12"));
        assert!(!c.admit(b"3456789"));
        // An oversized event completed inside one chunk is refused too.
        let mut c = CapCounter::new(ResponseCap::PerEvent(12));
        assert!(!c.admit(b"data: 123456789012345\n\ndata: 1\n\n"));
    }
}
