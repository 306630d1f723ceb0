//! Server-sent events split out of a stream of bytes, with a cap.
//!
//! Both readers of an agent's event stream use this one splitter: the
//! `tools/list` filter (which rewrites the answer events it watches and fails
//! closed on an event it cannot read) and the legacy HTTP+SSE transport
//! (which re-sends each event's data on the client's stream).
//!
//! Lines end with CRLF, LF or CR; an event ends at an empty line
//! (the HTML standard's "interpreting an event stream"). Nothing larger than
//! the cap is ever held: an event that grows past it is an error.

use bytes::{Bytes, BytesMut};

/// An event of the stream grew past the splitter's cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event of the stream exceeds {cap} bytes")]
pub struct EventTooLarge {
    /// The cap, in bytes.
    pub cap: usize,
}

/// Splits a stream fed in chunks into whole events (their bytes as
/// received, the terminating empty line included).
#[derive(Debug)]
pub struct EventSplitter {
    /// Bytes of the event being received (and of any after it).
    buf: BytesMut,
    /// Where the scan for the end of that event resumes, so that each byte
    /// is looked at once.
    scan: usize,
    cap: usize,
}

impl EventSplitter {
    /// A splitter refusing events larger than `cap` bytes.
    pub fn new(cap: usize) -> Self {
        EventSplitter {
            buf: BytesMut::new(),
            scan: 0,
            cap,
        }
    }

    /// Takes in the next bytes of the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole event, if one was received. With `at_eof` (the stream
    /// ended), what is left of an unfinished last event is returned as an
    /// event too. Call again until `Ok(None)`.
    pub fn next_event(&mut self, at_eof: bool) -> Result<Option<Bytes>, EventTooLarge> {
        let too_large = EventTooLarge { cap: self.cap };
        if let Some(end) = event_end(&self.buf, &mut self.scan, at_eof) {
            if end > self.cap {
                return Err(too_large);
            }
            self.scan = 0;
            return Ok(Some(self.buf.split_to(end).freeze()));
        }
        if self.buf.len() > self.cap {
            return Err(too_large);
        }
        if at_eof && !self.buf.is_empty() {
            self.scan = 0;
            return Ok(Some(self.buf.split().freeze()));
        }
        Ok(None)
    }

    /// The bytes received and not yet returned as events; the splitter is
    /// empty afterwards.
    pub fn take_rest(&mut self) -> Bytes {
        self.scan = 0;
        self.buf.split().freeze()
    }
}

/// The end (exclusive) of the first complete event in `buf`: the end of its
/// first empty line. Lines end with CRLF, LF or CR (a CR last in `buf` waits
/// for the next byte, unless the stream ended). `scan` is where the line in
/// progress starts, so bytes are looked at once.
fn event_end(buf: &[u8], scan: &mut usize, at_eof: bool) -> Option<usize> {
    let mut line_start = *scan;
    let mut i = *scan;
    while i < buf.len() {
        let b = buf[i];
        if b != b'\n' && b != b'\r' {
            i += 1;
            continue;
        }
        let mut next = i + 1;
        if b == b'\r' {
            if next == buf.len() && !at_eof {
                break;
            }
            if buf.get(next) == Some(&b'\n') {
                next += 1;
            }
        }
        let empty = i == line_start;
        line_start = next;
        i = next;
        if empty {
            return Some(next);
        }
    }
    *scan = line_start;
    None
}

/// The lines of one complete event, without terminators and without the
/// empty line that ends it.
pub fn lines(event: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < event.len() {
        let b = event[i];
        if b == b'\n' || b == b'\r' {
            out.push(&event[start..i]);
            if b == b'\r' && event.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < event.len() {
        out.push(&event[start..]);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// The value of a `data` field line (one leading space removed).
pub fn data_value(line: &[u8]) -> Option<&[u8]> {
    if line == b"data" {
        return Some(b"");
    }
    let value = line.strip_prefix(b"data:")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// An event's data: its `data` lines joined by LF; `None` if it has none
/// (`event`, `id`, `retry` and comments are not data).
pub fn data(event: &[u8]) -> Option<Vec<u8>> {
    let values: Vec<&[u8]> = lines(event).into_iter().filter_map(data_value).collect();
    (!values.is_empty()).then(|| values.join(&b"\n"[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds chunks; the data of every event completed, in order.
    fn data_of(s: &mut EventSplitter, chunk: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        s.push(chunk);
        let mut out = Vec::new();
        while let Some(event) = s.next_event(false)? {
            out.extend(data(&event));
        }
        Ok(out)
    }

    #[test]
    fn sse_events_are_read_across_chunks() {
        let mut s = EventSplitter::new(1024);
        assert!(data_of(&mut s, b"id: 1\nevent: message\nda")
            .expect("ok")
            .is_empty());
        assert!(data_of(&mut s, b"ta: {\"a\":").expect("ok").is_empty());
        assert_eq!(
            data_of(&mut s, b"1}\r\n\r\n").expect("ok"),
            vec![b"{\"a\":1}".to_vec()]
        );
        // A priming event without data, a comment, two data lines.
        assert_eq!(
            data_of(
                &mut s,
                b"id: 2\ndata:\n\n: keep-alive\n\ndata: x\ndata:y\n\n"
            )
            .expect("ok"),
            vec![Vec::new(), b"x\ny".to_vec()]
        );
        assert!(data_of(&mut s, b"id: 3\n\n").expect("ok").is_empty());
    }

    #[test]
    fn events_come_out_whole_and_byte_for_byte() {
        let mut s = EventSplitter::new(1024);
        s.push(b"data: 1\r\n\r\nid: 2\rdata: 2\r\r: c\n\ndata: 3");
        assert_eq!(
            s.next_event(false).expect("ok").as_deref(),
            Some(&b"data: 1\r\n\r\n"[..])
        );
        assert_eq!(
            s.next_event(false).expect("ok").as_deref(),
            Some(&b"id: 2\rdata: 2\r\r"[..])
        );
        assert_eq!(
            s.next_event(false).expect("ok").as_deref(),
            Some(&b": c\n\n"[..])
        );
        assert_eq!(s.next_event(false).expect("ok"), None);
        assert_eq!(s.take_rest(), Bytes::from_static(b"data: 3"));
        assert_eq!(s.next_event(true).expect("ok"), None, "nothing is left");
    }

    #[test]
    fn an_unfinished_last_event_is_returned_when_the_stream_ends() {
        let mut s = EventSplitter::new(1024);
        s.push(b"data: x\ndata: y");
        assert_eq!(s.next_event(false).expect("ok"), None);
        let last = s.next_event(true).expect("ok").expect("an event");
        assert_eq!(data(&last).as_deref(), Some(&b"x\ny"[..]));
        assert_eq!(s.next_event(true).expect("ok"), None);
    }

    #[test]
    fn an_event_over_the_cap_is_refused_whole_or_in_progress() {
        // Complete, but longer than the cap.
        let mut s = EventSplitter::new(8);
        s.push(b"data: 123456\n\n");
        assert_eq!(s.next_event(false), Err(EventTooLarge { cap: 8 }));
        // Still arriving, and already longer than the cap.
        let mut s = EventSplitter::new(8);
        s.push(b"data: 12");
        assert_eq!(s.next_event(false).expect("ok"), None);
        s.push(b"3");
        assert_eq!(s.next_event(false), Err(EventTooLarge { cap: 8 }));
        assert_eq!(
            EventTooLarge { cap: 8 }.to_string(),
            "an event of the stream exceeds 8 bytes"
        );
        // Events up to the cap pass.
        let mut s = EventSplitter::new(9);
        s.push(b"data: 1\n\n");
        assert!(s.next_event(false).expect("ok").is_some());
    }

    #[test]
    fn event_ends_are_found_with_every_line_ending() {
        for (buf, want) in [
            (&b"data: x\n\nrest"[..], Some(9)),
            (b"data: x\r\n\r\nrest", Some(11)),
            (b"data: x\r\rrest", Some(9)),
            (b"\n", Some(1)),
            (b"data: x\n", None),
            (b"data: x\r", None), // the CR may be the start of CRLF
        ] {
            let mut scan = 0;
            assert_eq!(
                event_end(buf, &mut scan, false),
                want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let mut scan = 0;
        assert_eq!(event_end(b"data: x\r\r", &mut scan, true), Some(9));
        // The scan resumes where the unfinished line starts.
        let mut scan = 0;
        assert_eq!(event_end(b"a: 1\nb: ", &mut scan, false), None);
        assert_eq!(scan, 5);
        assert_eq!(event_end(b"a: 1\nb: 2\n\n", &mut scan, false), Some(11));
        assert_eq!(lines(b"a: 1\r\nb\rc\n\n"), [&b"a: 1"[..], b"b", b"c"]);
        assert_eq!(data_value(b"data:x"), Some(&b"x"[..]));
        assert_eq!(data_value(b"data:  x"), Some(&b" x"[..]));
        assert_eq!(data_value(b"data"), Some(&b""[..]));
        assert_eq!(data_value(b"datum: x"), None);
        assert_eq!(data(b"event: e\nid: 1\n\n"), None);
        assert_eq!(data(b"data\n\n").as_deref(), Some(&b""[..]));
    }
}
