//! The console's page in a real headless Chromium, against the real console (served
//! in-process), the real API server (TokenReview, SubjectAccessReview) and a real coordinator
//! with TLS that the console reaches with its own client certificate, while two workers train:
//! a ServiceAccount signs in by typing its token, sees the server in the list, watches the
//! round advance and the loss plot gain points, saves the state (the coordinator's audit log
//! names the console); a viewer without `patch` sees `save_state` refused and stays signed in;
//! and when the coordinator stops accepting the console's certificate (issue #94 of
//! forgather) the page shows "upstream authentication failed" inline, keeps the session and
//! does not go back to the sign-in form.
//!
//! With `DILOCO_SCREENSHOTS_DIR` set, the screenshots (`server-list.png`, `server-page.png`,
//! `upstream-auth-error.png`) go there (docs/console/ holds those of a real run); otherwise
//! into a temporary directory.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diloco_client::ClientConfig;
use diloco_client::coordinator_client::TokenSource;
use diloco_console::upstream::lookup_host;
use diloco_tests::LocalCluster;
use diloco_tests::browser::{Browser, BrowserOptions};
use diloco_tests::console_fixture::{
    clients, put_console_secret, replace, start_coordinator, user_with,
};
use diloco_tests::console_server::ConsoleServer;
use diloco_tests::kube_helpers::{apply_server, install_crd};
use diloco_tests::pki::TestCa;
use diloco_tests::reporting_worker::ReportingWorker;
use serde_json::{Value, json};

const IMAGE: &str = "ghcr.io/diloco-dev/diloco-coordinator:test";
/// What the page needs to show something: it polls every 2 s, the list every 5 s.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// Rounds advancing and points arriving while the workers train on a busy machine.
const TRAINING_WAIT: Duration = Duration::from_secs(90);
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Where the screenshots go, and the temporary directory that holds it when none is set.
fn screenshots_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("DILOCO_SCREENSHOTS_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            (dir, None)
        }
        None => {
            let temp = tempfile::tempdir().unwrap();
            (temp.path().to_path_buf(), Some(temp))
        }
    }
}

/// Takes a screenshot into `dir/name` and checks it is a PNG of some substance.
async fn screenshot(browser: &Browser, dir: &Path, name: &str) {
    let path = dir.join(name);
    let size = browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(PNG_SIGNATURE) && size > 10_000,
        "{name}: {size} bytes"
    );
}

/// Runs `script` in the page until it returns something other than `null` or `false`.
async fn wait_for_script(browser: &Browser, script: &str, timeout: Duration, what: &str) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let value = browser.execute(script, &[]).await.unwrap();
        if !matches!(value, Value::Null | Value::Bool(false)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which of the page's sections are shown.
async fn shown(browser: &Browser) -> Value {
    browser
        .execute(
            "return {login: !document.getElementById('login').hidden, \
                     list: !document.getElementById('server-list').hidden, \
                     server: !document.getElementById('server-page').hidden};",
            &[],
        )
        .await
        .unwrap()
}

/// `GET /api/session` from the page's own script: the status the console answers.
async fn session_status(browser: &Browser) -> u64 {
    let status = browser
        .execute(
            "return fetch('/api/session', {credentials: 'same-origin'}).then(r => r.status);",
            &[],
        )
        .await
        .unwrap();
    status.as_u64().unwrap()
}

/// Types `token` into the sign-in form and waits for the server list.
async fn sign_in(browser: &Browser, url: &str, token: &str) {
    browser.goto(&format!("{url}/")).await.unwrap();
    browser.wait_for("#login-token", PAGE_WAIT).await.unwrap();
    wait_for_script(
        browser,
        "return !document.getElementById('login').hidden;",
        PAGE_WAIT,
        "the sign-in form",
    )
    .await;
    browser.type_into("#login-token", token).await.unwrap();
    browser.click("#login-submit").await.unwrap();
    wait_for_script(
        browser,
        "return !document.getElementById('server-list').hidden;",
        PAGE_WAIT,
        "the server list after signing in",
    )
    .await;
}

/// Clicks the server's row in the list (redrawn every 5 s, so a click can miss a row just
/// replaced: tried again) and waits for the server page.
async fn open_server(browser: &Browser, row: &str) {
    browser.wait_for(row, PAGE_WAIT).await.unwrap();
    let deadline = Instant::now() + PAGE_WAIT;
    while let Err(error) = browser.click(row).await {
        assert!(Instant::now() < deadline, "clicking {row}: {error:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_script(
        browser,
        "return !document.getElementById('server-page').hidden;",
        PAGE_WAIT,
        "the server page",
    )
    .await;
}

/// The round the page shows, once it is a number.
async fn shown_round(browser: &Browser) -> u64 {
    let text = wait_for_script(
        browser,
        "const t = document.getElementById('round').textContent; \
         return /^[0-9]+$/.test(t) ? t : null;",
        PAGE_WAIT,
        "a round number in #round",
    )
    .await;
    text.as_str().unwrap().parse().unwrap()
}

/// Waits until the page shows a round above `after`; returns it.
async fn round_above(browser: &Browser, after: u64) -> u64 {
    let deadline = Instant::now() + TRAINING_WAIT;
    loop {
        let round = shown_round(browser).await;
        if round > after {
            return round;
        }
        assert!(Instant::now() < deadline, "#round stayed at {round}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the loss plot has more than `after` circles; returns how many.
async fn loss_points_above(browser: &Browser, after: usize) -> usize {
    let deadline = Instant::now() + TRAINING_WAIT;
    loop {
        let points = browser.count("#loss-plot circle").await.unwrap();
        if points > after {
            return points;
        }
        assert!(
            Instant::now() < deadline,
            "#loss-plot stayed at {points} points"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_signs_in_watches_training_acts_and_sees_upstream_auth_errors_inline() {
    let began = Instant::now();
    let (shots, _temp_shots) = screenshots_dir();
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    install_crd(&admin).await;
    let namespace = cluster.namespace(&admin, "console-browser").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("diloco test CA");
    let host = format!("llm-control.{namespace}.svc");
    let training = "training: {min_workers: 1, sync_every: 10, heartbeat_timeout_seconds: 20}";
    let (coordinator, tokens) = start_coordinator(dir.path(), &ca, &host, training);
    let coordinator_address: SocketAddr = coordinator.address().parse().unwrap();

    apply_server(
        &admin,
        &namespace,
        "llm",
        json!({}),
        json!({"image": IMAGE}),
    )
    .await;
    let console_pem = ca.client("diloco-console");
    put_console_secret(&admin, &namespace, "llm", &console_pem, &ca.cert_pem()).await;
    let operator_token = user_with(&admin, &namespace, "alice", &["get", "list", "patch"]).await;
    let viewer_token = user_with(&admin, &namespace, "bob", &["get", "list"]).await;
    let resolve = BTreeMap::from([(
        lookup_host(&namespace, "llm", "cluster.local"),
        coordinator_address,
    )]);
    let console = ConsoleServer::start(cluster.kubeconfig(), resolve);

    // Two workers train over TLS (the worker token), reporting their loss in heartbeats.
    let worker_config = || {
        let mut config =
            ClientConfig::new(format!("https://{host}:{}", coordinator_address.port()));
        config.token = TokenSource::Value(tokens.worker.clone());
        config.ca_file = Some(dir.path().join("pki/ca.pem"));
        config.resolve = vec![(host.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST))];
        config
    };
    let workers: Vec<ReportingWorker> = ["w0", "w1"]
        .into_iter()
        .map(|id| ReportingWorker::start(worker_config(), id, Duration::from_millis(40)))
        .collect();

    let browser = Browser::start_with(BrowserOptions {
        extra_args: vec!["--window-size=1280,2000".to_string()],
        ..BrowserOptions::default()
    })
    .await
    .unwrap_or_else(|error| panic!("the headless browser did not start: {error:#}"));
    let setup = began.elapsed();

    // 1. Sign in by typing a ServiceAccount token; the server list has the server's row.
    sign_in(&browser, &console.url, &operator_token).await;
    let row = format!("#servers tr[data-server=\"{namespace}/llm\"]");
    browser.wait_for(&row, PAGE_WAIT).await.unwrap();
    let whoami = browser.text("#whoami").await.unwrap();
    assert_eq!(whoami, format!("system:serviceaccount:{namespace}:alice"));
    assert!(browser.text(&row).await.unwrap().contains("llm"));
    let cookie = browser
        .cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == diloco_contract::console::SESSION_COOKIE)
        .expect("the session cookie is set");
    assert!(cookie.http_only && cookie.secure, "{cookie:?}");
    screenshot(&browser, &shots, "server-list.png").await;

    // 2. Open the server while the workers train: the round advances, the plot gains points.
    open_server(&browser, &row).await;
    let first_round = shown_round(&browser).await;
    let later_round = round_above(&browser, first_round).await;
    let first_points = loss_points_above(&browser, 0).await;
    let later_points = loss_points_above(&browser, first_points).await;
    browser
        .wait_for("#workers-table tr[data-worker=\"w1\"]", PAGE_WAIT)
        .await
        .unwrap();
    let watched = began.elapsed();

    // 3. save_state: the page shows the coordinator's answer; its audit log names the console.
    browser.click("#action-save_state").await.unwrap();
    let result = browser
        .wait_for_text("#action-result", "save_state: ", PAGE_WAIT)
        .await
        .unwrap();
    assert!(result.contains("\"ok\""), "{result}");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let saved_by_console = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|r| r["caller"] == "cert:diloco-console" && r.to_string().contains("save_state"));
    assert!(
        saved_by_console,
        "no save_state by cert:diloco-console in {audit}"
    );
    screenshot(&browser, &shots, "server-page.png").await;

    // 4. A viewer without patch: save_state refused by the console (403), shown, still signed in.
    browser.click("#logout").await.unwrap();
    wait_for_script(
        &browser,
        "return !document.getElementById('login').hidden;",
        PAGE_WAIT,
        "the sign-in form after signing out",
    )
    .await;
    sign_in(&browser, &console.url, &viewer_token).await;
    open_server(&browser, &row).await;
    shown_round(&browser).await;
    browser.click("#action-save_state").await.unwrap();
    let refused = browser
        .wait_for_text("#action-result", "refused (HTTP 403)", PAGE_WAIT)
        .await
        .unwrap();
    assert!(refused.contains("may not patch"), "{refused}");
    assert_eq!(
        shown(&browser).await,
        json!({"login": false, "list": false, "server": true})
    );
    assert_eq!(session_status(&browser).await, 200);
    let banner_hidden = browser
        .execute(
            "return document.getElementById('upstream-auth-error').hidden;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        banner_hidden,
        json!(true),
        "the console's own refusal is not upstream's"
    );

    // 5. Issue #94: the coordinator no longer lists the console; the page, reloaded, shows
    // the upstream refusal inline and stays where it is, signed in.
    browser.click("#logout").await.unwrap();
    sign_in(&browser, &console.url, &operator_token).await;
    let server_url = format!("{}/#/servers/{namespace}/llm", console.url);
    replace(&dir.path().join("clients.json"), &clients(None));
    // Fresh loads of the server's URL (from another document, so not a mere hash change)
    // until the coordinator, which rereads its clients file within a second, refuses…
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        browser.goto("about:blank").await.unwrap();
        browser.goto(&server_url).await.unwrap();
        let banner = browser
            .wait_for_text(
                "#upstream-auth-error",
                "upstream authentication failed",
                Duration::from_secs(5),
            )
            .await;
        match banner {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "{error:#}"),
        }
    }
    // … then open it once more: nothing from the coordinator, the refusal inline.
    browser.goto("about:blank").await.unwrap();
    browser.goto(&server_url).await.unwrap();
    let banner = browser
        .wait_for_text(
            "#upstream-auth-error",
            "upstream authentication failed",
            PAGE_WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        browser.text("#round").await.unwrap(),
        "–",
        "no status from upstream"
    );
    assert!(banner.contains("still valid"), "{banner}");
    assert_eq!(
        shown(&browser).await,
        json!({"login": false, "list": false, "server": true})
    );
    let displayed = browser
        .execute(
            "const e = document.getElementById('upstream-auth-error'); \
             return !e.hidden && e.getBoundingClientRect().height > 0;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(displayed, json!(true));
    assert_eq!(session_status(&browser).await, 200);
    assert_eq!(
        browser.current_url().await.unwrap(),
        server_url,
        "no redirect"
    );
    // And it stays so across the page's own polling.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        shown(&browser).await,
        json!({"login": false, "list": false, "server": true})
    );
    assert_eq!(browser.current_url().await.unwrap(), server_url);
    screenshot(&browser, &shots, "upstream-auth-error.png").await;

    // Nothing left running: the workers leave, the browser and console stop on drop.
    drop(browser);
    for worker in workers {
        let id = worker.worker_id.clone();
        let rounds = worker.stop(Duration::from_secs(60)).unwrap();
        assert!(rounds > 0, "{id} contributed to no round");
    }
    eprintln!(
        "console_browser: setup {setup:?}, watched rounds {first_round}->{later_round} and \
         loss points {first_points}->{later_points} by {watched:?}, total {:?}; screenshots in {}",
        began.elapsed(),
        shots.display()
    );
}
