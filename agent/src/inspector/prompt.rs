//! The owner's one-key answer in the terminal (`--approve` with stdin and
//! stdout on a terminal, `--view line`): when no inspector page is open, a
//! pending exchange is put to the terminal — `y` approves, `n` denies —
//! one prompt at a time. A decision made meanwhile on the page or the API,
//! or the timeout, ends the prompt.
//!
//! The terminal is not put in raw mode: only line editing and echo are off
//! while the prompt waits, so lines other parts print meanwhile (log lines,
//! Ctrl-C) behave as usual; a request line printed meanwhile
//! ([`print_line`]) goes above the prompt, which is written again under it.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};

use super::approval::Decision;
use super::Inspector;

/// One prompt at a time: the terminal has one keyboard.
static TERMINAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The question on the terminal while a prompt waits.
static ASKING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Prints `line` on stdout; while a prompt waits, above it (the prompt is
/// written again under the line).
pub fn print_line(line: &str) {
    let asking = ASKING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(question) = asking.as_deref() else {
        // Written by the lines' own thread (no write on the request's path).
        common::lines::print(
            common::lines::Stream::Stdout,
            format!("{line}\n").as_bytes(),
        );
        return;
    };
    common::lines::flush(common::lines::Stream::Stdout);
    let mut out = std::io::stdout().lock();
    // Back to the line's start, clear it, the line, the prompt again.
    let _ = write!(out, "\r\x1b[2K{line}\n{question} [y/n] ");
    let _ = out.flush();
}

/// The terminal reading single keys without echo (line editing off),
/// until dropped.
struct KeyMode {
    saved: Termios,
}

impl KeyMode {
    fn enter() -> Option<KeyMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut keys = saved.clone();
        keys.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        keys.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        keys.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &keys).ok()?;
        Some(KeyMode { saved })
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Asks in the terminal about pending exchange `id` (described by
/// `question`) until `deadline`, on a blocking thread.
pub fn ask(inspector: Arc<Inspector>, id: u64, question: String, deadline: Instant) {
    tokio::task::spawn_blocking(move || {
        let _turn = TERMINAL.lock().unwrap_or_else(|p| p.into_inner());
        if !inspector.is_pending(id) {
            return;
        }
        let answer = read_key(&inspector, id, &question, deadline);
        if let Some(approve) = answer {
            let decision = Decision {
                approve,
                by: "owner (terminal)".into(),
                remember: false,
            };
            // Decided elsewhere meanwhile: nothing to do.
            let _ = inspector.decide(id, decision);
        }
    });
}

/// `Some(true)` for y, `Some(false)` for n; `None` when the exchange was
/// decided elsewhere, the deadline passed or the terminal failed.
fn read_key(inspector: &Inspector, id: u64, question: &str, deadline: Instant) -> Option<bool> {
    {
        let mut asking = ASKING.lock().unwrap_or_else(|p| p.into_inner());
        // The lines handed over before go above the question.
        common::lines::flush(common::lines::Stream::Stdout);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{question} [y/n] ");
        let _ = out.flush();
        *asking = Some(question.to_owned());
    }
    let Some(keys) = KeyMode::enter() else {
        *ASKING.lock().unwrap_or_else(|p| p.into_inner()) = None;
        println!("(no terminal: decide on the page)");
        return None;
    };
    let answer = loop {
        if !inspector.is_pending(id) || Instant::now() >= deadline {
            break None;
        }
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('y' | 'Y') => break Some(true),
                    KeyCode::Char('n' | 'N') => break Some(false),
                    _ => {}
                },
                Ok(_) => {}
                Err(_) => break None,
            },
            Ok(false) => {}
            Err(_) => break None,
        }
    };
    drop(keys);
    let said = match answer {
        Some(true) => "approved",
        Some(false) => "denied",
        None => "(decided elsewhere or timed out)",
    };
    let mut asking = ASKING.lock().unwrap_or_else(|p| p.into_inner());
    *asking = None;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{said}");
    let _ = out.flush();
    answer
}
