//! The real `kubectl-diloco` binary against the shared local control plane: `status` of a
//! DiLoCoServer whose status the test writes, `credentials` into a private directory without
//! ever printing the token, the rotation annotations, `console` without a console; and (`live`)
//! `status --live` against a stand-in console on loopback (the real console is tested with
//! its own crate) to pin the bearer token and the `x-upstream-auth-failed` messages.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use diloco_crds::{DiLoCoServer, ROTATE_CERTIFICATES_ANNOTATION, ROTATE_TOKEN_ANNOTATION};
use diloco_tests::kube_helpers::{apply_server, install_crd};
use diloco_tests::{LocalCluster, fresh_token, workspace_binary};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod live;

/// `kubectl-diloco --kubeconfig <kubeconfig> -n <namespace> <args>`, bounded in time.
pub(super) async fn plugin(kubeconfig: &Path, namespace: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(workspace_binary("kubectl-diloco"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace])
        .args(args)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("kubectl-diloco finished within 60 s")
        .expect("kubectl-diloco ran")
}

pub(super) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The admin client, the CRD installed, and a namespace of the test's own with a server `llm`.
pub(super) async fn namespace_with_server(prefix: &str) -> (Client, String) {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    let namespace = cluster.namespace(&client, prefix).await.unwrap();
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({}),
        json!({"image": "diloco-coordinator:test"}),
    )
    .await;
    (client, namespace)
}

async fn patch_status(client: &Client, namespace: &str, status: Value) {
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .patch_status(
            "llm",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("patch the DiLoCoServer's status");
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-12-03T19:56:00Z"})
}

#[tokio::test]
async fn status_shows_phase_round_conditions_and_credentials_from_the_resource() {
    let (client, namespace) = namespace_with_server("kdiloco-status").await;
    patch_status(
        &client,
        &namespace,
        json!({
            "phase": "Ready",
            "coordinator": {"round": 42, "workers": 3},
            "endpoints": {"control": "https://llm-control.example.svc:8512"},
            "conditions": [
                condition("Ready", "True", "Reconciled", "the coordinator is serving"),
                condition("CoordinatorAvailable", "False", "Unreachable", "dial tcp: refused"),
            ],
            "tokenRotation": {"rotatedAt": "2026-12-01T20:00:00Z"},
            "certificates": {"notAfter": "2027-03-03T20:00:00Z"},
        }),
    )
    .await;
    let kubeconfig = LocalCluster::shared().kubeconfig();

    let output = plugin(kubeconfig, &namespace, &["status", "llm"]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME   PHASE   ROUND   WORKERS   ENDPOINT"),
        "{stdout}"
    );
    assert!(
        lines[1]
            .starts_with("llm    Ready   42      3         https://llm-control.example.svc:8512"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CoordinatorAvailable   False    Unreachable   dial tcp: refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Ready                  True     Reconciled"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token rotated at      2026-12-01T20:00:00Z ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("certificate expires   2027-03-03T20:00:00Z ("),
        "{stdout}"
    );

    let output = plugin(kubeconfig, &namespace, &["status", "llm", "-o", "json"]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("-o json prints JSON");
    assert_eq!(json["namespace"], namespace.as_str());
    assert_eq!(json["phase"], "Ready");
    assert_eq!(json["round"], 42);
    assert_eq!(json["conditions"][1]["reason"], "Unreachable");
    assert!(json.get("live").is_none(), "{json}");

    // A name that does not exist: a clear message and a non-zero exit.
    let output = plugin(kubeconfig, &namespace, &["status", "nope"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("DiLoCoServer {namespace}/nope: not found")),
        "{stderr}"
    );
}

#[tokio::test]
async fn credentials_writes_a_private_bundle_and_never_prints_the_token() {
    let (client, namespace) = namespace_with_server("kdiloco-creds").await;
    let token = fresh_token("bundle-token");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "llm-worker-credentials"},
        "stringData": {
            "token": token,
            "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "endpoints.json": "{\"control\": \"https://llm-control.ml.svc:8512\", \"bulk\": null}\n",
            "unrelated": "not part of a bundle",
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let kubeconfig = LocalCluster::shared().kubeconfig();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("llm-creds");
    let out_arg = out.to_str().unwrap();

    // Before the operator published the bundle's name: refused, nothing created.
    let output = plugin(
        kubeconfig,
        &namespace,
        &["credentials", "llm", "--out", out_arg],
    )
    .await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no worker bundle yet"), "{stderr}");
    assert!(!out.exists());

    patch_status(
        &client,
        &namespace,
        json!({"secrets": {"workerCredentials": "llm-worker-credentials"}}),
    )
    .await;
    let output = plugin(
        kubeconfig,
        &namespace,
        &["credentials", "llm", "--out", out_arg],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token),
        "{stdout}\n{stderr}"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "endpoints.json", "token"]);
    for name in &names {
        let mode = std::fs::metadata(out.join(name)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    assert_eq!(std::fs::read_to_string(out.join("token")).unwrap(), token);
    assert!(
        stdout.contains(&format!("export DILOCO_CREDENTIALS_DIR={}", out.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("export DILOCO_TOKEN_FILE={}/token", out.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("export DILOCO_URL=https://llm-control.ml.svc:8512"),
        "{stdout}"
    );

    // Again into the same (now non-empty) directory: refused, the files untouched.
    std::fs::write(out.join("token"), "kept").unwrap();
    let output = plugin(
        kubeconfig,
        &namespace,
        &["credentials", "llm", "--out", out_arg],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert_eq!(std::fs::read_to_string(out.join("token")).unwrap(), "kept");

    // An empty directory others can read: refused, left empty.
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = plugin(
        kubeconfig,
        &namespace,
        &["credentials", "llm", "--out", shared.to_str().unwrap()],
    )
    .await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("accessible to group or others (mode 0755)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}

async fn annotation(client: &Client, namespace: &str, key: &str) -> Option<String> {
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .get("llm")
        .await
        .unwrap()
        .annotations()
        .get(key)
        .cloned()
}

#[tokio::test]
async fn rotations_set_a_new_annotation_value_each_time() {
    let (client, namespace) = namespace_with_server("kdiloco-rotate").await;
    let kubeconfig = LocalCluster::shared().kubeconfig();

    let output = plugin(kubeconfig, &namespace, &["rotate-token", "llm"]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("mint a new worker token"), "{stdout}");
    let first = annotation(&client, &namespace, ROTATE_TOKEN_ANNOTATION)
        .await
        .expect("rotate-token set its annotation");
    assert!(
        stdout.contains(&format!("Set {ROTATE_TOKEN_ANNOTATION}={first}")),
        "{stdout}"
    );

    let output = plugin(kubeconfig, &namespace, &["rotate-token", "llm"]).await;
    assert!(output.status.success(), "{:?}", text(&output));
    let second = annotation(&client, &namespace, ROTATE_TOKEN_ANNOTATION)
        .await
        .unwrap();
    assert_ne!(first, second, "a second rotation must be a new value");

    let output = plugin(kubeconfig, &namespace, &["rotate-certificates", "llm"]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("re-issue the leaf certificates"),
        "{stdout}"
    );
    let certificates = annotation(&client, &namespace, ROTATE_CERTIFICATES_ANNOTATION)
        .await
        .expect("rotate-certificates set its annotation");
    let output = plugin(kubeconfig, &namespace, &["rotate-certificates", "llm"]).await;
    assert!(output.status.success(), "{:?}", text(&output));
    assert_ne!(
        annotation(&client, &namespace, ROTATE_CERTIFICATES_ANNOTATION)
            .await
            .unwrap(),
        certificates
    );
    // The token rotation was left as it was.
    assert_eq!(
        annotation(&client, &namespace, ROTATE_TOKEN_ANNOTATION)
            .await
            .unwrap(),
        second
    );

    // No operator watches this namespace: --wait gives up after its timeout, saying so.
    let output = plugin(
        kubeconfig,
        &namespace,
        &["rotate-token", "llm", "--wait", "--timeout", "2s"],
    )
    .await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("has not handled diloco.dev/rotate-token="),
        "{stderr}"
    );
    assert!(stderr.contains("Is the operator running?"), "{stderr}");
}

#[tokio::test]
async fn console_without_a_console_service_says_so() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let empty = cluster
        .namespace(&client, "kdiloco-noconsole")
        .await
        .unwrap();
    let output = plugin(
        cluster.kubeconfig(),
        "default",
        &["console", "--console-namespace", &empty],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("no console Service in namespace {empty}")),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no URL is printed: {stdout}");
}
