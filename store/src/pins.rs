//! Tool pins (rug-pull defence): per route and tool, the SHA-256 of the
//! definition approved (first seen, or approved by the owner), and the
//! definition seen since that differs from it, pending approval.

use crate::StoreError;

/// One pinned tool of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPin {
    pub tool: String,
    /// Hex SHA-256 of the approved definition's canonical JSON.
    pub hash: String,
    /// The approved definition (canonical JSON).
    pub definition: String,
    pub pinned_at: i64,
    /// A differing definition seen since, waiting for the owner's approval.
    pub pending: Option<PendingChange>,
}

/// A tool definition that differs from the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub hash: String,
    pub definition: String,
    pub since: i64,
}

/// A pin replaced by an approved definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repinned {
    pub tool: String,
    pub old_hash: String,
    pub new_hash: String,
}

/// Tool pins of routes.
#[async_trait::async_trait]
pub trait Pins: Send + Sync {
    /// Every pinned tool of a route, by name.
    async fn tool_pins(&self, route: &str) -> Result<Vec<ToolPin>, StoreError>;

    /// One pinned tool.
    async fn tool_pin(&self, route: &str, tool: &str) -> Result<Option<ToolPin>, StoreError>;

    /// Pins a tool seen for the first time. False: it was already pinned
    /// (by a concurrent request, or another relay process).
    async fn pin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError>;

    /// Records a definition that differs from the pin. True only the first
    /// time this definition is recorded (so a change is reported once).
    async fn note_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError>;

    /// Forgets the pending change of a tool that is back to its pinned
    /// definition. True if there was one.
    async fn clear_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
    ) -> Result<bool, StoreError>;

    /// The tools of a route whose calls wait for the owner's approval of a
    /// change, by name.
    async fn pending_tools(&self, route: &str) -> Result<Vec<String>, StoreError>;

    /// Pins a new definition the owner approved as it was seen. `None`: it
    /// was pinned already (nothing changed).
    async fn repin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<Option<Repinned>, StoreError>;

    /// Approves the pending changes of a route (of one tool, or all): their
    /// definitions become the pins.
    async fn approve_tool_changes(
        &self,
        route: &str,
        tool: Option<&str>,
    ) -> Result<Vec<Repinned>, StoreError>;
}
