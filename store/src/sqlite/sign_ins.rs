//! The pending upstream sign-ins.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::SqliteStore;
use crate::sign_ins::{PendingSignIn, Remembered, SignInBounds, SignIns};
use crate::token;
use crate::StoreError;

#[async_trait::async_trait]
impl SignIns for SqliteStore {
    async fn remember_sign_in(
        &self,
        state: &str,
        pending: &PendingSignIn,
        bounds: SignInBounds,
    ) -> Result<Remembered, StoreError> {
        let hash = token::hash(state);
        let p = pending.clone();
        self.run(move |c| {
            // A write lock from the start: the counts hold until the insert.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = p.started_ms;
            tx.execute(
                "DELETE FROM pending_sign_ins WHERE started_ms <= ?1",
                [now - bounds.ttl_ms],
            )?;
            let keep = bounds.per_session.saturating_sub(1) as i64;
            tx.execute(
                "DELETE FROM pending_sign_ins WHERE session_hash = ?1 AND state_hash NOT IN (
                     SELECT state_hash FROM pending_sign_ins WHERE session_hash = ?1
                     ORDER BY started_ms DESC, state_hash DESC LIMIT ?2)",
                params![p.session_hash, keep],
            )?;
            let (of_address, oldest): (i64, Option<i64>) = tx.query_row(
                "SELECT count(*), min(started_ms) FROM pending_sign_ins WHERE address = ?1",
                [&p.address],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if let Some(oldest_ms) = oldest.filter(|_| of_address >= bounds.per_address as i64) {
                tx.commit()?;
                return Ok(Remembered::AddressFull { oldest_ms });
            }
            let total: i64 =
                tx.query_row("SELECT count(*) FROM pending_sign_ins", [], |r| r.get(0))?;
            if total >= bounds.total as i64 {
                tx.commit()?;
                return Ok(Remembered::Full);
            }
            tx.execute(
                "INSERT INTO pending_sign_ins (state_hash, provider, session_hash, address,
                     verifier, nonce, back, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    hash,
                    p.provider,
                    p.session_hash,
                    p.address,
                    p.verifier,
                    p.nonce,
                    p.back,
                    p.started_ms
                ],
            )?;
            tx.commit()?;
            Ok(Remembered::Kept)
        })
        .await
    }

    async fn take_sign_in(
        &self,
        state: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<PendingSignIn>, StoreError> {
        let hash = token::hash(state);
        self.run(move |c| {
            let taken = c
                .query_row(
                    "DELETE FROM pending_sign_ins WHERE state_hash = ?1
                     RETURNING provider, session_hash, address, verifier, nonce, back, started_ms",
                    [&hash],
                    |r| {
                        Ok(PendingSignIn {
                            provider: r.get(0)?,
                            session_hash: r.get(1)?,
                            address: r.get(2)?,
                            verifier: r.get(3)?,
                            nonce: r.get(4)?,
                            back: r.get(5)?,
                            started_ms: r.get(6)?,
                        })
                    },
                )
                .optional()?;
            Ok(taken.filter(|p| now_ms - p.started_ms < ttl_ms))
        })
        .await
    }
}
