//! `agent share`: grants on the routes you own, at the relay you logged in to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::account::credentials::{relay_key, Credentials};
use crate::account::relay_api::RelayApi;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(false))]
pub struct ShareArgs {
    /// The route to share (with --with), or whose grants to list (with
    /// --list; default: all your routes).
    route: Option<String>,
    /// Who may use the route: an email, or @DOMAIN for everybody whose
    /// email is at that domain (exactly, not its subdomains).
    #[arg(long, value_name = "EMAIL|@DOMAIN", group = "what", requires = "route")]
    with: Option<String>,
    /// The only tools they may call, comma-separated. Default: every tool
    /// your own policy lets through.
    #[arg(
        long,
        value_name = "TOOL,...",
        value_delimiter = ',',
        requires = "with"
    )]
    tools: Option<Vec<String>>,
    /// The only resources they may read: URIs, comma-separated, where `*`
    /// matches any run of characters (`memo://*`; `*` alone: every
    /// resource). Default: none.
    #[arg(
        long,
        value_name = "URI-PATTERN,...",
        value_delimiter = ',',
        requires = "with"
    )]
    resources: Vec<String>,
    /// The only prompts they may get: names, comma-separated, `*` as in
    /// --resources. Default: none.
    #[arg(
        long,
        value_name = "NAME-PATTERN,...",
        value_delimiter = ',',
        requires = "with"
    )]
    prompts: Vec<String>,
    /// Only what `agent connect --read-only` lets through: the known read
    /// tools, with SQL that only reads.
    #[arg(long, requires = "with")]
    read_only: bool,
    /// How long the grant lasts, e.g. 7d or 12h. Default: until revoked.
    #[arg(long, value_parser = humantime::parse_duration, requires = "with")]
    expires: Option<Duration>,
    /// List your grants: ID, route, who, tools, resources, prompts,
    /// read-only, expiry.
    #[arg(long, group = "what")]
    list: bool,
    /// Revoke a grant (its ID from --list): the peer's next request is refused.
    #[arg(long, value_name = "ID", group = "what")]
    revoke: Option<String>,
    /// The relay. Default: the one you logged in to, if only one.
    #[arg(long)]
    relay: Option<url::Url>,
    /// Extra CA certificate to trust. Default: the one given to `agent login`.
    #[arg(long, alias = "ca")]
    ca_cert: Option<PathBuf>,
}

pub async fn share(args: ShareArgs) -> anyhow::Result<()> {
    let store = Credentials::default_location()?;
    let (relay_url, credential) = match &args.relay {
        Some(url) => {
            let c = store.get(url)?.with_context(|| {
                format!(
                    "no agent credential for {}: run `agent login --relay {}` first",
                    relay_key(url),
                    relay_key(url)
                )
            })?;
            (url.clone(), c)
        }
        None => {
            let mut all = store.all()?;
            match all.len() {
                0 => {
                    anyhow::bail!("not logged in to any relay: run `agent login --relay URL` first")
                }
                1 => {
                    let (key, c) = all.remove(0);
                    (url::Url::parse(&key).context("stored relay URL")?, c)
                }
                _ => anyhow::bail!(
                    "logged in to several relays ({}): pick one with --relay",
                    all.iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let ca = args.ca_cert.or(credential.ca_cert);
    let api = RelayApi::new(&relay_url, ca.as_deref())?;
    let token = &credential.token;
    if let Some(with) = &args.with {
        let route = args
            .route
            .as_deref()
            .context("which route? agent share ROUTE --with ...")?;
        let grant = crate::account::share::create(
            &api,
            token,
            &crate::account::share::Share {
                route,
                with,
                tools: args.tools.as_deref(),
                resources: &args.resources,
                prompts: &args.prompts,
                read_only: args.read_only,
                expires: args.expires,
            },
        )
        .await?;
        println!(
            "shared route {} with {} (grant {})",
            grant.route, grant.with, grant.id
        );
        println!("  {}", grant.line());
        println!("send them this URL to add to their MCP client (they sign in as themselves):");
        println!("  {}", grant.route_url);
        println!("revoke with: agent share --revoke {}", grant.id);
    } else if args.list {
        let grants = crate::account::share::list(&api, token, args.route.as_deref()).await?;
        if grants.is_empty() {
            println!("no grants");
        }
        for g in &grants {
            println!("{}", g.line());
        }
    } else if let Some(id) = &args.revoke {
        let route = crate::account::share::revoke(&api, token, id).await?;
        println!("revoked grant {id} on route {route}");
    }
    Ok(())
}
