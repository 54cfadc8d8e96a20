//! The bulk plane: tensor paths on a listener of their own (here cleartext, no auth), the
//! control plane redirecting bulk paths to it only for authenticated callers, and workers
//! that discover it and never send their bearer token there.

use std::time::Duration;

use diloco_contract::api::{ErrorBody, StatusReply};
use diloco_tests::processes::{CoordinatorProcess, WorkerProcess, events};

#[tokio::test(flavor = "multi_thread")]
async fn a_cleartext_bulk_plane_serves_tensors_only_and_never_sees_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
    let token = format!("bulk-test-{}", std::process::id());
    std::fs::write(dir.path().join("tokens/token"), &token).unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "auth: {token_dir: tokens}\nbulk: {listen: '127.0.0.1:0'}\n",
    );
    let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());

    // Two workers train through it; they learn the bulk URL at /register.
    let token_file = dir.path().join("tokens/token");
    let workers: Vec<WorkerProcess> = ["a", "b"]
        .iter()
        .map(|id| {
            WorkerProcess::start(
                id,
                &[
                    "--url",
                    &url,
                    "--rounds",
                    "3",
                    "--token-file",
                    token_file.to_str().unwrap(),
                ],
            )
        })
        .collect();
    for worker in workers {
        let lines = worker.finish(Duration::from_secs(120));
        assert_eq!(events(&lines, "done").len(), 1, "{lines:?}");
    }

    // The control plane: bulk paths are elsewhere, said only to authenticated callers.
    let anonymous = http
        .get(format!("{url}/global_params"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().get("x-forgather-bulk-url").is_none());
    let redirected = http
        .get(format!("{url}/global_params"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 404);
    let bulk_url = redirected.headers()["x-forgather-bulk-url"]
        .to_str()
        .unwrap()
        .to_string();
    let body: ErrorBody = redirected.json().await.unwrap();
    assert_eq!(body.bulk_url.as_deref(), Some(bulk_url.as_str()));
    assert!(bulk_url.starts_with("http://127.0.0.1:"), "{bulk_url}");
    assert_ne!(bulk_url, url, "a listener of its own");
    let registered = http
        .post(format!("{url}/register"))
        .bearer_auth(&token)
        .body(r#"{"worker_id": "c"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    assert_eq!(
        registered.headers()["x-forgather-bulk-url"],
        bulk_url.as_str()
    );

    // The bulk plane: tensors without a token, nothing else.
    let params = http
        .get(format!("{bulk_url}/global_params"))
        .send()
        .await
        .unwrap();
    assert_eq!(params.status(), 200);
    // Three rounds each, but a worker that registers after the other's first contribution
    // joins a round later, so the run may take a fourth: compare with the coordinator's own.
    let status: StatusReply = http
        .get(format!("{url}/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let round = status.sync_round;
    assert!(round >= 3, "{status:?}");
    assert_eq!(
        params.headers()["x-diloco-round"],
        round.to_string().as_str()
    );
    assert_eq!(
        http.get(format!("{bulk_url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("POST", "/register"),
        ("POST", "/control/shutdown"),
    ] {
        let request = match method {
            "GET" => http.get(format!("{bulk_url}{path}")),
            _ => http.post(format!("{bulk_url}{path}")).body("{}"),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: ErrorBody = response.json().await.unwrap();
        assert!(
            body.error.contains("not served on the bulk plane"),
            "{body:?}"
        );
    }
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "still running after /control/shutdown on bulk"
    );

    // No worker brought its token to the cleartext bulk plane.
    let metrics = diloco_tests::metrics(&http, &url, Some(&token)).await;
    assert_eq!(metrics["diloco_bulk_cleartext_bearer_total"], 0.0);
    assert!(metrics["diloco_outer_steps_total"] >= 3.0);
    // … and the check does count one that does.
    let careless = http
        .get(format!("{bulk_url}/global_params"))
        .bearer_auth("not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(careless.status(), 200);
    let metrics = diloco_tests::metrics(&http, &url, Some(&token)).await;
    assert_eq!(metrics["diloco_bulk_cleartext_bearer_total"], 1.0);
}
