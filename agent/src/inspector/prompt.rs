//! The owner's one-key answer in the terminal (`--approve` with stdin and
//! stdout on a terminal, `--view line`): when no inspector page is open, a
//! pending exchange is put to the terminal — `y` approves, `n` denies —
//! one prompt at a time. A decision made meanwhile on the page or the API,
//! or the timeout, ends the prompt.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::crossterm::terminal;

use super::approval::Decision;
use super::Inspector;

/// One prompt at a time: the terminal has one keyboard.
static TERMINAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let mut out = std::io::stdout();
    let _ = write!(out, "{question} [y/n] ");
    let _ = out.flush();
    if terminal::enable_raw_mode().is_err() {
        let _ = writeln!(out, "(no terminal: decide on the page)");
        return None;
    }
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
    let _ = terminal::disable_raw_mode();
    let said = match answer {
        Some(true) => "approved",
        Some(false) => "denied",
        None => "(decided elsewhere or timed out)",
    };
    let _ = writeln!(out, "{said}");
    answer
}
