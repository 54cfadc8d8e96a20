//! `status --live` against a stand-in console on loopback (the real console is tested with its
//! own crate): the kubeconfig's bearer token is what the console gets, and each refusal
//! (`x-upstream-auth-failed` or not, 502) reads as what it means, with its own exit code.

use std::path::Path;

use diloco_tests::LocalCluster;
use diloco_tests::service_accounts::service_account_kubeconfig;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{namespace_with_server, plugin, text};

/// A stand-in console on 127.0.0.1: answers each request with the next of `replies`
/// (status, tagged with `x-upstream-auth-failed: 1`, body) and sends each request's head on.
async fn stand_in_console(
    replies: Vec<(u16, bool, String)>,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (status, tagged, body) in replies {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = seen.send(String::from_utf8_lossy(&head).into_owned());
            let tag = if tagged {
                "x-upstream-auth-failed: 1\r\n"
            } else {
                ""
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n{tag}\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, heads)
}

/// A ServiceAccount that may `get` DiLoCoServers in `namespace`, and a kubeconfig with its
/// token (a bearer token, as the console needs).
async fn viewer_kubeconfig(
    client: &Client,
    namespace: &str,
    dir: &Path,
) -> (std::path::PathBuf, String) {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "viewer"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "dls-viewer"},
        "rules": [{"apiGroups": ["diloco.dev"], "resources": ["dilocoservers"], "verbs": ["get"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "dls-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dls-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let path = service_account_kubeconfig(client, namespace, "viewer", dir).await;
    let config: Value = serde_json::to_value(
        serde_norway::from_str::<serde_norway::Value>(&std::fs::read_to_string(&path).unwrap())
            .unwrap(),
    )
    .unwrap();
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    (path, token)
}

#[tokio::test]
async fn live_status_goes_through_the_console_and_explains_its_refusals() {
    let (client, namespace) = namespace_with_server("kdiloco-live").await;
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, token) = viewer_kubeconfig(&client, &namespace, dir.path()).await;

    // The admin's kubeconfig authenticates with a client certificate: no token to show.
    let output = plugin(
        LocalCluster::shared().kubeconfig(),
        &namespace,
        &[
            "status",
            "llm",
            "--live",
            "--console-url",
            "http://127.0.0.1:9",
        ],
    )
    .await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("needs a Kubernetes bearer token"),
        "{stderr}"
    );
    assert!(stderr.contains("kubectl create token"), "{stderr}");

    let status_body = live_status_body();
    let (url, mut heads) = stand_in_console(vec![
        (200, false, status_body),
        (
            401,
            true,
            r#"{"error":"upstream refused the client certificate","upstream_status":401}"#.into(),
        ),
        (403, false, r#"{"error":"forbidden"}"#.into()),
        (502, false, r#"{"error":"connection refused"}"#.into()),
    ])
    .await;
    let live = ["status", "llm", "--live", "--console-url", url.as_str()];

    let output = plugin(&kubeconfig, &namespace, &live).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("WORKER   HOSTNAME   STEPS/S   LAST HEARTBEAT"),
        "{stdout}"
    );
    assert!(stdout.contains("w0       gpu-a      3.25"), "{stdout}");
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("llm    <none>   40      1"),
        "{stdout}"
    );
    let head = heads.recv().await.unwrap();
    assert!(
        head.starts_with(&format!("GET /api/servers/{namespace}/llm/status HTTP/1.1")),
        "{head}"
    );
    assert!(
        head.contains(&format!("authorization: Bearer {token}")),
        "the console gets the kubeconfig's token"
    );

    let rotate = format!("kubectl diloco rotate-certificates llm -n {namespace}");
    let cases: [(i32, &[&str]); 3] = [
        (
            4,
            &[
                "refused the console's client certificate",
                "Secret llm-console-client-tls (CN diloco-console)",
                "Your own Kubernetes credential is fine",
                rotate.as_str(),
            ],
        ),
        (
            3,
            &["the console refused your Kubernetes credential (403: forbidden)"],
        ),
        (5, &["the console cannot reach the coordinator of"]),
    ];
    for (code, messages) in cases {
        let output = plugin(&kubeconfig, &namespace, &live).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        for message in messages {
            assert!(
                stderr.contains(message),
                "{message:?} missing from: {stderr}"
            );
        }
        assert!(!stdout.contains(&token) && !stderr.contains(&token));
    }
}

/// A coordinator `/status` body with one worker.
fn live_status_body() -> String {
    json!({
        "status": "running", "mode": "sync", "sync_round": 40, "num_workers": 1,
        "num_registered": 1,
        "workers": {"w0": {"hostname": "gpu-a", "registered_at": "2026-12-03T19:00:00Z",
            "last_heartbeat": "2026-12-03T19:59:55Z", "sync_round": 40,
            "last_sync_server_round": 39, "steps_per_second": 3.25, "output_dir": null,
            "stats": {}, "restored": false}},
        "pending_submissions": [], "waiting_for": [], "receiving": [],
        "started_at": "2026-12-03T19:00:00Z", "uptime_seconds": 3600.0,
        "heartbeat_timeout": 60, "sync_timeout": 600, "min_workers": 1,
        "outer_lr": 0.7, "outer_momentum": 0.9, "outer_optimizer": "SGD",
        "save_dir": null, "last_checkpoint_round": null, "parameters_initialized": true,
        "model_params": 10, "model_size_mb": 0.1, "last_outer_step_seconds": null,
        "last_publish_seconds": null, "device": "cpu",
        "aggregate_stats": {"total_tokens": 0.0, "total_steps": 0.0, "tok_per_sec": 0.0,
                            "train_loss": null, "eval_loss": null, "num_reporting": 0}
    })
    .to_string()
}
