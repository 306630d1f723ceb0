//! `relay token`: agent and client tokens.

use clap::Subcommand;

use super::state_dir::{block_on, open, StoreArgs};
use crate::cli::admin;
use crate::store::token::TokenKind;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, alone, on stdout (it is shown only once).
    Create {
        #[command(flatten)]
        state: StoreArgs,
        /// The identity the token belongs to (an email address).
        #[arg(long)]
        owner: String,
        /// A name to recognise the token by in `relay token list`.
        #[arg(long)]
        name: Option<String>,
        /// A client access token (to call routes) instead of an agent token.
        #[arg(long)]
        client: bool,
        /// Expire after this long, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List every token: id, kind, status, owner, name, expiry, last use.
    List {
        #[command(flatten)]
        state: StoreArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token now. A connected agent using it is disconnected.
    Revoke {
        #[command(flatten)]
        state: StoreArgs,
        /// The token's id (from `relay token list`).
        id: String,
    },
    /// Issue a successor; the old token keeps working for the grace period.
    Rotate {
        #[command(flatten)]
        state: StoreArgs,
        /// The id of the token to replace (from `relay token list`).
        id: String,
        /// How long the old token stays valid.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Expiry of the new token, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
    },
}

/// Runs a `relay token` command.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            state,
            owner,
            name,
            client,
            expires,
        } => {
            let store = open(&state)?;
            let kind = if client {
                TokenKind::Client
            } else {
                TokenKind::Agent
            };
            let expires = expires.as_deref().map(admin::parse_duration).transpose()?;
            let (record, secret) = block_on(admin::create_token(
                &store,
                kind,
                &owner,
                name.as_deref(),
                expires,
            ))?;
            eprintln!(
                "created {} token {} for {} (shown once; store it now)",
                record.kind, record.id, record.owner
            );
            println!("{secret}");
            Ok(())
        }
        TokenCommand::List { state, json } => {
            let store = open(&state)?;
            let out = if json {
                block_on(admin::list_tokens_json(&store))?
            } else {
                block_on(admin::list_tokens(&store))?
            };
            print!("{out}");
            Ok(())
        }
        TokenCommand::Revoke { state, id } => {
            let store = open(&state)?;
            let record = block_on(store.revoke_token(&id))?;
            eprintln!(
                "revoked {} token {} of {}",
                record.kind, record.id, record.owner
            );
            Ok(())
        }
        TokenCommand::Rotate {
            state,
            id,
            grace,
            expires,
        } => {
            let store = open(&state)?;
            let grace = admin::parse_duration(&grace)?;
            let expires_at = expires
                .as_deref()
                .map(admin::parse_duration)
                .transpose()?
                .map(|d| crate::store::now() + d.as_secs() as i64);
            let (record, secret) = block_on(store.rotate_token(&id, grace, expires_at))?;
            eprintln!(
                "issued token {} to replace {id}; {id} stays valid for {}",
                record.id,
                humantime::format_duration(grace)
            );
            println!("{}", secret.expose());
            Ok(())
        }
    }
}
