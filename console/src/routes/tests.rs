//! The router without a cluster: its "Kubernetes API" is a socket that counts connections, so
//! a test can tell that a refused request asked nothing of anyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use diloco_contract::console::{CSRF_HEADER, SESSION_COOKIE, UPSTREAM_AUTH_FAILED_HEADER};
use tower::ServiceExt;

use super::*;
use crate::kube_auth::User;
use crate::settings::ConsoleSettings;

/// A router whose Kubernetes API is a listener that accepts and hangs up, and how many
/// connections it has had.
async fn console() -> (AppState, Router, Arc<AtomicUsize>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let state = AppState::new(client, ConsoleSettings::default());
    (state.clone(), router(state), connections)
}

fn signed_in(state: &AppState) -> (String, String) {
    let new = state
        .sessions
        .create(User {
            name: "alice".into(),
            uid: None,
            groups: vec![],
            extra: Default::default(),
        })
        .unwrap();
    (new.id, new.session.csrf_token)
}

fn post(path: &str, cookie: Option<&str>, csrf: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(id) = cookie {
        request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={id}"));
    }
    if let Some(csrf) = csrf {
        request = request.header(CSRF_HEADER, csrf);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

async fn error_of(response: Response) -> String {
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["error"].as_str().unwrap_or_default().to_string()
}

const SAVE_STATE: &str = "/api/servers/team-a/llm/control/save_state";

/// A POST with the session cookie but without the session's CSRF token (or with another):
/// 403, and nothing is asked of Kubernetes or of the coordinator.
#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let (state, app, connections) = console().await;
    let (id, csrf) = signed_in(&state);
    let (_, other_csrf) = signed_in(&state);
    for presented in [None, Some(""), Some(other_csrf.as_str())] {
        let response = app
            .clone()
            .oneshot(post(SAVE_STATE, Some(&id), presented, "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{presented:?}");
        assert!(
            response
                .headers()
                .get(UPSTREAM_AUTH_FAILED_HEADER)
                .is_none()
        );
        assert!(error_of(response).await.contains(CSRF_HEADER));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // With the right token the request goes on (and reaches the "API server").
    let response = app
        .oneshot(post(SAVE_STATE, Some(&id), Some(&csrf), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(connections.load(Ordering::SeqCst) > 0);
}

/// An action outside the allowlist is a 400 naming the allowed ones, before any request.
#[tokio::test]
async fn an_action_outside_the_allowlist_is_a_400_and_nothing_is_sent() {
    let (state, app, connections) = console().await;
    let (id, csrf) = signed_in(&state);
    for action in ["rm_rf", "save_state/../shutdown", "SAVE_STATE", "status"] {
        let path = format!("/api/servers/team-a/llm/control/{action}");
        let response = app
            .clone()
            .oneshot(post(&path, Some(&id), Some(&csrf), "{}"))
            .await
            .unwrap();
        let status = response.status();
        // A path with more segments matches no route at all.
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{action}: {status}"
        );
        if status == StatusCode::BAD_REQUEST {
            assert!(error_of(response).await.contains("save_state, kick_worker"));
        }
    }
    // A body the action cannot take is refused as well, before anything is sent.
    let response = app
        .oneshot(post(
            "/api/servers/team-a/llm/control/update_num_workers",
            Some(&id),
            Some(&csrf),
            r#"{"num_workers": -1}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// No cookie, an unknown cookie or a malformed Authorization: 401 without the upstream tag,
/// so the page shows its login form.
#[tokio::test]
async fn an_unauthenticated_request_is_a_plain_401() {
    let (_, app, connections) = console().await;
    let requests = [
        Request::get("/api/servers").body(Body::empty()).unwrap(),
        Request::get("/api/session")
            .header(header::COOKIE, format!("{SESSION_COOKIE}=forged"))
            .body(Body::empty())
            .unwrap(),
        Request::get("/api/servers")
            .header(header::AUTHORIZATION, "Basic YWxpY2U6cHc=")
            .body(Body::empty())
            .unwrap(),
    ];
    for request in requests {
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response
                .headers()
                .get(UPSTREAM_AUTH_FAILED_HEADER)
                .is_none()
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_login_without_a_token_is_a_400_that_does_not_echo_the_body() {
    let (_, app, connections) = console().await;
    for body in [
        r#"{"token": "  "}"#,
        r#""secret-looking-token""#,
        "token=abc",
    ] {
        let response = app
            .clone()
            .oneshot(post("/api/login", None, None, body))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        assert!(!error_of(response).await.contains("secret-looking"));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_session_reply_carries_the_csrf_token_and_logout_ends_the_session() {
    let (state, app, _) = console().await;
    let (id, csrf) = signed_in(&state);
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/session")
                .header(header::COOKIE, format!("{SESSION_COOKIE}={id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let reply: diloco_contract::console::SessionReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (reply.user.as_str(), reply.csrf_token.as_str()),
        ("alice", csrf.as_str())
    );
    assert_eq!(reply.idle_timeout_seconds, 30 * 60);

    let response = app
        .oneshot(post("/api/logout", Some(&id), Some(&csrf), ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(state.sessions.touch(&id).is_none());
}

/// The page forbids inline script, other origins and framing; API replies are not stored.
#[tokio::test]
async fn replies_carry_the_security_headers() {
    let (_, app, _) = console().await;
    let page = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(!csp.contains("http"), "no remote origin: {csp}");
    assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
    let html = to_bytes(page.into_body(), usize::MAX).await.unwrap();
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert!(html.contains(r#"<script src="/console.js""#));
    assert!(!html.contains("<script>") && !html.contains("https://"));

    let api = app
        .oneshot(Request::get("/api/servers").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(api.headers()[header::CACHE_CONTROL], "no-store");
}
