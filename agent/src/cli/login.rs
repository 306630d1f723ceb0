//! `agent login`: signs this agent in at a relay (the device grant) and
//! keeps the credential.

use std::path::PathBuf;

use clap::Args;

use crate::account::credentials::{relay_key, Credential, Credentials};
use crate::account::relay_api::RelayApi;

#[derive(Args)]
pub struct LoginArgs {
    /// The relay, e.g. https://relay.example.com.
    #[arg(long)]
    relay: url::Url,
    /// Extra CA certificate to trust (the relay's <state-dir>/ca.pem when it
    /// uses --self-signed); remembered with the credential.
    #[arg(long, alias = "ca")]
    ca_cert: Option<PathBuf>,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let store = Credentials::default_location()?;
    let api = RelayApi::new(&args.relay, args.ca_cert.as_deref())?;
    let issued = crate::account::login::login(&api, |p| {
        println!("To sign this agent in, open {}", p.verification_uri);
        println!("and enter the code: {}", p.user_code);
        if let Some(complete) = &p.verification_uri_complete {
            println!("(or open {complete})");
        }
        println!(
            "Waiting for approval (the code expires in {})...",
            humantime::format_duration(p.expires_in)
        );
    })
    .await?;
    // Remembered as an absolute path: later commands run elsewhere.
    let ca_cert = args.ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p));
    store.save(
        &args.relay,
        Credential {
            token: issued.token,
            owner: issued.owner.clone(),
            token_id: issued.token_id.clone(),
            ca_cert,
            created_at: common::now(),
        },
    )?;
    println!(
        "signed in to {} as {} (credential {}, saved in {})",
        relay_key(&args.relay),
        issued.owner,
        issued.token_id,
        store.path().display()
    );
    Ok(())
}
