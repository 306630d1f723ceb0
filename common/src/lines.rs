//! Lines on stdout or stderr, written by a thread of their own: the agent's
//! live line for each request, the relay's log line for each request. The
//! task that served a request hands its line over and goes on: no write(2)
//! on the request's path, and no wake-up either.
//!
//! The thread writes what has gathered every [`GATHER`], in one write. It
//! is woken by a line only when it has parked: after [`PARK_AFTER`] with
//! nothing to write. So under steady load no request's task wakes it (a
//! futex wake per line, and the woken thread taking the core the request
//! runs on, cost more than the write they saved), and at rest it does not
//! run at all. A line is out at most [`GATHER`] after it was handed over
//! (plus the write itself). [`flush`] waits until every line handed over is
//! out; a binary calls it before it exits, and [`flush_on_panic`] before a
//! panic's message, so no line is lost and none comes after the last words.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Where a writer's lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Most bytes waiting: a writer that cannot keep up (its output blocked)
/// makes the lines wait for room, rather than memory grow.
const MOST_PENDING: usize = 1024 * 1024;

/// How often the thread writes what has gathered.
pub const GATHER: Duration = Duration::from_millis(5);

/// How long the thread goes on looking with nothing to write before it
/// parks until the next line.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

struct Queue {
    pending: Vec<u8>,
    /// The thread holds a batch it has not finished writing.
    writing: bool,
    /// The thread waits for a line to wake it.
    parked: bool,
}

struct Lines {
    stream: Stream,
    queue: Mutex<Queue>,
    /// Lines arrived for an idle thread.
    arrived: Condvar,
    /// A batch was written.
    written: Condvar,
}

impl Lines {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let rounds_to_park = (PARK_AFTER.as_millis() / GATHER.as_millis()).max(1);
        let mut empty_rounds = 0;
        loop {
            std::thread::sleep(GATHER);
            let mut queue = self.lock();
            if queue.pending.is_empty() {
                empty_rounds += 1;
                if empty_rounds < rounds_to_park {
                    continue;
                }
                queue.parked = true;
                while queue.pending.is_empty() {
                    queue = self.arrived.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
                queue.parked = false;
                // Woken by the first line: the others of the next GATHER
                // come with it.
                empty_rounds = 0;
                continue;
            }
            empty_rounds = 0;
            let batch = std::mem::take(&mut queue.pending);
            queue.writing = true;
            drop(queue);
            write_now(self.stream, &batch);
            let mut queue = self.lock();
            queue.writing = false;
            // Keep the larger buffer for the next batch.
            if queue.pending.is_empty() {
                let mut batch = batch;
                batch.clear();
                queue.pending = batch;
            }
            self.written.notify_all();
        }
    }
}

fn write_now(stream: Stream, bytes: &[u8]) {
    match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
        Stream::Stderr => {
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    }
}

/// The writers (`None` inside: no thread could be started).
static STDOUT: OnceLock<Option<&'static Lines>> = OnceLock::new();
static STDERR: OnceLock<Option<&'static Lines>> = OnceLock::new();

fn cell(stream: Stream) -> &'static OnceLock<Option<&'static Lines>> {
    match stream {
        Stream::Stdout => &STDOUT,
        Stream::Stderr => &STDERR,
    }
}

/// The writer of `stream`, started on first use (`None`: no thread could
/// be started; lines are then written at once).
fn lines(stream: Stream) -> Option<&'static Lines> {
    *cell(stream).get_or_init(|| {
        let lines: &'static Lines = Box::leak(Box::new(Lines {
            stream,
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                writing: false,
                parked: false,
            }),
            arrived: Condvar::new(),
            written: Condvar::new(),
        }));
        let name = match stream {
            Stream::Stdout => "stdout-lines",
            Stream::Stderr => "stderr-lines",
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(|| lines.run())
            .ok()
            .map(|_| lines)
    })
}

/// Hands `text` (whole lines, each ending in `\n`) to `stream`'s writer.
pub fn print(stream: Stream, text: &[u8]) {
    let Some(lines) = lines(stream) else {
        write_now(stream, text);
        return;
    };
    let mut queue = lines.lock();
    while queue.pending.len() >= MOST_PENDING {
        queue = lines.written.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
    let parked = queue.parked && queue.pending.is_empty();
    queue.pending.extend_from_slice(text);
    drop(queue);
    if parked {
        lines.arrived.notify_one();
    }
}

/// Waits until every line handed to `stream`'s writer so far is written.
pub fn flush(stream: Stream) {
    flush_within(stream, None);
}

/// [`flush`], giving up after `limit` (an output nobody reads must not
/// hold a process that is told to quit now). Whether all was written.
pub fn flush_within(stream: Stream, limit: Option<Duration>) -> bool {
    let Some(Some(lines)) = cell(stream).get() else {
        return true;
    };
    let deadline = limit.map(|l| Instant::now() + l);
    let mut queue = lines.lock();
    while !queue.pending.is_empty() || queue.writing {
        queue = match deadline {
            None => lines.written.wait(queue).unwrap_or_else(|p| p.into_inner()),
            Some(deadline) => {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return false;
                };
                lines
                    .written
                    .wait_timeout(queue, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
    true
}

/// Makes a panic first write out the lines handed over before it (within a
/// second), then its message as before.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        for stream in [Stream::Stdout, Stream::Stderr] {
            flush_within(stream, Some(Duration::from_secs(1)));
        }
        previous(info);
    }));
}

/// Log lines to stderr through its writer (a
/// [`tracing_subscriber::fmt::MakeWriter`]): each event is handed over whole
/// when the formatter is done with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLines;

/// One event's bytes, handed to the writer when dropped.
#[derive(Debug, Default)]
pub struct LineBuffer(Vec<u8>);

impl Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            print(Stream::Stderr, &self.0);
        }
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for StderrLines {
    type Writer = LineBuffer;

    fn make_writer(&'w self) -> LineBuffer {
        LineBuffer(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines handed over from many threads at once all come out, each whole,
    /// and `flush` returns only once they have.
    #[test]
    fn every_line_is_written_by_flush() {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..200 {
                        print(Stream::Stdout, format!("lines test {t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(flush_within(Stream::Stdout, Some(Duration::from_secs(30))));
        let lines = STDOUT.get().copied().flatten().expect("the writer runs");
        let queue = lines.lock();
        assert!(queue.pending.is_empty() && !queue.writing);
    }
}
