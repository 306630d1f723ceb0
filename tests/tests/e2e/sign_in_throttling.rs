//! Sign-in throttling: wrong passwords on one CSRF token back the account
//! off (429 + `Retry-After`, at `/oauth/login` and `/device/login` alike),
//! one address's password checks are limited whatever the email, and a
//! flood of anonymous sign-in posts from many addresses is refused at once
//! when the few password checks are busy, so the relay's memory stays
//! bounded (argon2 takes ~19 MiB per check). The right password still
//! works: from another address, and for the account once its back-off is
//! over.

use std::net::IpAddr;
use std::time::Duration;

use e2e::browser::{add_user, encode, hidden, location, Browser};
use e2e::client::Answer;
use e2e::{rss_kib, RelayProc};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn addr(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("ip"))
}

fn retry_after(a: &Answer) -> u64 {
    a.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {}", a.text()))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

/// The sign-in page of an authorization request, in a fresh session.
async fn login_page(b: &mut Browser, relay: &RelayProc, client_id: &str) -> String {
    b.clear_cookie();
    let query = encode(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("resource", &relay.route_url("db")),
        ("scope", "mcp"),
    ]);
    let page = b.get(&format!("/oauth/authorize?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    page.text()
}

async fn sign_in(b: &mut Browser, page: &str, email: &str, password: &str) -> Answer {
    b.form(
        "/oauth/login",
        &[
            ("csrf", &hidden(page, "csrf")),
            ("request", &hidden(page, "request")),
            ("email", email),
            ("password", password),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_floods_get_429_and_the_relay_memory_stays_bounded() {
    let relay = RelayProc::start(&[]).await;
    add_user(&relay, EMAIL, PASSWORD);
    let mut b = Browser::new(&relay);
    let reg = b
        .post_json(
            "/oauth/register",
            &serde_json::json!({"client_name": "e2e", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(reg.status, 201, "{}", reg.text());
    let client_id = reg.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_owned();
    let pid = relay.proc.pid;
    let (idle_kib, _) = rss_kib(pid);

    // 1. Wrong passwords on one CSRF token: five are checked (401), then
    // the account backs off (and the address's budget runs out).
    let page = login_page(&mut b, &relay, &client_id).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let a = sign_in(&mut b, &page, EMAIL, "wrong password").await;
        statuses.push(a.status.as_u16());
        if a.status == 429 {
            assert!(retry_after(&a) >= 1);
        }
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429)),
        "{statuses:?}"
    );
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!((5..=12).contains(&checked), "{statuses:?}");

    // 2. The account counts failures from every address: wrong passwords
    // from another one drive its back-off up to 8 s or more...
    let mut other = Browser::from_address(&relay, addr("127.0.0.2"));
    let page2 = login_page(&mut other, &relay, &client_id).await;
    let mut wait = 0;
    for _ in 0..30 {
        let a = sign_in(&mut other, &page2, EMAIL, "wrong again").await;
        if a.status == 401 {
            continue;
        }
        assert_eq!(a.status, 429, "{}", a.text());
        assert!(
            a.text()
                .contains("Too many wrong passwords for this account"),
            "{}",
            a.text()
        );
        wait = retry_after(&a);
        if wait >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    }
    assert!(wait >= 8, "the back-off grew to {wait} s");
    // ... during which the right password waits too, at /oauth/login and at
    // /device/login alike.
    let a = sign_in(&mut other, &page2, EMAIL, PASSWORD).await;
    assert_eq!(a.status, 429, "{}", a.text());
    let wait = retry_after(&a);
    let mut device = Browser::from_address(&relay, addr("127.0.0.3"));
    let dpage = device.get("/device").await;
    assert_eq!(dpage.status, 200, "{}", dpage.text());
    let d = device
        .form(
            "/device/login",
            &[
                ("csrf", &hidden(&dpage.text(), "csrf")),
                ("user_code", ""),
                ("email", EMAIL),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(d.status, 429, "{}", d.text());
    assert!(retry_after(&d) >= 1);
    // After the back-off, the right password signs in.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let a = sign_in(&mut other, &page2, EMAIL, PASSWORD).await;
    assert_eq!(a.status, 303, "{}", a.text());
    assert!(
        location(&a).starts_with("/oauth/authorize?"),
        "{}",
        location(&a)
    );

    // 3. One address signing in as anyone: its budget of checks runs out
    // (unknown emails count like known ones).
    let mut one = Browser::from_address(&relay, addr("127.0.0.4"));
    let mut limited = None;
    for i in 0..20 {
        let page = login_page(&mut one, &relay, &client_id).await;
        let a = sign_in(&mut one, &page, &format!("nobody{i}@example.com"), "guess").await;
        assert!(matches!(a.status.as_u16(), 401 | 429), "{}", a.status);
        if a.status == 429 {
            limited = Some((i, a));
            break;
        }
    }
    let (after, a) = limited.expect("the address is limited");
    assert!(after >= 10, "limited after {after} checks");
    assert!(retry_after(&a) >= 1);
    assert!(
        a.text()
            .contains("Too many sign-in attempts from your network"),
        "{}",
        a.text()
    );

    // 4. A flood of anonymous sign-ins (a fresh session each, unknown
    // emails) from 64 addresses at once, 512 posts: the password checks
    // that are busy refuse at once, and memory stays bounded.
    let mut tasks = Vec::new();
    for n in 0..64u32 {
        let relay_url = relay.url();
        let mut b = Browser::from_address(&relay, addr(&format!("127.0.1.{}", n + 1)));
        let client_id = client_id.clone();
        let resource = relay.route_url("db");
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..8 {
                b.clear_cookie();
                let query = encode(&[
                    ("response_type", "code"),
                    ("client_id", &client_id),
                    ("redirect_uri", REDIRECT),
                    ("code_challenge", CHALLENGE),
                    ("code_challenge_method", "S256"),
                    ("resource", &resource),
                    ("scope", "mcp"),
                ]);
                let page = b.get(&format!("{relay_url}/oauth/authorize?{query}")).await;
                assert_eq!(page.status, 200, "{}", page.text());
                let page = page.text();
                let a = sign_in(&mut b, &page, &format!("flood{n}.{i}@example.com"), "x").await;
                let busy = a.text().contains("busy checking other sign-ins");
                seen.push((
                    a.status.as_u16(),
                    busy,
                    a.headers.contains_key("retry-after"),
                ));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("flood task"));
    }
    let (_, peak_kib) = rss_kib(pid);
    let (now_kib, _) = rss_kib(pid);
    let busy = all.iter().filter(|(s, busy, _)| *s == 429 && *busy).count();
    let checked = all.iter().filter(|(s, _, _)| *s == 401).count();
    eprintln!(
        "sign-in flood: {} posts, {checked} checked (401), {busy} refused as busy (429); \
         relay RSS idle {idle_kib} KiB, peak {peak_kib} KiB, after {now_kib} KiB",
        all.len()
    );
    assert!(
        all.iter().all(|(s, _, ra)| *s == 401 || (*s == 429 && *ra)),
        "only 401 or 429 with Retry-After: {all:?}"
    );
    assert!(busy > 0, "some posts found every check busy: {all:?}");
    assert!(checked > 0, "some posts were checked: {all:?}");
    assert!(
        peak_kib < idle_kib + 64 * 1024,
        "relay RSS peaked at {peak_kib} KiB, idle was {idle_kib} KiB"
    );

    // 5. Meanwhile, the right password works from an address that did not
    // flood.
    let mut fresh = Browser::from_address(&relay, addr("127.0.0.5"));
    let page = login_page(&mut fresh, &relay, &client_id).await;
    let a = sign_in(&mut fresh, &page, EMAIL, PASSWORD).await;
    assert_eq!(a.status, 303, "{}", a.text());
}
