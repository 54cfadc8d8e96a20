//! The generated `DiLoCoServer` CRD on a real kube-apiserver: it installs and becomes
//! Established, resources round-trip with the API server's defaults, and the schema and CEL
//! rules reject bad resources with readable messages.

use std::time::Duration;

use diloco_crds::{DiLoCoServer, crd};
use diloco_tests::LocalCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource};
use serde_json::json;

async fn client_with_crd_installed() -> Client {
    let client = LocalCluster::shared().client().await.unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("diloco-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD not Established within 30 s")
        .unwrap();
    client
}

/// The untyped API, so tests can send what the Rust types cannot express.
fn raw_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<DiLoCoServer>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Creates a raw `DiLoCoServer` and returns the API server's error message.
async fn rejection_message(client: &Client, namespace: &str, spec: serde_json::Value) -> String {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": DiLoCoServer::api_version(&()),
        "kind": DiLoCoServer::kind(&()),
        "metadata": {"name": "bad"},
        "spec": spec,
    }))
    .unwrap();
    match raw_api(client, namespace)
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid DiLoCoServer: {spec}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn minimal_resource_round_trips_with_server_side_defaults() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-roundtrip")
        .await
        .unwrap();
    let api = Api::<DiLoCoServer>::namespaced(client.clone(), &namespace);

    // Only the required field: everything else must come from the schema's defaults.
    let minimal: DiLoCoServer = serde_json::from_value(json!({
        "apiVersion": "diloco.dev/v1alpha1",
        "kind": "DiLoCoServer",
        "metadata": {"name": "llm"},
        "spec": {"image": "diloco-coordinator:test"},
    }))
    .unwrap();
    raw_api(&client, &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::to_value(&minimal).unwrap()).unwrap(),
        )
        .await
        .unwrap();

    let stored = raw_api(&client, &namespace).get("llm").await.unwrap();
    let spec = &stored.data["spec"];
    assert_eq!(spec["image"], "diloco-coordinator:test");
    assert_eq!(
        spec["control"]["port"], 8512,
        "defaulted by the API server: {spec}"
    );
    assert_eq!(
        spec["bulk"],
        json!({"enabled": true, "port": 8513, "tls": true, "auth": true,
               "service": {"type": "ClusterIP"}})
    );
    assert_eq!(spec["auth"]["rotationGracePeriod"], "15m", "{spec}");
    assert_eq!(spec["tls"]["certificateDuration"], "90d", "{spec}");
    assert_eq!(spec["networkPolicy"]["enabled"], true, "{spec}");
    assert_eq!(spec["audit"]["retainOnDelete"], true, "{spec}");
    assert_eq!(
        spec["training"]["outerOptimizer"],
        json!({"lr": 0.7, "momentum": 0.9, "nesterov": true})
    );

    let typed = api.get("llm").await.unwrap();
    assert_eq!(typed.spec.training.sync_every, 500);
    assert_eq!(typed.metadata.generation, Some(1));
}

#[tokio::test]
async fn schema_violations_are_rejected_with_their_messages() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-invalid")
        .await
        .unwrap();

    let message = rejection_message(&client, &namespace, json!({})).await;
    assert!(message.contains("spec.image: Required value"), "{message}");

    let message = rejection_message(
        &client,
        &namespace,
        json!({"image": "x", "control": {"port": 70000}}),
    )
    .await;
    assert!(message.contains("spec.control.port"), "{message}");
    assert!(message.contains("65535"), "{message}");

    let message = rejection_message(
        &client,
        &namespace,
        json!({"image": "x", "training": {"tokenBudget": -1}}),
    )
    .await;
    assert!(message.contains("spec.training.tokenBudget"), "{message}");

    let message =
        rejection_message(&client, &namespace, json!({"image": "x", "device": "tpu"})).await;
    assert!(
        message.contains(r#"spec.device: Unsupported value: "tpu""#),
        "{message}"
    );
}

#[tokio::test]
async fn cel_rules_are_enforced_by_the_api_server() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-cel")
        .await
        .unwrap();

    let message = rejection_message(
        &client,
        &namespace,
        json!({"image": "x", "bulk": {"tls": false, "auth": true}}),
    )
    .await;
    assert!(message.contains("bulk.auth requires bulk.tls"), "{message}");

    let message = rejection_message(
        &client,
        &namespace,
        json!({"image": "x", "bulk": {"port": 8512}}),
    )
    .await;
    assert!(
        message.contains("bulk.port must differ from control.port"),
        "{message}"
    );

    // The same ports are fine when the bulk plane is off.
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
        "metadata": {"name": "no-bulk"},
        "spec": {"image": "x", "bulk": {"enabled": false, "port": 8512}},
    }))
    .unwrap();
    raw_api(&client, &namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

#[tokio::test]
async fn cross_field_rules_name_the_fields_to_fix() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-cross")
        .await
        .unwrap();
    let cases = [
        (
            json!({"image": "x", "metrics": {"port": 8513}}),
            "metrics.port must differ from control.port and bulk.port",
        ),
        (
            json!({"image": "x", "tls": {"mode": "disabled"}}),
            "bulk.tls needs tls.mode operator or secret",
        ),
        (
            json!({"image": "x", "tls": {"mode": "secret"}}),
            "tls.secretName is required when tls.mode is secret",
        ),
        (
            json!({"image": "x", "auth": {"mode": "none", "tokenSecretRef": {"name": "t"}}}),
            "auth.tokenSecretRef needs auth.mode token",
        ),
        (
            json!({"image": "x", "training": {"minWorkers": 4, "expectedWorkers": 2}}),
            "expectedWorkers must be at least minWorkers",
        ),
        (
            json!({"image": "x", "auth": {"rotationGracePeriod": "15 minutes"}}),
            "spec.auth.rotationGracePeriod",
        ),
        (
            json!({"image": "x", "audit": {"existingClaim": "a", "storage": {"size": "1Gi"}}}),
            "audit.storage and audit.existingClaim are mutually exclusive",
        ),
        (
            json!({"image": "x", "model": {"claimName": "weights"}}),
            "model needs initialParameters, definition or both",
        ),
        (
            json!({"image": "x", "model": {"claimName": "weights", "initialParameters": "/etc/diloco"}}),
            "with model.claimName, initialParameters and definition are paths inside the claim",
        ),
        (
            json!({"image": "x", "model": {"definition": "model-def"}}),
            "without model.claimName, initialParameters and definition are absolute paths",
        ),
        (
            json!({"image": "x", "model": {"claimName": "weights", "definition": "def/../../token"}}),
            "model.definition must not contain .. segments",
        ),
        (
            json!({"image": "x", "model": {"claimName": "Not_A_Name", "definition": "def"}}),
            "model.claimName must be a Kubernetes object name",
        ),
    ];
    for (spec, expected) in cases {
        let message = rejection_message(&client, &namespace, spec.clone()).await;
        assert!(message.contains(expected), "{spec}: {message}");
    }
}

#[tokio::test]
async fn fields_a_running_training_depends_on_are_immutable() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-immutable")
        .await
        .unwrap();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
        "metadata": {"name": "llm"},
        "spec": {"image": "x", "audit": {"storage": {"size": "1Gi"}}},
    }))
    .unwrap();
    let api = raw_api(&client, &namespace);
    api.create(&PostParams::default(), &object).await.unwrap();
    let cases = [
        (
            json!({"training": {"mode": "async"}}),
            "training.mode is immutable",
        ),
        (
            json!({"training": {"numFragments": 2}}),
            "spec.training.numFragments",
        ),
        (
            json!({"audit": {"storage": {"size": "2Gi"}}}),
            "audit.storage is immutable",
        ),
    ];
    for (change, expected) in cases {
        let patch = json!({"spec": change});
        match api
            .patch("llm", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => panic!("the API server accepted {change}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status.message.contains(expected),
                    "{change}: {}",
                    status.message
                );
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    // Mutable fields still change.
    api.patch(
        "llm",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"training": {"syncEvery": 50}}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let client = client_with_crd_installed().await;
    let namespace = LocalCluster::shared()
        .namespace(&client, "crd-examples")
        .await
        .unwrap();
    let examples = diloco_tests::local_cluster::repo_root().join("examples");
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            manifests.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    // The GitOps example, as kustomize renders it.
    let rendered = std::process::Command::new("bash")
        .arg("-c")
        .arg("source scripts/common.sh && \"$KUBE_TOOLS_DIR/bin/kubectl\" kustomize examples/gitops-rotation")
        .current_dir(diloco_tests::local_cluster::repo_root())
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    manifests.push((
        "gitops-rotation".into(),
        String::from_utf8(rendered.stdout).unwrap(),
    ));
    assert!(manifests.len() >= 3, "{manifests:?}");
    for (name, text) in manifests {
        let object: DynamicObject = serde_norway::from_str(&text).unwrap();
        // Server-side dry run: full validation (schema, CEL), nothing stored.
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        raw_api(&client, &namespace)
            .create(&dry_run, &object)
            .await
            .unwrap_or_else(|e| panic!("{name} was refused: {e}"));
    }
}
