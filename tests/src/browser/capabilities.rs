//! The session's capabilities: which Chromium, with which flags, and WebDriver's own timeouts.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::BrowserOptions;

/// Chromium's own bound on a navigation (and on a script, below).
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Non-loopback requests go to this proxy; nothing listens on the discard port.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// The session's capabilities: headless Chromium, isolated, with bounded timeouts.
pub(super) fn capabilities(binary: &Path, profile: &Path, options: &BrowserOptions) -> Value {
    let mut args = vec![
        "--headless=new".to_string(),
        // Chromium's sandbox refuses to run as root (make test and CI run as root) and needs
        // user namespaces that containers often lack; the only pages loaded are the tests' own,
        // from loopback, so the renderer sandbox would protect nothing here.
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        "--window-size=1280,900".to_string(),
        format!("--user-data-dir={}", profile.display()),
        // Nothing leaves the machine: no name but localhost resolves (the rules apply to IP
        // literals too, hence 127.0.0.1), and whatever is not loopback goes to a proxy that is
        // not there (loopback always bypasses proxies).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost".to_string(),
        format!("--proxy-server={DEAD_PROXY}"),
        "--disable-background-networking".to_string(),
        "--disable-component-update".to_string(),
        "--disable-sync".to_string(),
        "--disable-breakpad".to_string(),
        "--no-first-run".to_string(),
        "--no-default-browser-check".to_string(),
        // Containers often give /dev/shm 64 MiB, too little for a renderer; use /tmp instead.
        "--disable-dev-shm-usage".to_string(),
    ];
    args.extend(options.extra_args.iter().cloned());
    json!({
        "browserName": "chrome",
        "acceptInsecureCerts": options.accept_insecure_certs,
        "pageLoadStrategy": "normal",
        "timeouts": {
            "implicit": 0,
            "pageLoad": PAGE_LOAD_TIMEOUT.as_millis() as u64,
            "script": SCRIPT_TIMEOUT.as_millis() as u64,
        },
        "goog:chromeOptions": { "binary": binary, "args": args },
    })
}
