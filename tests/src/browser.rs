//! A real headless Chromium for the console's browser tests, driven over the W3C WebDriver
//! protocol by talking to Debian's `chromedriver` directly (reqwest + serde_json, no WebDriver
//! crate). `scripts/bootstrap browser` installs `chromium` and `chromium-driver`; without them
//! [`Browser::start`] fails with a message naming it, so a test fails instead of skipping.
//!
//! ```ignore
//! let browser = Browser::start().await?;
//! browser.goto(&format!("http://{addr}/")).await?;
//! browser.type_into("#token", &token).await?;
//! browser.click("#login").await?;
//! browser.wait_for_text("#servers", "trainer-a", Duration::from_secs(10)).await?;
//! ```
//!
//! **Isolation.** Each browser has a fresh profile and HOME in a temporary directory and reaches
//! nothing beyond loopback: host names other than `localhost` resolve to nothing
//! (`--host-resolver-rules`), and every request that is not to loopback goes to a proxy on a
//! closed loopback port (`--proxy-server`; Chromium always bypasses proxies for loopback), so an
//! IP literal fails too. Component updates, background networking and crash uploads are off.
//! Dropping the [`Browser`] kills chromedriver and every Chromium process (their process
//! group, and the crash handler, which leaves it) and waits until they are gone.
//!
//! **Size.** The window is 1280x900; the viewport, and so a screenshot, is 1280x757 (new
//! headless keeps room for the window's toolbars).
//!
//! **Cookies over plain http on 127.0.0.1.** Chromium (checked with 156) treats
//! `http://127.0.0.1:<port>` as a potentially trustworthy origin: it stores a cookie set there
//! with `HttpOnly; Secure; SameSite=Strict`, sends it back on same-origin requests (`fetch`
//! included), reports it through [`Browser::cookies`] with `secure`, `httpOnly` and
//! `sameSite: "Strict"`, and keeps it out of `document.cookie`. So the console's tests can
//! serve plain http on 127.0.0.1 (the self-test `tests/tests/integration/browser.rs` pins
//! this). Use the IP, or `localhost`: other names do not resolve here.
//!
//! **https with a test CA**, should a test need it (both checked by hand with Chromium 156
//! against a self-signed P-256 certificate for 127.0.0.1): either start with
//! [`BrowserOptions::accept_insecure_certs`] (the `acceptInsecureCerts` capability: any
//! certificate is accepted, acceptable when the only server is the test's own on loopback), or
//! trust exactly the test server's key with
//! `extra_args: vec![format!("--ignore-certificate-errors-spki-list={spki}")]`, where `spki` is
//! the base64 of the SHA-256 of the certificate's DER SubjectPublicKeyInfo (rcgen:
//! `key_pair.public_key_der()`; openssl: `openssl x509 -pubkey -noout | openssl pkey -pubin
//! -outform der | openssl dgst -sha256 -binary | base64`). With neither, [`Browser::goto`]
//! succeeds but the page is Chromium's "Your connection is not private" interstitial.

mod base64;
mod capabilities;
mod driver_process;
mod element;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use driver_process::DriverProcess;
pub use element::Element;

/// The key under which WebDriver returns an element's reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Creating a session starts Chromium: seconds when idle, more on a busy machine.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// Each command's HTTP bound: above Chromium's page-load bound (see `capabilities`), so a slow
/// navigation ends in WebDriver's timeout error, which says more than ours.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(45);
const WAIT_POLL: Duration = Duration::from_millis(100);

/// How to start the browser; [`Default`] is what the tests need.
#[derive(Clone, Debug, Default)]
pub struct BrowserOptions {
    /// Accept any TLS certificate (the `acceptInsecureCerts` capability).
    pub accept_insecure_certs: bool,
    /// Further Chromium flags, after the harness's own.
    pub extra_args: Vec<String>,
}

/// How long starting took, for reports.
#[derive(Clone, Copy, Debug)]
pub struct StartupTimings {
    /// Until chromedriver listened.
    pub driver: Duration,
    /// Until the session (and so Chromium) was up.
    pub session: Duration,
}

/// Resident memory of the browser's live processes (chromedriver included).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// How many processes.
    pub processes: usize,
    /// Sum of their RSS (shared pages counted once per process).
    pub rss_kib: u64,
    /// Sum of their PSS (shared pages split between sharers): the honest total.
    pub pss_kib: u64,
}

/// A cookie as the browser stores it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The path it is scoped to.
    #[serde(default)]
    pub path: Option<String>,
    /// The domain it is scoped to.
    #[serde(default)]
    pub domain: Option<String>,
    /// Sent over secure origins only.
    #[serde(default)]
    pub secure: bool,
    /// Hidden from scripts.
    #[serde(default)]
    pub http_only: bool,
    /// `Strict`, `Lax` or `None`.
    #[serde(default)]
    pub same_site: Option<String>,
    /// Expiry (seconds since the epoch); none for a session cookie.
    #[serde(default)]
    pub expiry: Option<u64>,
}

/// A headless Chromium session; dropping it kills chromedriver and Chromium.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`, the prefix of every command.
    session: String,
    /// Start-up durations.
    pub startup: StartupTimings,
    driver: DriverProcess,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with the default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(BrowserOptions::default()).await
    }

    /// Starts chromedriver and a headless Chromium with `options`.
    pub async fn start_with(options: BrowserOptions) -> Result<Self> {
        let binary = driver_process::chromium_binary()?;
        let began = Instant::now();
        let driver = tokio::task::spawn_blocking(DriverProcess::start)
            .await
            .context("the chromedriver start task failed")??;
        let driver_ready = began.elapsed();
        diloco_client::coordinator_client::install_crypto_provider();
        let http = reqwest::Client::builder()
            // chromedriver is on loopback; a proxy from the environment must not intercept it.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("failed to build the WebDriver HTTP client")?;
        let capabilities = capabilities::capabilities(&binary, &driver.profile_dir(), &options);
        let base = format!("http://127.0.0.1:{}", driver.port);
        let reply = http
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": capabilities } }))
            .timeout(SESSION_TIMEOUT)
            .send()
            .await;
        let value = match reply {
            Ok(reply) => webdriver_value("new session", reply).await,
            Err(error) => Err(anyhow!("new session: {error}")),
        }
        .map_err(|error| anyhow!("{error:#}\nchromedriver's log ends:\n{}", driver.log_tail()))?;
        let id = value["sessionId"]
            .as_str()
            .with_context(|| format!("new session: no sessionId in {value}"))?;
        Ok(Self {
            http,
            session: format!("{base}/session/{id}"),
            startup: StartupTimings {
                driver: driver_ready,
                session: began.elapsed() - driver_ready,
            },
            driver,
        })
    }

    /// Sends one WebDriver command (`path` below the session) and returns its `value`.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.session))
            .timeout(COMMAND_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.with_context(|| what.clone())?;
        webdriver_value(&what, reply).await
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .with_context(|| format!("failed to load {url}"))?;
        Ok(())
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> Result<String> {
        let value = self.command(Method::GET, "/url", None).await?;
        value
            .as_str()
            .map(str::to_string)
            .context("the URL is not a string")
    }

    /// The first element matching the CSS selector `css`, or an error naming it.
    pub async fn find(&self, css: &str) -> Result<Element<'_>> {
        let value = self
            .command(Method::POST, "/element", Some(locator(css)))
            .await?;
        self.element(&value)
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let value = self
            .command(Method::POST, "/elements", Some(locator(css)))
            .await?;
        let list = value.as_array().context("find elements: not a list")?;
        list.iter().map(|item| self.element(item)).collect()
    }

    fn element(&self, value: &Value) -> Result<Element<'_>> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not an element reference: {value}"))?;
        Ok(Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> Result<usize> {
        Ok(self.find_all(css).await?.len())
    }

    /// Waits (polling, at most `timeout`) until an element matches `css`, and returns it.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.find_all(css).await?.into_iter().next() {
                return Ok(element);
            }
            if Instant::now() >= deadline {
                let url = self.current_url().await.unwrap_or_default();
                bail!("no element matched {css:?} within {timeout:?} on {url}");
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Waits (polling, at most `timeout`) until the first element matching `css` has a text
    /// containing `needle`, and returns that text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(element) = self.find_all(css).await?.into_iter().next() {
                // The element may be replaced between finding and reading it.
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return Ok(text);
                    }
                    last = Some(text);
                }
            }
            if Instant::now() >= deadline {
                bail!("{css:?} did not show {needle:?} within {timeout:?}; last text: {last:?}");
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        self.find(css).await?.text().await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.find(css).await?.click().await
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.find(css).await?.type_text(text).await
    }

    /// The attribute `name` of the first element matching `css` (none when absent).
    pub async fn attribute(&self, css: &str, name: &str) -> Result<Option<String>> {
        self.find(css).await?.attribute(name).await
    }

    /// Runs `script` (a function body: `return …`) with `args` in the page and returns its
    /// result as JSON; a returned Promise is awaited.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        let body = json!({ "script": script, "args": args });
        self.command(Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Writes a PNG of the viewport to `path` and returns its size in bytes.
    pub async fn screenshot(&self, path: &Path) -> Result<usize> {
        let value = self.command(Method::GET, "/screenshot", None).await?;
        let png = base64::decode(value.as_str().context("the screenshot is not a string")?)?;
        std::fs::write(path, &png)
            .with_context(|| format!("failed to write the screenshot to {}", path.display()))?;
        Ok(png.len())
    }

    /// The cookies the browser holds for the current page, with their flags.
    pub async fn cookies(&self) -> Result<Vec<Cookie>> {
        let value = self.command(Method::GET, "/cookie", None).await?;
        serde_json::from_value(value).context("the cookies are not a list of cookies")
    }

    /// Resident memory of chromedriver and Chromium right now.
    pub fn memory(&self) -> Memory {
        self.driver.memory()
    }

    /// The process group of chromedriver and its Chromium processes.
    pub fn process_group(&self) -> u32 {
        self.driver.process_group()
    }

    /// The temporary directory holding the profile and HOME; it appears in the command line
    /// of every Chromium process, so tests can look for leftovers with `pgrep -f`.
    pub fn directory(&self) -> PathBuf {
        self.driver.dir.path().to_path_buf()
    }
}

fn locator(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

/// The `value` of a WebDriver reply, or an error carrying its WebDriver error and message.
async fn webdriver_value(what: &str, reply: reqwest::Response) -> Result<Value> {
    let status = reply.status();
    let body: Value = reply
        .json()
        .await
        .with_context(|| format!("{what}: HTTP {status} with a body that is not JSON"))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        // The message, not the stack trace: the trace is addresses without symbols.
        let message = value["message"].as_str().unwrap_or_default().trim();
        bail!("{what}: WebDriver error {error:?} (HTTP {status}): {message}");
    }
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    Ok(value)
}
