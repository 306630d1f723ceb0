//! The live lines on stdout, written by a thread of their own. The task that
//! served a request hands its line over and goes on: no write(2) on the
//! request's path. The thread is woken when lines arrive while it is idle
//! and writes all that have gathered meanwhile in one write, so under load
//! many lines share a write and a wake-up; at rest each line is written as
//! soon as it comes. [`flush`] waits until every line handed over is out;
//! the agent calls it before it exits, so no line is lost.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Most bytes waiting: a writer that cannot keep up (stdout blocked) makes
/// the lines wait for room, rather than memory grow.
const MOST_PENDING: usize = 1024 * 1024;

struct Queue {
    pending: Vec<u8>,
    /// The thread holds a batch it has not finished writing.
    writing: bool,
}

struct Lines {
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
        let mut queue = self.lock();
        loop {
            while queue.pending.is_empty() {
                queue = self.arrived.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            let batch = std::mem::take(&mut queue.pending);
            queue.writing = true;
            drop(queue);
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&batch);
            let _ = out.flush();
            drop(out);
            queue = self.lock();
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

/// The writer (`None` inside: no thread could be started).
static LINES: OnceLock<Option<&'static Lines>> = OnceLock::new();

/// The writer, started on first use (`None`: no thread could be started;
/// lines are then written at once).
fn lines() -> Option<&'static Lines> {
    *LINES.get_or_init(|| {
        let lines: &'static Lines = Box::leak(Box::new(Lines {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                writing: false,
            }),
            arrived: Condvar::new(),
            written: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("stdout-lines".into())
            .spawn(|| lines.run())
            .ok()
            .map(|_| lines)
    })
}

/// Hands `text` (whole lines, each ending in `\n`) to the writer.
pub fn print(text: &str) {
    let Some(lines) = lines() else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        return;
    };
    let mut queue = lines.lock();
    while queue.pending.len() >= MOST_PENDING {
        queue = lines.written.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
    let idle = queue.pending.is_empty() && !queue.writing;
    queue.pending.extend_from_slice(text.as_bytes());
    drop(queue);
    if idle {
        lines.arrived.notify_one();
    }
}

/// Waits until every line handed over so far is written.
pub fn flush() {
    flush_within(None);
}

/// [`flush`], giving up after `limit` (a stdout nobody reads must not
/// hold an agent that is told to quit now). Whether all was written.
pub fn flush_within(limit: Option<Duration>) -> bool {
    let Some(Some(lines)) = LINES.get() else {
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
                        print(&format!("stdout_lines test {t} {i}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(flush_within(Some(Duration::from_secs(30))));
        let lines = LINES.get().copied().flatten().expect("the writer runs");
        let queue = lines.lock();
        assert!(queue.pending.is_empty() && !queue.writing);
    }
}
