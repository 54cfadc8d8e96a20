//! The authentication layer in front of the real routers, in process: roles, certificates
//! against the clients list, the failure limiter's order and its scope per listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::{ClientAllowlist, Credentials, TokenStore};
use crate::config::Config;
use crate::engine::Coordinator;
use crate::tls::ClientCertificate;

use super::bearer_token;

const WORKER_TOKEN: &str = "worker-secret-1";
const ADMIN_TOKEN: &str = "admin-secret-1";

fn token_dir(root: &Path, name: &str, token: &str) -> Arc<TokenStore> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    Arc::new(TokenStore::load(&dir).unwrap())
}

struct Setup {
    coordinator: Arc<Coordinator>,
    credentials: Arc<Credentials>,
    _dir: tempfile::TempDir,
}

/// A coordinator (no model) allowing `failures` failed authentications per address, with a
/// worker and an admin token and a clients list of `site-a` (worker) and `ops` (admin).
fn setup(failures: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("clients.json");
    std::fs::write(
        &clients,
        r#"{"clients": [{"name": "site-a", "role": "worker"}, {"name": "ops", "role": "admin"}]}"#,
    )
    .unwrap();
    let credentials = Arc::new(Credentials {
        worker_tokens: token_dir(dir.path(), "tokens", WORKER_TOKEN),
        admin_tokens: Some(token_dir(dir.path(), "admin-tokens", ADMIN_TOKEN)),
        clients: Some(Arc::new(ClientAllowlist::load(&clients).unwrap())),
    });
    let mut config = Config::default();
    config.auth.token_dir = Some(dir.path().join("tokens"));
    config.limits.auth_failures_per_window = failures;
    let coordinator = Coordinator::new(config, tch::Device::Cpu, None, None);
    Setup {
        coordinator,
        credentials,
        _dir: dir,
    }
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Bearer(&'a str),
    Certificate(&'a str),
}

async fn send(
    router: &axum::Router,
    method: &str,
    path: &str,
    from: &str,
    who: As<'_>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let As::Bearer(token) = who {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = if method == "POST" {
        r#"{"num_workers": 1}"#
    } else {
        ""
    };
    let mut request = request.body(Body::from(body)).unwrap();
    let remote: SocketAddr = from.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(remote));
    if let As::Certificate(cn) = who {
        request.extensions_mut().insert(ClientCertificate {
            subject: format!("CN={cn}, O=test"),
            common_name: Some(cn.to_string()),
        });
    }
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        retry_after,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const CONTROL: &str = "/control/update_num_workers";

#[tokio::test]
async fn control_actions_need_the_admin_role() {
    let s = setup(100);
    let router = crate::http::router(s.coordinator.clone(), Some(s.credentials.clone()), None);
    let from = "10.0.0.1:5000";
    for worker in [As::Bearer(WORKER_TOKEN), As::Certificate("site-a")] {
        let (status, _, body) = send(&router, "POST", CONTROL, from, worker).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["kind"], "forbidden");
        assert!(
            body["error"].as_str().unwrap().contains("admin role"),
            "{body}"
        );
    }
    for admin in [As::Bearer(ADMIN_TOKEN), As::Certificate("ops")] {
        let (status, _, body) = send(&router, "POST", CONTROL, from, admin).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["num_workers"], 1);
    }
    // A worker may still do everything else.
    let (status, _, _) = send(&router, "GET", "/status", from, As::Bearer(WORKER_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.coordinator.metrics().forbidden.get(), 2);
}

#[tokio::test]
async fn a_certificate_authenticates_only_while_its_common_name_is_listed() {
    let s = setup(100);
    let router = crate::http::router(s.coordinator.clone(), Some(s.credentials.clone()), None);
    let (status, _, _) = send(
        &router,
        "GET",
        "/status",
        "10.0.0.1:1",
        As::Certificate("site-a"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = send(
        &router,
        "GET",
        "/status",
        "10.0.0.1:1",
        As::Certificate("site-b"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"],
        "client certificate CN=site-b is not an allowed client"
    );
}

/// A blocked address is refused before its token is compared: even the right token gets 429
/// until the window ends, while other addresses are unaffected.
#[tokio::test]
async fn a_blocked_address_is_refused_before_its_token_is_compared() {
    let s = setup(2);
    let router = crate::http::router(s.coordinator.clone(), Some(s.credentials.clone()), None);
    let (guesser, other) = ("10.0.0.9:4000", "10.0.0.10:4000");
    for guess in ["guess-1", "guess-2"] {
        let (status, _, _) = send(&router, "GET", "/status", guesser, As::Bearer(guess)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry_after, body) =
        send(&router, "GET", "/status", guesser, As::Bearer(WORKER_TOKEN)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    let (status, _, _) = send(&router, "GET", "/status", other, As::Bearer(WORKER_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = s.coordinator.metrics();
    assert_eq!(
        metrics.auth_failures.get(),
        2,
        "the blocked try was never compared"
    );
    assert_eq!(metrics.auth_rate_limited.get(), 1);
    // A certificate cannot be guessed: the address's block does not apply to it.
    let (status, _, _) = send(
        &router,
        "GET",
        "/status",
        guesser,
        As::Certificate("site-a"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// The control and bulk listeners count failures separately: guessing on one never blocks
/// an address on the other.
#[tokio::test]
async fn each_listener_has_a_failure_limiter_of_its_own() {
    let s = setup(1);
    let control = crate::http::router(s.coordinator.clone(), Some(s.credentials.clone()), None);
    let bulk = crate::http::bulk_router(s.coordinator.clone(), Some(s.credentials.clone()), true);
    let from = "192.0.2.1:1";
    let (status, _, _) = send(&control, "GET", "/status", from, As::Bearer("guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&control, "GET", "/status", from, As::Bearer("guess")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The bulk plane still compares this address's token: wrong is 401, right gets through
    // (to 503, as the model is not initialized).
    let (status, _, _) = send(&bulk, "GET", "/global_params", from, As::Bearer("guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(
        &bulk,
        "GET",
        "/global_params",
        "192.0.2.2:1",
        As::Bearer(WORKER_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

/// The scheme is read without regard to case (forgather's `bearer x`, `BEARER x`); another
/// scheme, or a scheme without a token, is no bearer token.
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    for header in ["Bearer tok", "bearer tok", "BEARER tok", "BeArEr  tok "] {
        assert_eq!(bearer_token(header), Some("tok"), "{header}");
    }
    for header in ["Basic tok", "Bearer", "Bearer ", "Bearertok", "tok"] {
        assert_eq!(bearer_token(header), None, "{header}");
    }
}
