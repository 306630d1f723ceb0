//! `agent connect --view tui`: the live list of exchanges drawn in the
//! terminal (ratatui), for people without a browser. The same lines the
//! default view prints — time, caller, what, decision and rules, latency —
//! newest first, in a bounded list, with the route's status above. `q` or
//! Ctrl-C stops the agent (as Ctrl-C does in the default view). While it
//! is drawn on the terminal stderr also goes to, log lines are shown in its
//! log pane (the last few), not written over it ([`TuiView::log_writer`]).

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use tokio_util::sync::CancellationToken;

use crate::inspector::ring::Ring;
use crate::report::{Reporter, RequestLine};

/// How many exchanges the view keeps.
pub const KEPT: usize = 1000;
/// How many log lines its log pane shows.
pub const LOG_LINES: usize = 5;

/// One exchange as the view shows it.
#[derive(Debug, Clone)]
struct Line {
    time: SystemTime,
    request: RequestLine,
}

#[derive(Debug)]
struct State {
    status: String,
    notes: Vec<String>,
    lines: Ring<Line>,
    /// The last log lines, while the view is drawn.
    logs: VecDeque<String>,
    changed: bool,
}

/// What the view shows; the agent reports into it ([`Reporter`]).
#[derive(Debug, Clone)]
pub struct TuiView {
    state: Arc<Mutex<State>>,
    /// The view is on the terminal: log lines go to its pane.
    drawing: Arc<AtomicBool>,
}

impl Default for TuiView {
    fn default() -> Self {
        TuiView {
            state: Arc::new(Mutex::new(State {
                status: "connecting to the relay…".into(),
                notes: Vec::new(),
                lines: Ring::new(KEPT),
                logs: VecDeque::with_capacity(LOG_LINES),
                changed: true,
            })),
            drawing: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl TuiView {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A line shown under the status, e.g. the inspector's URL.
    /// Where log lines go (see [`common::logging::init_to`]): to stderr, or
    /// to the log pane while the view is drawn.
    pub fn log_writer(&self) -> impl for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync {
        let view = self.clone();
        move || LogLine {
            view: view.clone(),
            text: Vec::new(),
        }
    }

    fn log(&self, line: String) {
        let mut s = self.state();
        if s.logs.len() == LOG_LINES {
            s.logs.pop_front();
        }
        s.logs.push_back(line);
        s.changed = true;
    }

    pub fn note(&self, note: String) {
        let mut s = self.state();
        s.notes.push(note);
        s.changed = true;
    }

    fn set_status(&self, status: String) {
        let mut s = self.state();
        s.status = status;
        s.changed = true;
    }

    /// Draws the view into `frame`.
    pub fn draw(&self, frame: &mut Frame<'_>) {
        let s = self.state();
        let top_height = 3 + u16::try_from(s.notes.len()).unwrap_or(0);
        let log_height = match s.logs.len() {
            0 => 0,
            n => 2 + u16::try_from(n).unwrap_or(0),
        };
        let [top, list, logs, help] = Layout::vertical([
            Constraint::Length(top_height),
            Constraint::Min(3),
            Constraint::Length(log_height),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        if log_height > 0 {
            frame.render_widget(
                Paragraph::new(
                    s.logs
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
                .block(Block::bordered().title(" log ")),
                logs,
            );
        }
        frame.render_widget(
            Paragraph::new(
                std::iter::once(s.status.as_str())
                    .chain(s.notes.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
            .block(Block::bordered().title(" Drawbridge agent ")),
            top,
        );
        let header = Row::new(["Time", "Caller", "What", "Decision", "Latency"])
            .style(Style::default().add_modifier(Modifier::BOLD));
        let rows = s.lines.newest_first().map(|l| {
            let r = &l.request;
            let decision = if r.summary.allowed { "allow" } else { "DENY" };
            let rules = r.summary.policies.join(", ");
            let color = if r.summary.allowed {
                Color::Green
            } else {
                Color::Red
            };
            let time = humantime::format_rfc3339_seconds(l.time).to_string();
            Row::new([
                time.get(11..19).unwrap_or(&time).to_owned(),
                r.identity.clone(),
                r.summary.what.clone(),
                format!("{decision} ({rules})"),
                format!("{:.1?}", r.elapsed),
            ])
            .style(Style::default().fg(color))
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Percentage(25),
                Constraint::Percentage(35),
                Constraint::Percentage(25),
                Constraint::Length(10),
            ],
        )
        .header(header)
        .block(Block::bordered().title(format!(" exchanges ({}) ", s.lines.len())));
        frame.render_widget(table, list);
        frame.render_widget(Paragraph::new("q: stop the agent"), help);
    }

    /// Draws the view in the terminal until `stop` is cancelled, redrawing
    /// when something changed; `q` or Ctrl-C cancels `stop`. Runs on its own
    /// thread (terminal input blocks).
    pub fn run(&self, stop: CancellationToken) -> std::io::Result<()> {
        let mut terminal = ratatui::try_init()?;
        self.drawing.store(true, Ordering::SeqCst);
        let result = (|| {
            while !stop.is_cancelled() {
                let redraw = std::mem::take(&mut self.state().changed);
                if redraw {
                    terminal.draw(|f| self.draw(f))?;
                }
                if event::poll(Duration::from_millis(100))? {
                    match event::read()? {
                        Event::Key(k) if k.kind == KeyEventKind::Press => {
                            let ctrl_c = k.code == KeyCode::Char('c')
                                && k.modifiers.contains(KeyModifiers::CONTROL);
                            if k.code == KeyCode::Char('q') || ctrl_c {
                                stop.cancel();
                            }
                        }
                        Event::Resize(..) => self.state().changed = true,
                        _ => {}
                    }
                }
            }
            Ok(())
        })();
        self.drawing.store(false, Ordering::SeqCst);
        ratatui::try_restore()?;
        // The pane's last lines stay readable on the terminal (the agent's
        // goodbye among them); later ones are written there directly.
        let logs: Vec<String> = self.state().logs.drain(..).collect();
        let mut stderr = std::io::stderr().lock();
        for line in logs {
            let _ = writeln!(stderr, "{line}");
        }
        result
    }
}

/// One log event's text: to the log pane when written out while the view is
/// drawn, else to stderr.
struct LogLine {
    view: TuiView,
    text: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.text);
        if self.view.drawing.load(Ordering::SeqCst) {
            for line in String::from_utf8_lossy(&text).lines() {
                self.view.log(line.to_owned());
            }
        } else {
            let _ = std::io::stderr().write_all(&text);
        }
    }
}

impl Reporter for TuiView {
    fn live(&self, route: &str, url: &str, transport: tunnel::Transport) {
        self.set_status(format!("route {route} is live at {url} (via {transport})"));
    }

    fn reconnecting(&self, reason: &str, delay: Duration) {
        self.set_status(format!("{reason}; reconnecting in {delay:.1?}"));
    }

    fn request(&self, line: &RequestLine) {
        let mut s = self.state();
        s.lines.push_with(|_| Line {
            time: SystemTime::now(),
            request: line.clone(),
        });
        s.changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn draws_the_newest_exchange_first_within_its_bound() {
        let view = TuiView::default();
        view.live(
            "db",
            "https://relay.example/mcp/db",
            tunnel::Transport::Quic,
        );
        view.note("inspector: http://127.0.0.1:4040/?token=x".into());
        for i in 0..(KEPT + 5) {
            view.request(&RequestLine {
                request_id: format!("r{i}"),
                identity: "alice@example.com".into(),
                summary: Summary {
                    what: format!("tools/call q{i}"),
                    allowed: i % 2 == 0,
                    policies: vec!["owner".into()],
                },
                elapsed: Duration::from_millis(3),
            });
        }
        assert_eq!(view.state().lines.len(), KEPT);
        let mut terminal = Terminal::new(TestBackend::new(100, 12)).expect("terminal");
        terminal.draw(|f| view.draw(f)).expect("draw");
        let text: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(
            text.contains("route db is live at https://relay.example/mcp/db"),
            "{text}"
        );
        assert!(text.contains(&format!("exchanges ({KEPT})")), "{text}");
        assert!(text.contains("inspector: http://127.0.0.1:4040/"), "{text}");
        let newest = format!("tools/call q{}", KEPT + 4);
        let older = format!("tools/call q{}", KEPT + 3);
        let (a, b) = (text.find(&newest), text.find(&older));
        assert!(a.is_some() && b.is_some() && a < b, "newest first: {text}");
        assert!(
            text.contains("allow (owner)") && text.contains("DENY (owner)"),
            "{text}"
        );
        assert!(!text.contains("tools/call q0 "), "the oldest are gone");
    }
}
