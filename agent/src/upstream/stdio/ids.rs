//! JSON-RPC id rewriting between clients and a child.
//!
//! Every request written to a child carries an id the bridge chose (a
//! number unique for that child), and its progress token, if it has one, is
//! replaced by the same number. The child's answers are mapped back to the
//! client's own id and token. Clients sharing one child therefore cannot be
//! confused with each other, whatever ids they pick, and a response whose id
//! the bridge never sent is recognised as such.

use std::collections::HashMap;

use serde_json::Value;

use super::message;

/// A request in flight: the client's id and progress token, and where its
/// answer goes.
#[derive(Debug)]
pub struct Entry<T> {
    pub client_id: Value,
    pub client_token: Option<Value>,
    pub sink: T,
}

/// The requests in flight to one child.
#[derive(Debug)]
pub struct IdMap<T> {
    next: u64,
    pending: HashMap<u64, Entry<T>>,
}

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap {
            next: 1,
            pending: HashMap::new(),
        }
    }
}

impl<T> IdMap<T> {
    /// Records the request `msg` and rewrites its id (and progress token)
    /// to a fresh bridge id, which it returns.
    pub fn register(&mut self, msg: &mut Value, sink: T) -> u64 {
        let bridge_id = self.next;
        self.next += 1;
        let client_id = msg
            .get_mut("id")
            .map(|id| std::mem::replace(id, Value::from(bridge_id)))
            .unwrap_or(Value::Null);
        let client_token =
            message::progress_token_mut(msg).map(|t| std::mem::replace(t, Value::from(bridge_id)));
        self.pending.insert(
            bridge_id,
            Entry {
                client_id,
                client_token,
                sink,
            },
        );
        bridge_id
    }

    /// A response from the child: if its id is one the bridge sent and is
    /// still waiting, the entry is removed, the id restored to the client's,
    /// and the entry returned. Otherwise `None` (and `msg` is untouched).
    pub fn complete(&mut self, msg: &mut Value) -> Option<Entry<T>> {
        let bridge_id = msg.get("id").and_then(Value::as_u64)?;
        let entry = self.pending.remove(&bridge_id)?;
        if let Some(id) = msg.get_mut("id") {
            *id = entry.client_id.clone();
        }
        Some(entry)
    }

    /// A `notifications/progress` from the child: if its token is a bridge
    /// id still waiting, the client's token is restored and the entry
    /// returned.
    pub fn progress(&mut self, msg: &mut Value) -> Option<&Entry<T>> {
        let params = msg.get_mut("params")?;
        let token = params.get("progressToken")?.as_u64()?;
        let entry = self.pending.get(&token)?;
        let original = entry.client_token.clone()?;
        params["progressToken"] = original;
        Some(entry)
    }

    /// Forgets a request (its client went away).
    pub fn remove(&mut self, bridge_id: u64) -> Option<Entry<T>> {
        self.pending.remove(&bridge_id)
    }

    /// The bridge id of the one request in flight with the client id
    /// `client_id`, if exactly one has it.
    pub fn bridge_id_of(&self, client_id: &Value) -> Option<u64> {
        let mut found = self
            .pending
            .iter()
            .filter(|(_, e)| &e.client_id == client_id)
            .map(|(id, _)| *id);
        match (found.next(), found.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        }
    }

    /// The only request in flight, if there is exactly one.
    pub fn only(&self) -> Option<&Entry<T>> {
        let mut it = self.pending.values();
        match (it.next(), it.next()) {
            (Some(e), None) => Some(e),
            _ => None,
        }
    }

    /// Removes every request in flight (the child is gone).
    pub fn drain(&mut self) -> Vec<Entry<T>> {
        self.pending.drain().map(|(_, e)| e).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn two_clients_with_the_same_id_get_their_own_answers() {
        let mut map = IdMap::default();
        let mut a = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        let mut b = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        let ia = map.register(&mut a, "a");
        let ib = map.register(&mut b, "b");
        assert_ne!(ia, ib);
        assert_eq!(a["id"], json!(ia));
        assert_eq!(b["id"], json!(ib));
        assert_eq!(map.bridge_id_of(&json!(1)), None, "ambiguous");

        let mut rb = json!({"jsonrpc":"2.0","id":ib,"result":{}});
        let e = map.complete(&mut rb).expect("known id");
        assert_eq!((e.sink, rb["id"].clone()), ("b", json!(1)));
        assert_eq!(map.bridge_id_of(&json!(1)), Some(ia));
        assert_eq!(map.only().map(|e| e.sink), Some("a"));
        // The same answer twice is unknown the second time.
        let mut again = json!({"jsonrpc":"2.0","id":ib,"result":{}});
        assert!(map.complete(&mut again).is_none());
        assert_eq!(again["id"], json!(ib), "left untouched");
    }

    #[test]
    fn string_ids_and_unknown_ids() {
        let mut map = IdMap::default();
        let mut req = json!({"jsonrpc":"2.0","id":"req-7","method":"ping"});
        let id = map.register(&mut req, ());
        for unknown in [json!(id + 100), json!("req-7"), json!(null), json!(-1)] {
            let mut r = json!({"jsonrpc":"2.0","id":unknown,"result":{}});
            assert!(map.complete(&mut r).is_none(), "{unknown}");
        }
        let mut r = json!({"jsonrpc":"2.0","id":id,"error":{"code":1,"message":"x"}});
        assert!(map.complete(&mut r).is_some());
        assert_eq!(r["id"], json!("req-7"));
        assert!(map.is_empty());
    }

    #[test]
    fn progress_tokens_are_rewritten_and_restored() {
        let mut map = IdMap::default();
        let mut req = json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
            "params":{"name":"t","_meta":{"progressToken":"tok"}}});
        let id = map.register(&mut req, 'x');
        assert_eq!(req["params"]["_meta"]["progressToken"], json!(id));
        let mut p = json!({"jsonrpc":"2.0","method":"notifications/progress",
            "params":{"progressToken":id,"progress":1}});
        assert_eq!(map.progress(&mut p).map(|e| e.sink), Some('x'));
        assert_eq!(p["params"]["progressToken"], json!("tok"));
        let mut stray = json!({"jsonrpc":"2.0","method":"notifications/progress",
            "params":{"progressToken":"tok","progress":1}});
        assert!(map.progress(&mut stray).is_none());
        // A request without a token has none to restore.
        let mut plain = json!({"jsonrpc":"2.0","id":4,"method":"ping"});
        let pid = map.register(&mut plain, 'y');
        let mut p2 = json!({"jsonrpc":"2.0","method":"notifications/progress",
            "params":{"progressToken":pid}});
        assert!(map.progress(&mut p2).is_none());
        assert_eq!(map.drain().len(), 2);
        assert_eq!(map.len(), 0);
    }
}
