//! The change feed: every write names what it changed, in the same
//! transaction as the write, so that every consumer (caches, the agent
//! disconnect loop) learns of it, whatever process wrote.

use tokio::sync::broadcast;

/// What a write changed. Consumers evict what they keep of it and read it
/// again; a [`Change::Reset`] means "forget everything".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An agent or client token was created, revoked or rotated.
    Token { id: String },
    /// A route was claimed or released.
    Route { name: String },
    /// A grant of a route was created or revoked (or went with its route).
    Grants { route: String },
    /// A tool pin of a route changed (pinned, changed, approved, released).
    Pins { route: String },
    /// A user was added or removed (their OAuth tokens revoked), or their
    /// groups changed.
    User { email: String },
    /// Every OAuth token of a family (one grant) was revoked.
    OAuthFamily { family: String },
    /// One OAuth token was revoked.
    OAuthToken { id: String },
    /// The consumer may have missed changes (it lagged, or the feed was
    /// interrupted): forget everything kept.
    Reset,
}

impl Change {
    /// The stored form: a kind and a key.
    pub fn to_row(&self) -> (&'static str, &str) {
        match self {
            Change::Token { id } => ("token", id),
            Change::Route { name } => ("route", name),
            Change::Grants { route } => ("grants", route),
            Change::Pins { route } => ("pins", route),
            Change::User { email } => ("user", email),
            Change::OAuthFamily { family } => ("oauth_family", family),
            Change::OAuthToken { id } => ("oauth_token", id),
            Change::Reset => ("reset", ""),
        }
    }

    /// The change of a stored row; an unknown kind (a newer writer) is a
    /// [`Change::Reset`].
    pub fn from_row(kind: &str, key: String) -> Change {
        match kind {
            "token" => Change::Token { id: key },
            "route" => Change::Route { name: key },
            "grants" => Change::Grants { route: key },
            "pins" => Change::Pins { route: key },
            "user" => Change::User { email: key },
            "oauth_family" => Change::OAuthFamily { family: key },
            "oauth_token" => Change::OAuthToken { id: key },
            _ => Change::Reset,
        }
    }
}

/// Changes as they come, for one consumer. Created by [`Changes::changes`];
/// it sees the changes committed after its creation.
pub struct ChangeFeed {
    rx: broadcast::Receiver<Change>,
}

impl ChangeFeed {
    /// A feed fed by `rx` (for backends).
    pub fn new(rx: broadcast::Receiver<Change>) -> ChangeFeed {
        ChangeFeed { rx }
    }

    /// The next change; [`Change::Reset`] if this consumer lagged behind.
    /// `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Change> {
        match self.rx.recv().await {
            Ok(c) => Some(c),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Reset),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A change already delivered, without waiting.
    pub fn try_next(&mut self) -> Option<Change> {
        match self.rx.try_recv() {
            Ok(c) => Some(c),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Change::Reset),
            Err(_) => None,
        }
    }
}

/// Called with each change a write through this handle committed, in the
/// writing task, before the write returns.
pub type ChangeHook = std::sync::Arc<dyn Fn(&Change) + Send + Sync>;

/// The feed of a store, and a cheap liveness check.
#[async_trait::async_trait]
pub trait Changes: Send + Sync {
    /// A feed of the changes committed from now on, by this process or any
    /// other writing the same store; delivered within about a second.
    fn changes(&self) -> ChangeFeed;

    /// Calls `hook` with every change as soon as this handle learns of it:
    /// a write through this handle before the write returns, another's when
    /// the feed reads it (at the latest in [`Changes::fresh`]). A cache in
    /// front of the store forgets there what changed.
    fn on_change(&self, hook: ChangeHook);

    /// Brings the hooks up to date with every change committed before this
    /// call, as cheaply as the backend can prove it (SQLite: a
    /// `data_version` that has not moved; PostgreSQL: its listener's latest
    /// read, at most [`Changes::freshness_bound`] old). True: what the
    /// hooks' caches keep may be used; false: read through.
    fn fresh(&self) -> bool;

    /// [`Changes::fresh`], and if it is false while the backend's follower
    /// of the changes is connected but late (a slow machine), waits up to
    /// `wait` for its next proof: one read of the changes answers every
    /// request that waits, instead of each reading the database. False at
    /// once when there is no follower to wait for (it is reconnecting).
    async fn fresh_within(&self, wait: std::time::Duration) -> bool {
        let _ = wait;
        self.fresh()
    }

    /// How far behind a true [`Changes::fresh`] may be: every change
    /// committed at least this long before `fresh` returned true has reached
    /// the hooks. Zero (SQLite): every change committed before the call.
    fn freshness_bound(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), crate::StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_consumer_that_lags_is_told_to_forget_everything() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = ChangeFeed::new(rx);
        for i in 0..5 {
            tx.send(Change::Token { id: i.to_string() }).expect("send");
        }
        assert_eq!(feed.next().await, Some(Change::Reset));
        assert_eq!(feed.next().await, Some(Change::Token { id: "3".into() }));
        assert_eq!(feed.try_next(), Some(Change::Token { id: "4".into() }));
        assert_eq!(feed.try_next(), None);
        drop(tx);
        assert_eq!(feed.next().await, None);
    }

    #[test]
    fn changes_are_stored_and_read_back_as_themselves() {
        for c in [
            Change::Token { id: "t".into() },
            Change::Route { name: "r".into() },
            Change::Grants { route: "r".into() },
            Change::Pins { route: "r".into() },
            Change::User { email: "e".into() },
            Change::OAuthFamily { family: "f".into() },
            Change::OAuthToken { id: "o".into() },
        ] {
            let (kind, key) = c.to_row();
            assert_eq!(Change::from_row(kind, key.to_owned()), c);
        }
        assert_eq!(Change::from_row("newer", "x".into()), Change::Reset);
    }
}
