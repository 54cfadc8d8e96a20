//! The coordinator pod the operator builds, as a kubelet sees it: admitted under PodSecurity
//! `restricted`, Ready through its probes, its audit log on a claim bound by the default
//! StorageClass, and that log kept across a pod's deletion.

use std::path::PathBuf;
use std::time::Duration;

use diloco_tests::kube_helpers::wait_until;
use diloco_tests::node_pods::{find_ready_pod, ready_pod};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::{cluster_ip, coordinator_selector, example_spec, pod_name, ready_server};

/// The audit records in the file, one JSON value per line.
fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// One request with a token the coordinator does not know, from the host through the control
/// Service (so an `auth_failure` record is written); returns the status code.
async fn request_with_a_wrong_token(ca: &[u8], host: &str, address: std::net::Ipv4Addr) -> u16 {
    diloco_client::coordinator_client::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .resolve(host, std::net::SocketAddr::new(address.into(), 8512));
    for certificate in reqwest::Certificate::from_pem_bundle(ca).expect("the bundle's CA parses") {
        builder = builder.add_root_certificate(certificate);
    }
    let http = builder.build().expect("a client");
    http.get(format!("https://{host}:8512/status"))
        .bearer_auth("not-the-token-of-this-server")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_coordinator_pod_is_admitted_as_restricted_gets_ready_by_its_probes_and_its_audit_log_outlives_the_pod()
 {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let client = node.client().await.unwrap();
    let namespace = node
        .restricted_namespace(&client, "node-admission")
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    // The namespace enforces `restricted`: a pod that is not is refused at admission, so the
    // coordinator pod below got in because it complies, not because nothing is checked.
    let unrestricted: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unrestricted"},
        "spec": {"containers": [{"name": "c", "image": node.helper_image()}]},
    }))
    .unwrap();
    let refused = pods
        .create(&PostParams::default(), &unrestricted)
        .await
        .expect_err("a pod without a restricted security context is refused");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    node.install_operator(&namespace, "diloco-operator", 1);
    ready_server(
        node,
        &client,
        &namespace,
        "llm",
        example_spec(node, json!({})),
    )
    .await;
    let first = ready_pod(
        &client,
        &namespace,
        &coordinator_selector("llm"),
        Duration::from_secs(10),
    )
    .await;
    let container = &first.spec.as_ref().unwrap().containers[0];
    let readiness = container
        .readiness_probe
        .as_ref()
        .expect("a readiness probe");
    assert_eq!(
        readiness.http_get.as_ref().map(|g| g.path.as_deref()),
        Some(Some("/health")),
        "the kubelet set Ready from an HTTPS GET /health"
    );
    assert!(container.liveness_probe.is_some());
    let restarts = first
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .restart_count;
    assert_eq!(restarts, 0, "no probe failure restarted it");

    // The claim, bound by local-path (the default class), and the node directory behind it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let claim = claims.get("llm-state").await.unwrap();
    assert_eq!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("local-path"),
        "the default StorageClass filled in"
    );
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap();
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .unwrap();
    let volume_spec = volume.spec.unwrap();
    let directory: PathBuf = volume_spec
        .host_path
        .map(|h| h.path)
        .or(volume_spec.local.map(|l| l.path))
        .expect("a node-local volume")
        .into();
    assert!(
        directory.starts_with(node.dir()),
        "{directory:?} is the node's"
    );
    let audit = directory.join("audit.jsonl");

    let ca = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get("llm-worker-credentials")
        .await
        .unwrap()
        .data
        .unwrap()["ca.crt"]
        .0
        .clone();
    let host = format!("llm-control.{namespace}.svc");
    let forward = node.forward(&[(&cluster_ip(&client, &namespace, "llm-control").await, 8512)]);
    assert_eq!(
        request_with_a_wrong_token(&ca, &host, forward.address).await,
        401
    );
    let before = wait_until(
        Duration::from_secs(10),
        "an auth_failure record",
        || async {
            let records = audit_records(&audit);
            records
                .iter()
                .any(|r| r["event"] == "auth_failure")
                .then_some(records)
        },
    )
    .await;

    // A new pod, same claim: the records so far are still there and new ones follow them.
    pods.delete(&pod_name(&first), &DeleteParams::default())
        .await
        .unwrap();
    let second = wait_until(
        Duration::from_secs(120),
        "a replacement coordinator pod Ready",
        || async {
            let pod = find_ready_pod(&client, &namespace, &coordinator_selector("llm")).await?;
            (pod.metadata.uid != first.metadata.uid).then_some(pod)
        },
    )
    .await;
    let claim_of = |pod: &Pod| {
        pod.spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find_map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone())
            })
    };
    assert_eq!(claim_of(&second), Some("llm-state".to_string()));
    let still = claims.get("llm-state").await.unwrap();
    assert_eq!(
        still.spec.and_then(|s| s.volume_name),
        Some(volume_name),
        "the same volume"
    );

    // The Service follows the new pod once its endpoint is Ready in the EndpointSlice.
    wait_until(
        Duration::from_secs(30),
        "the new pod answering through the Service",
        || async {
            (request_with_a_wrong_token(&ca, &host, forward.address).await == 401).then_some(())
        },
    )
    .await;
    let after = wait_until(
        Duration::from_secs(10),
        "a record from the new pod",
        || async {
            let records = audit_records(&audit);
            (records.len() > before.len()).then_some(records)
        },
    )
    .await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "the earlier records were kept as they were"
    );
    assert_eq!(after.last().unwrap()["event"], "auth_failure");
}
