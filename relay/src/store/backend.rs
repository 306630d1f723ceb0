//! Which backend holds the relay's state: the SQLite file of the state
//! directory (the default), or the PostgreSQL database `--database-url`
//! names (cargo feature `postgres`, on in the relay's own build).

use std::path::Path;

use crate::error::RelayError;
use crate::store::Store;

/// What `--database-url` must start with.
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Opens the state store: `url`'s PostgreSQL database if given (connecting
/// and migrating it), else the SQLite file in `state_dir`.
pub async fn open(state_dir: &Path, url: Option<&str>) -> Result<Store, RelayError> {
    let Some(url) = url else {
        return Store::open(state_dir);
    };
    // Never the URL itself in a message: it may hold a password.
    if !SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(RelayError::Config(
            "--database-url is not a PostgreSQL URL: expected \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]"
                .into(),
        ));
    }
    postgres(state_dir, url).await
}

#[cfg(feature = "postgres")]
async fn postgres(state_dir: &Path, url: &str) -> Result<Store, RelayError> {
    use std::sync::Arc;
    let backend = ::store::postgres::PostgresStore::connect(url).await?;
    tracing::info!(database = backend.shown(), "state store: PostgreSQL");
    Ok(Store::with_backend(
        Arc::new(backend),
        state_dir.to_path_buf(),
    ))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &Path, _: &str) -> Result<Store, RelayError> {
    Err(RelayError::Config(
        "--database-url: this relay was built without PostgreSQL support (cargo feature \
         `postgres` of drawbridge-relay, on by default; the agent's embedded relay never has it)"
            .into(),
    ))
}
