//! A real browser for the relay's pages: Debian's headless Chromium, driven
//! over W3C WebDriver by `chromedriver` (loopback, plain HTTP) with the
//! `fantoccini` client. JavaScript is switched off, so whatever works here
//! works without script. Chromium gets a fresh profile in a temporary
//! directory; chromedriver and every Chromium process it started are killed
//! when the [`Chromium`] is dropped.
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver`; without them
//! [`Chromium::start`] fails with a message saying so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::procs::Proc;
use crate::TempDir;

/// How long a page may take to come (a loaded CI machine is slow).
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// How often a clashing port for chromedriver is retried.
const PORT_TRIES: usize = 5;

/// A headless Chromium session.
pub struct Chromium {
    pub client: Client,
    // Dropped after `client`: the driver's process group (Chromium too).
    _driver: Proc,
    _profile: TempDir,
}

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium refuses to run its sandbox as root.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port that was free a moment ago (chromedriver cannot be told port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Starts chromedriver on a free loopback port; returns it and its URL.
async fn start_driver(chromedriver: &Path) -> (Proc, String) {
    for _ in 0..PORT_TRIES {
        let port = free_port();
        let mut driver = Proc::spawn_group(
            "chromedriver",
            chromedriver,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            &[],
        );
        // On a port taken since, it says so and exits.
        if driver
            .try_wait_stdout("started successfully", Duration::from_secs(20))
            .await
            .is_some()
        {
            return (driver, format!("http://127.0.0.1:{port}"));
        }
        eprintln!(
            "chromedriver did not start on port {port} (retrying): {}",
            driver.stderr_text()
        );
    }
    panic!("chromedriver did not start in {PORT_TRIES} tries");
}

impl Chromium {
    /// Starts chromedriver and a headless Chromium with JavaScript off.
    /// Panics (the test fails) when either is not installed.
    pub async fn start() -> Chromium {
        Self::start_with(false).await
    }

    /// [`Chromium::start`] with JavaScript on (for a page that is a script,
    /// like the agent's inspector).
    pub async fn start_scripted() -> Chromium {
        Self::start_with(true).await
    }

    async fn start_with(javascript: bool) -> Chromium {
        let browser = on_path(&["chromium", "chromium-browser"]).unwrap_or_else(|| {
            panic!(
                "Chromium is not installed (no `chromium` on PATH): the browser tests need \
                 Debian's `chromium` and `chromium-driver` packages; scripts/test.sh installs them"
            )
        });
        let chromedriver = on_path(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed (no `chromedriver` on PATH): the browser tests \
                 need Debian's `chromium-driver` package; scripts/test.sh installs it"
            )
        });
        let profile = TempDir::new("chromium");
        let (driver, url) = start_driver(&chromedriver).await;
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-extensions".into(),
            "--window-size=1024,768".into(),
        ];
        if running_as_root() {
            args.push("--no-sandbox".into());
        }
        // 1: allowed, 2: blocked.
        let javascript = if javascript { 1 } else { 2 };
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            // The relay's certificate is self-signed.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": args,
                // No JavaScript (unless asked): the relay's pages must work
                // without it.
                "prefs": {"profile.managed_default_content_settings.javascript": javascript},
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let capabilities: Capabilities = capabilities;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session from chromedriver at {url} ({}): {e}; chromedriver's log:\n{}",
                    browser.display(),
                    driver.stderr_text()
                )
            });
        Chromium {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Where the browser is now.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// Waits (up to 30 s) until the browser is at a URL for which `done`
    /// holds (a click's navigation may still be under way); returns it.
    pub async fn wait_for_url(&self, what: &str, done: impl Fn(&url::Url) -> bool) -> url::Url {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let now = self.url().await;
            if done(&now) {
                return now;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the browser did not get to {what}; it is at {now}: {}",
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 30 s) for a page titled `title`.
    pub async fn wait_for_title(&self, title: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        while self.title().await != title {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no page {title:?} came; the browser is at {}: {}",
                    self.url().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's `<title>`.
    pub async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("a body")
            .text()
            .await
            .expect("body text")
    }

    /// Types `text` into the field `name`, as a person would.
    pub async fn type_into(&self, name: &str, text: &str) {
        let field = match self
            .client
            .find(Locator::Css(&format!("input[name=\"{name}\"]")))
            .await
        {
            Ok(f) => f,
            Err(e) => panic!("no field {name:?} on {}: {e}", self.url().await),
        };
        field.clear().await.expect("clear field");
        field.send_keys(text).await.expect("type");
    }

    /// Clicks the button labelled `label` and waits for what it loads.
    pub async fn click_button(&self, label: &str) {
        let buttons = self
            .client
            .find_all(Locator::Css("button"))
            .await
            .expect("buttons");
        for b in buttons {
            if b.text().await.expect("button label") == label {
                b.click().await.expect("click");
                return;
            }
        }
        panic!(
            "no button {label:?} on {}: {}",
            self.url().await,
            self.text().await
        );
    }

    /// Waits (up to 30 s) until the page's text contains `needle`; returns
    /// the text.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            // A page being replaced (a click's navigation) has no text yet.
            let text = self.try_text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no {needle:?} on {} within {PAGE_WAIT:?}: {text}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the page, or `None` while it is being replaced.
    async fn try_text(&self) -> Option<String> {
        let body = self.client.find(Locator::Css("body")).await.ok()?;
        body.text().await.ok()
    }

    /// Clicks the first element matching the CSS `selector`.
    pub async fn click(&self, selector: &str) {
        match self.client.find(Locator::Css(selector)).await {
            Ok(e) => e.click().await.expect("click"),
            Err(e) => panic!("no {selector:?} on {}: {e}", self.url().await),
        }
    }

    /// A PNG of the window as it is now.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("screenshot")
    }

    /// Ends the session (Chromium exits) before the driver is killed.
    pub async fn quit(self) {
        let Chromium {
            client,
            _driver,
            _profile,
        } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    }
}
