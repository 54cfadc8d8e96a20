//! Bearer authentication and the audit log, on a real coordinator process: refusals, the
//! admin and worker roles, live token rotation, start-up rules, an unwritable audit log, audit
//! records bounded whatever a client sends, and that no token leaks into the audit log, the
//! logs or any response.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::fresh_token;
use diloco_tests::processes::{CoordinatorProcess, WorkerProcess, events};
use diloco_tests::tokens::TestTokens;
use serde_json::Value;

/// Replaces a file the way a Secret update does: the new content appears at once.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn initial_parameters(dir: &Path) {
    let layout = ModelLayout::new(vec![("w".into(), vec![4, 8])]).unwrap();
    let values: Vec<f32> = (0..32).map(|i| i as f32 / 8.0).collect();
    let blob = safetensors::encode(&layout, &values, WireDtype::Fp32, &BTreeMap::new());
    std::fs::write(dir.join("init.safetensors"), blob).unwrap();
}

/// Everything a response showed a client, for the leak check.
async fn call(http: &reqwest::Client, url: &str, auth: Option<&str>, seen: &mut String) -> u16 {
    let mut request = http.get(url);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    seen.push_str(&format!("{:?}", response.headers()));
    seen.push_str(&response.text().await.unwrap_or_default());
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_enforced_rotated_live_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let issued = TestTokens::write(dir.path());
    let tokens = issued.worker_dir.clone();
    let (first, second) = (issued.worker.clone(), fresh_token("second"));
    let (admin, wrong) = (issued.admin.clone(), fresh_token("wrong"));
    // No initial parameters: the worker's /init_params defines the model (authenticated too).
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        &format!(
            "auth: {{{}}}\n\
             audit: {{path: audit/audit.jsonl}}\n\
             limits: {{auth_failures_per_window: 1000}}\n",
            issued.auth_keys()
        ),
    );
    let http = diloco_tests::http_client();
    let url = coordinator.url.clone();
    let status_url = format!("{url}/status");
    let mut seen = String::new();

    assert_eq!(
        call(&http, &format!("{url}/health"), None, &mut seen).await,
        200
    );
    // Each refusal: 401, the challenge header and a JSON error saying why.
    for (auth, reason) in [
        (None, "missing bearer token"),
        (
            Some(format!("Basic {first}")),
            "malformed Authorization header",
        ),
        (
            Some(format!("Bearer {wrong}")),
            "invalid or expired bearer token",
        ),
        (
            Some(format!("Bearer {first}x")),
            "invalid or expired bearer token",
        ),
    ] {
        let mut request = http.post(format!("{url}/register"));
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request
            .body(r#"{"worker_id": "intruder"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"diloco\""
        );
        seen.push_str(&format!("{:?}", response.headers()));
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
        seen.push_str(&body.to_string());
    }
    let bearer = |token: &str| format!("Bearer {token}");
    assert_eq!(
        call(&http, &status_url, Some(&bearer(&first)), &mut seen).await,
        200
    );

    // Control actions need the admin token; the worker token gets 403 saying so.
    let control = |token: &str| {
        http.post(format!("{url}/control/update_num_workers"))
            .bearer_auth(token)
            .body(r#"{"num_workers": 1, "note": "not recorded"}"#)
            .send()
    };
    let refused = control(&first).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["kind"], "forbidden");
    assert!(
        body["error"].as_str().unwrap().contains("admin role"),
        "{body}"
    );
    assert_eq!(control(&admin).await.unwrap().status(), 200);
    // The admin token is a full credential elsewhere too.
    assert_eq!(
        call(&http, &status_url, Some(&bearer(&admin)), &mut seen).await,
        200
    );

    // A client-chosen path is recorded only up to a bound.
    let long_path = format!("{url}/{}", "p".repeat(20_000));
    assert_eq!(
        call(&http, &long_path, Some("Bearer nope"), &mut seen).await,
        401
    );

    // Rotation: the second token becomes current, the first stays valid for 4 more seconds.
    let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    replace(&tokens.join("previous-token"), &first);
    replace(&tokens.join("previous-valid-until"), &deadline.to_string());
    let rotated = Instant::now();
    replace(&tokens.join("token"), &second);
    while call(&http, &status_url, Some(&bearer(&second)), &mut seen).await != 200 {
        assert!(
            rotated.elapsed() < Duration::from_secs(5),
            "new token not live within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        call(&http, &status_url, Some(&bearer(&first)), &mut seen).await,
        200
    );
    while jiff::Timestamp::now() < deadline + jiff::SignedDuration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        call(&http, &status_url, Some(&bearer(&first)), &mut seen).await,
        401,
        "the previous token expires at previous-valid-until"
    );

    // A worker reading the token from the Secret's file trains through it.
    let token_file = tokens.join("token");
    let worker = WorkerProcess::start(
        "w1",
        &[
            "--url",
            &url,
            "--rounds",
            "2",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let lines = worker.finish(Duration::from_secs(120));
    assert_eq!(events(&lines, "done").len(), 1, "{lines:?}");
    seen.push_str(&format!("{lines:?}"));

    let failures =
        diloco_tests::metrics(&http, &url, Some(&second)).await["diloco_auth_failures_total"];
    assert!(failures >= 5.0, "{failures}");

    // The audit log has every kind of event, with who and from where.
    let audit_path = dir.path().join("audit/audit.jsonl");
    let audit_deadline = Instant::now() + Duration::from_secs(5);
    let records: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.iter().any(|r| r["event"] == "outer_step") || Instant::now() > audit_deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert!(of("auth_failure") >= 5, "{records:?}");
    assert!(of("credential_reload") >= 1, "{records:?}");
    assert!(of("outer_step") >= 2, "{records:?}");
    let register = records.iter().find(|r| r["event"] == "register").unwrap();
    assert_eq!(register["worker_id"], "w1");
    assert_eq!(register["caller"], "worker-token");
    assert_eq!(register["details"]["num_registered"], 1, "{register}");
    assert!(
        register["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let failure = records
        .iter()
        .find(|r| r["event"] == "auth_failure")
        .unwrap();
    assert_eq!(failure["details"]["path"], "/register");
    assert!(failure["ts"].as_str().unwrap().ends_with('Z'));
    let long = records
        .iter()
        .find(|r| {
            r["event"] == "auth_failure"
                && r["details"]["path"].as_str().unwrap().starts_with("/ppp")
        })
        .unwrap();
    let recorded = long["details"]["path"].as_str().unwrap();
    assert!(
        recorded.ends_with("…[truncated]") && recorded.chars().count() < 300,
        "{recorded}"
    );
    let control = records.iter().find(|r| r["event"] == "control").unwrap();
    assert_eq!(control["caller"], "admin-token");
    assert_eq!(
        control["details"],
        serde_json::json!({"action": "update_num_workers", "body": {"num_workers": 1}}),
        "only the allowlisted fields of a control body"
    );
    let forbidden = records.iter().find(|r| r["event"] == "forbidden").unwrap();
    assert_eq!(forbidden["caller"], "worker-token");

    // No token anywhere: audit log, coordinator log, worker output, HTTP responses.
    let everything = format!(
        "{}\n{}\n{seen}",
        std::fs::read_to_string(&audit_path).unwrap(),
        coordinator.log()
    );
    for secret in [&first, &second, &wrong, &admin] {
        assert!(!everything.contains(secret.as_str()), "{secret} leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_missing_auth_unreadable_tokens_and_cleartext_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("auth: {}\n", vec![], "authentication is required"),
        (
            "auth: {token_dir: nowhere}\n",
            vec![],
            "cannot load the bearer token from nowhere",
        ),
        (
            "auth: {disabled: true}\nlisten: 0.0.0.0:0\n",
            vec![],
            "not a loopback address",
        ),
        (
            "auth: {}\n",
            vec!["--token-dir", "empty"],
            "empty/token is empty",
        ),
        (
            "auth: {token_dir: good, admin_token_dir: nowhere}\n",
            vec![],
            "cannot load the admin bearer token from nowhere",
        ),
        (
            "auth: {token_dir: good, clients_file: broken.json}\n",
            vec![],
            "broken.json is not a valid clients file",
        ),
        (
            "auth: {token_dir: good, clients_file: missing.json}\n",
            vec![],
            "cannot load auth.clients_file",
        ),
        (
            "auth: {disabled: true}\nbulk: {listen: '0.0.0.0:0'}\n",
            vec![],
            "bulk.insecure: true",
        ),
    ];
    std::fs::create_dir_all(dir.path().join("good")).unwrap();
    std::fs::write(dir.path().join("good/token"), "t").unwrap();
    std::fs::write(dir.path().join("broken.json"), r#"{"clients": {}}"#).unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    std::fs::write(dir.path().join("empty/token"), "\n").unwrap();
    for (config, args, message) in cases {
        let (status, stderr) = CoordinatorProcess::refused(dir.path(), config, &args);
        assert!(!status.success(), "{config} {args:?} started");
        assert!(stderr.contains(message), "{config}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_audit_log_is_counted_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    initial_parameters(dir.path());
    // A regular file where the audit directory should be: every write fails.
    std::fs::write(dir.path().join("blocked"), "").unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "model: {initial_parameters: init.safetensors}\n\
         audit: {path: blocked/audit.jsonl}\n",
    );
    let http = diloco_tests::http_client();
    let url = &coordinator.url;
    for id in ["a", "b"] {
        let response = http
            .post(format!("{url}/register"))
            .body(format!(r#"{{"worker_id": "{id}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let failures =
            diloco_tests::metrics(&http, url, None).await["diloco_audit_write_failures_total"];
        if failures >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failures not counted: {failures}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(coordinator.log().contains("audit record not written"));
}
