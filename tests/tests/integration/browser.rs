//! The headless-browser harness (`diloco_tests::browser`) against a tiny page served here on
//! 127.0.0.1: what the console's browser tests rely on, pinned. Needs Debian's chromium and
//! chromium-driver (`scripts/bootstrap browser`, which `make test` runs); without them these
//! tests fail with a message naming it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use diloco_tests::browser::Browser;
use serde_json::json;

/// The session cookie's value: the JSON endpoint answers only when the browser sends it back.
const SESSION: &str = "s3ss10n-only-for-http";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness self-test</title></head>
<body>
  <h1>Self-test</h1>
  <ul><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
  <button id="greet" type="button">Greet</button>
  <p id="greeting">not yet</p>
  <form method="post" action="/submit">
    <input id="message" name="message" placeholder="your message">
    <button id="send" type="submit">Send</button>
  </form>
  <script>
    document.getElementById('greet').addEventListener('click', async () => {
      const reply = await fetch('/api/greeting');
      const body = await reply.json();
      document.getElementById('greeting').textContent =
        reply.ok ? body.greeting : 'refused: ' + reply.status;
    });
  </script>
</body></html>"#;

/// What the form delivered, as the server received it.
type Received = Arc<Mutex<Vec<String>>>;

#[derive(serde::Deserialize)]
struct Message {
    message: String,
}

/// Serves the page on 127.0.0.1 (a port picked now) and returns its base URL.
async fn serve_page(received: Received) -> String {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/greeting", get(greeting))
        .route("/submit", post(submit))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn page() -> impl IntoResponse {
    let session = format!("session={SESSION}; HttpOnly; Secure; SameSite=Strict; Path=/");
    // A cookie scripts may read, so "the session is not in document.cookie" cannot pass merely
    // because document.cookie is always empty.
    let visible = "theme=dark; SameSite=Strict; Path=/".to_string();
    // Appended: an array of headers would let the second Set-Cookie replace the first.
    (
        AppendHeaders([(header::SET_COOKIE, session), (header::SET_COOKIE, visible)]),
        Html(PAGE),
    )
}

async fn greeting(headers: HeaderMap) -> impl IntoResponse {
    let sent = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split("; "))
        .any(|cookie| cookie == format!("session={SESSION}"));
    if sent {
        (
            StatusCode::OK,
            Json(json!({ "greeting": "Hello from the server" })),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "no session" })),
        )
    }
}

async fn submit(State(received): State<Received>, Form(form): Form<Message>) -> Html<String> {
    received.lock().unwrap().push(form.message.clone());
    let shown: String = form
        .message
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ')
        .collect();
    Html(format!("<p id=\"received\">Received: {shown}</p>"))
}

async fn start_browser() -> Browser {
    Browser::start()
        .await
        .unwrap_or_else(|error| panic!("the headless browser did not start: {error:#}"))
}

#[tokio::test]
async fn a_page_runs_its_script_hides_the_httponly_cookie_from_it_and_posts_the_form() {
    let received = Received::default();
    let base = serve_page(received.clone()).await;
    let browser = start_browser().await;

    let began = Instant::now();
    browser.goto(&format!("{base}/")).await.unwrap();
    let page_load = began.elapsed();
    assert_eq!(browser.count("li.item").await.unwrap(), 3);
    let placeholder = browser.attribute("#message", "placeholder").await.unwrap();
    assert_eq!(placeholder.as_deref(), Some("your message"));
    assert_eq!(
        browser.attribute("#message", "data-none").await.unwrap(),
        None
    );
    assert_eq!(browser.text("#greeting").await.unwrap(), "not yet");

    // The click runs the page's fetch; the endpoint answers only to the session cookie, so the
    // new text also proves the browser sent the Secure cookie back over http on 127.0.0.1.
    browser.click("#greet").await.unwrap();
    let greeting = browser
        .wait_for_text("#greeting", "Hello", WAIT)
        .await
        .unwrap();
    assert_eq!(greeting, "Hello from the server");

    let cookies = browser.cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|cookie| cookie.name == "session")
        .unwrap_or_else(|| panic!("the browser did not store the session cookie: {cookies:?}"));
    assert_eq!(session.value, SESSION);
    assert!(session.http_only, "{session:?}");
    assert!(session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    let theme = cookies
        .iter()
        .find(|cookie| cookie.name == "theme")
        .unwrap();
    assert!(!theme.http_only && !theme.secure, "{theme:?}");
    let script_cookies = browser
        .execute("return document.cookie", &[])
        .await
        .unwrap();
    assert_eq!(script_cookies, json!("theme=dark"));
    let sum = browser
        .execute("return arguments[0] + arguments[1]", &[json!(2), json!(3)])
        .await
        .unwrap();
    assert_eq!(sum, json!(5));

    let screenshot = tempfile::tempdir().unwrap();
    let path = screenshot.path().join("page.png");
    let written = browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    assert_eq!(png.len(), written);
    assert!(png.len() > PNG_SIGNATURE.len(), "{} bytes", png.len());
    assert_eq!(&png[..8], PNG_SIGNATURE);
    // The IHDR chunk follows the signature: width and height, big-endian.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280, "the viewport follows --window-size");

    browser
        .type_into("#message", "hello from chromium")
        .await
        .unwrap();
    browser.click("#send").await.unwrap();
    let shown = browser
        .wait_for_text("#received", "Received", WAIT)
        .await
        .unwrap();
    assert_eq!(shown, "Received: hello from chromium");
    assert_eq!(*received.lock().unwrap(), ["hello from chromium"]);
    assert_eq!(
        browser.current_url().await.unwrap(),
        format!("{base}/submit")
    );

    let memory = browser.memory();
    println!(
        "browser: chromedriver listening after {:?}, session (Chromium up) after {:?} more, \
         page load {page_load:?}; screenshot {width}x{height}, {} bytes; memory: {} processes, \
         RSS {} MiB summed, PSS {} MiB",
        browser.startup.driver,
        browser.startup.session,
        png.len(),
        memory.processes,
        memory.rss_kib / 1024,
        memory.pss_kib / 1024,
    );
    assert!(memory.processes >= 2 && memory.rss_kib > 0, "{memory:?}");
}

#[tokio::test]
async fn the_browser_reaches_nothing_beyond_loopback_and_errors_carry_webdriver_messages() {
    let base = serve_page(Received::default()).await;
    let browser = start_browser().await;
    for outside in ["http://example.com/", "http://192.0.2.1/"] {
        let began = Instant::now();
        let error = browser.goto(outside).await.unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("net::ERR_"), "{outside}: {message}");
        assert!(message.contains("WebDriver error"), "{outside}: {message}");
        // Refused at once, not after a connection attempt timed out.
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{outside}: {began:?}"
        );
    }
    let port = base.rsplit(':').next().unwrap();
    browser
        .goto(&format!("http://localhost:{port}/"))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Self-test");

    let missing = browser.find("#no-such-element").await.err().unwrap();
    assert!(
        format!("{missing:#}").contains("no such element"),
        "{missing:#}"
    );
    let began = Instant::now();
    let waited = browser
        .wait_for("#no-such-element", Duration::from_millis(500))
        .await
        .err()
        .unwrap();
    assert!(
        format!("{waited:#}").contains("#no-such-element"),
        "{waited:#}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

/// The pids `pgrep ARGS` lists that are not zombies (a zombie runs nothing; init reaps it).
fn pgrep(args: &[&str]) -> Vec<String> {
    let output = std::process::Command::new("pgrep")
        .args(args)
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            matches!(state, Some(s) if s != "Z")
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn dropping_the_browser_leaves_no_chromedriver_or_chromium_running() {
    let base = serve_page(Received::default()).await;
    let browser = start_browser().await;
    browser.goto(&format!("{base}/")).await.unwrap();
    let group = browser.process_group().to_string();
    let directory = browser.directory();
    let directory = directory.to_str().unwrap();

    let running = pgrep(&["-g", &group]);
    let names: Vec<String> = running
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "chromedriver"), "{names:?}");
    assert!(
        names.iter().filter(|n| *n == "chromium").count() >= 2,
        "{names:?}"
    );
    assert!(
        !pgrep(&["-f", directory]).is_empty(),
        "no process names {directory}"
    );

    drop(browser);
    assert_eq!(
        pgrep(&["-g", &group]),
        Vec::<String>::new(),
        "process group {group}"
    );
    assert_eq!(
        pgrep(&["-f", directory]),
        Vec::<String>::new(),
        "{directory}"
    );
    assert!(
        !std::path::Path::new(directory).exists(),
        "{directory} was not removed"
    );
}
