//! The sign-in, consent and error pages: server-rendered HTML, no script.

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Drawbridge</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}}\
label{{display:block;margin:.8rem 0 .2rem}}input[type=email],input[type=password],input[type=text]{{width:100%;padding:.4rem}}\
button{{margin:1rem .5rem 0 0;padding:.5rem 1rem}}.error{{color:#a00}}dt{{font-weight:600}}dd{{margin:0 0 .5rem}}</style>\
</head><body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title)
    )
}

/// The hidden fields every form carries: the CSRF token and the
/// authorization request being answered.
fn hidden(csrf: &str, request: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"request\" value=\"{}\">",
        escape(csrf),
        escape(request)
    )
}

/// How a person may sign in: the password form of local accounts, and
/// links to upstream identity providers.
pub struct SignInWays<'a> {
    pub passwords: bool,
    pub providers: &'a [crate::identity::upstream::ProviderLink],
}

/// A sign-in page's error message, if any.
fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default()
}

/// One "Sign in with …" link per upstream identity provider.
fn provider_links(providers: &[crate::identity::upstream::ProviderLink]) -> String {
    providers
        .iter()
        .map(|p| {
            format!(
                "<p><a class=\"provider\" href=\"{}\">{}</a></p>",
                escape(&p.href),
                escape(&p.label)
            )
        })
        .collect()
}

/// The sign-in page.
pub fn login(
    csrf: &str,
    request: &str,
    client: &str,
    route: &str,
    email: &str,
    error: Option<&str>,
    ways: &SignInWays<'_>,
) -> String {
    let error = error_line(error);
    let providers = provider_links(ways.providers);
    let form = if ways.passwords {
        format!(
            "<form method=\"post\" action=\"/oauth/login\">{hidden}\
<label for=\"email\">Email</label><input id=\"email\" type=\"email\" name=\"email\" value=\"{email}\" required autofocus>\
<label for=\"password\">Password</label><input id=\"password\" type=\"password\" name=\"password\" required>\
<button type=\"submit\">Sign in</button></form>",
            email = escape(email),
            hidden = hidden(csrf, request),
        )
    } else {
        String::new()
    };
    layout(
        "Sign in",
        &format!(
            "<p><strong>{client}</strong> wants to use the route <strong>{route}</strong>. \
Sign in to this relay first.</p>{error}{providers}{form}",
            client = escape(client),
            route = escape(route),
        ),
    )
}

/// What the consent page shows.
pub struct ConsentView<'a> {
    pub email: &'a str,
    pub client: &'a str,
    pub redirect_host: &'a str,
    pub route: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
}

/// The consent page.
pub fn consent(csrf: &str, request: &str, v: &ConsentView<'_>) -> String {
    layout(
        "Allow access?",
        &format!(
            "<p>Signed in as <strong>{email}</strong>.</p>\
<dl><dt>Application</dt><dd>{client}</dd>\
<dt>It will send you back to</dt><dd>{host}</dd>\
<dt>Route</dt><dd>{route} ({resource})</dd>\
<dt>Scopes</dt><dd>{scope}</dd></dl>\
<p>The application may call this route's tools as you, within the route's policy, \
until you revoke its access.</p>\
<form method=\"post\" action=\"/oauth/consent\">{hidden}\
<button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            email = escape(v.email),
            client = escape(v.client),
            host = escape(v.redirect_host),
            route = escape(v.route),
            resource = escape(v.resource),
            scope = super::scope::described(v.scope)
                .iter()
                .map(|(s, meaning)| format!("<code>{}</code>: {}", escape(s), escape(meaning)))
                .collect::<Vec<_>>()
                .join("<br>"),
            hidden = hidden(csrf, request),
        ),
    )
}

/// The user code field of the device pages.
fn user_code_field(user_code: &str) -> String {
    format!(
        "<label for=\"user_code\">Code shown by the agent</label>\
<input id=\"user_code\" type=\"text\" name=\"user_code\" value=\"{}\" required \
autocomplete=\"off\" autocapitalize=\"characters\" placeholder=\"XXXX-XXXX\">",
        escape(user_code)
    )
}

/// `/device`, signed out: sign in to approve an `agent login`.
pub fn device_login(
    csrf: &str,
    user_code: &str,
    email: &str,
    error: Option<&str>,
    ways: &SignInWays<'_>,
) -> String {
    let error = error_line(error);
    let providers = provider_links(ways.providers);
    let form = if ways.passwords {
        format!(
            "<form method=\"post\" action=\"/device/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{code}\
<label for=\"email\">Email</label><input id=\"email\" type=\"email\" name=\"email\" value=\"{email}\" required>\
<label for=\"password\">Password</label><input id=\"password\" type=\"password\" name=\"password\" required>\
<button type=\"submit\">Sign in</button></form>",
            csrf = escape(csrf),
            code = user_code_field(user_code),
            email = escape(email),
        )
    } else {
        String::new()
    };
    layout(
        "Sign in an agent",
        &format!(
            "<p>An agent (<code>agent login</code>) asks to act as you on this relay: \
to serve routes in your name and share them. Sign in to approve it.</p>{error}{providers}{form}"
        ),
    )
}

/// `/device`, signed in, without a (valid) code: enter it.
pub fn device_code(email: &str, user_code: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    layout(
        "Sign in an agent",
        &format!(
            "<p>Signed in as <strong>{email}</strong>. Enter the code the agent printed.</p>\
{error}<form method=\"get\" action=\"/device\">{code}\
<button type=\"submit\">Continue</button></form>",
            email = escape(email),
            code = user_code_field(user_code),
        ),
    )
}

/// `/device`, signed in, with a pending code: approve or deny.
pub fn device_confirm(csrf: &str, user_code: &str, email: &str) -> String {
    layout(
        "Approve this agent?",
        &format!(
            "<p>Signed in as <strong>{email}</strong>.</p>\
<dl><dt>Code</dt><dd>{code}</dd></dl>\
<p>Approve only if this is the code your own terminal shows. The agent gets a \
credential to serve routes as you and to share them, until you revoke it \
(<code>relay token revoke</code>).</p>\
<form method=\"post\" action=\"/device/approve\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
<button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            email = escape(email),
            code = escape(user_code),
            csrf = escape(csrf),
        ),
    )
}

/// A page that says how something ended.
pub fn notice(title: &str, message: &str) -> String {
    layout(title, &format!("<p>{}</p>", escape(message)))
}

/// An error in a request of an application that sends the browser back to
/// a web address the relay does not yet trust (RFC 9700 §4.11.2): shown,
/// with a link back that the person may follow, rather than a redirect.
pub fn error_with_way_back(message: &str, back: &str, host: &str) -> String {
    layout(
        "Cannot sign in to this application",
        &format!(
            "<p class=\"error\">{}</p><p>The relay did not send you back to {} on its own. \
If you started this sign-in yourself, you may <a href=\"{}\" rel=\"noreferrer\">return to {}</a> \
with the error.</p>",
            escape(message),
            escape(host),
            escape(back),
            escape(host)
        ),
    )
}

/// An error shown to the person (never a redirect to an unchecked URI).
pub fn error(title: &str, message: &str) -> String {
    layout(
        title,
        &format!("<p class=\"error\">{}</p>", escape(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        let page = login(
            "c\"srf",
            "a=1&b=<x>",
            "<script>alert(1)</script>",
            "db",
            "",
            Some("bad & worse"),
            &SignInWays {
                passwords: true,
                providers: &[crate::identity::upstream::ProviderLink {
                    href: "/oauth/upstream/oidc?csrf=1&request=<x>".into(),
                    label: "Sign in with <b>".into(),
                }],
            },
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("href=\"/oauth/upstream/oidc?csrf=1&amp;request=&lt;x&gt;\""));
        assert!(page.contains("Sign in with &lt;b&gt;"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("value=\"c&quot;srf\""));
        assert!(page.contains("value=\"a=1&amp;b=&lt;x&gt;\""));
        assert!(page.contains("bad &amp; worse"));
        assert!(!page.to_ascii_lowercase().contains("<script"));
    }
}
