//! The pending upstream sign-ins.

use super::{col, pg, PostgresStore};
use crate::sign_ins::{PendingSignIn, Remembered, SignInBounds, SignIns};
use crate::token;
use crate::StoreError;

/// The first key of the transaction advisory locks that serialize the
/// sign-ins started from one address (the second is the address's hash).
const ADDRESS_LOCK: i32 = 0x5349_474e; // "SIGN"

#[async_trait::async_trait]
impl SignIns for PostgresStore {
    async fn remember_sign_in(
        &self,
        state: &str,
        pending: &PendingSignIn,
        bounds: SignInBounds,
    ) -> Result<Remembered, StoreError> {
        let hash = token::hash(state);
        let p = pending;
        let now = p.started_ms;
        let mut conn = self.conn().await?;
        let w = self.begin(&mut conn).await?;
        // Starts from one address, on any node, one at a time: its count
        // holds until the insert.
        w.tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&ADDRESS_LOCK, &p.address],
        )
        .await
        .map_err(pg)?;
        w.tx.execute(
            "DELETE FROM pending_sign_ins WHERE started_ms <= $1",
            &[&(now - bounds.ttl_ms)],
        )
        .await
        .map_err(pg)?;
        let keep = bounds.per_session.saturating_sub(1) as i64;
        w.tx.execute(
            "DELETE FROM pending_sign_ins WHERE session_hash = $1 AND state_hash NOT IN (
                 SELECT state_hash FROM pending_sign_ins WHERE session_hash = $1
                 ORDER BY started_ms DESC, state_hash DESC LIMIT $2)",
            &[&p.session_hash, &keep],
        )
        .await
        .map_err(pg)?;
        let r =
            w.tx.query_one(
                "SELECT count(*), min(started_ms) FROM pending_sign_ins WHERE address = $1",
                &[&p.address],
            )
            .await
            .map_err(pg)?;
        let of_address: i64 = col(&r, 0)?;
        let oldest: Option<i64> = col(&r, 1)?;
        if let Some(oldest_ms) = oldest.filter(|_| of_address >= bounds.per_address as i64) {
            self.commit(w).await?;
            return Ok(Remembered::AddressFull { oldest_ms });
        }
        let total: i64 = col(
            &w.tx
                .query_one("SELECT count(*) FROM pending_sign_ins", &[])
                .await
                .map_err(pg)?,
            0,
        )?;
        if total >= bounds.total as i64 {
            self.commit(w).await?;
            return Ok(Remembered::Full);
        }
        w.tx.execute(
            "INSERT INTO pending_sign_ins (state_hash, provider, session_hash, address,
                 verifier, nonce, back, started_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &hash,
                &p.provider,
                &p.session_hash,
                &p.address,
                &p.verifier,
                &p.nonce,
                &p.back,
                &p.started_ms,
            ],
        )
        .await
        .map_err(pg)?;
        self.commit(w).await?;
        Ok(Remembered::Kept)
    }

    async fn take_sign_in(
        &self,
        state: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<PendingSignIn>, StoreError> {
        let hash = token::hash(state);
        let conn = self.conn().await?;
        // One statement: of concurrent takes exactly one deletes the row.
        let row = conn
            .query_opt(
                "DELETE FROM pending_sign_ins WHERE state_hash = $1
                 RETURNING provider, session_hash, address, verifier, nonce, back, started_ms",
                &[&hash],
            )
            .await
            .map_err(pg)?;
        let Some(r) = row else {
            return Ok(None);
        };
        let p = PendingSignIn {
            provider: col(&r, 0)?,
            session_hash: col(&r, 1)?,
            address: col(&r, 2)?,
            verifier: col(&r, 3)?,
            nonce: col(&r, 4)?,
            back: col(&r, 5)?,
            started_ms: col(&r, 6)?,
        };
        Ok(Some(p).filter(|p| now_ms - p.started_ms < ttl_ms))
    }
}
