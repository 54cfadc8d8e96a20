//! The operator as the chart runs it: two pods from the operator image electing a leader on a
//! Lease. Both are Ready (so a rolling update can replace them), killing the leader hands the
//! Lease to the other replica, the new leader reconciles a spec change, and no Secret was
//! rewritten on the way (credentials are get-or-create, whoever leads).

use std::collections::BTreeMap;
use std::time::Duration;

use diloco_crds::DiLoCoServer;
use diloco_tests::kube_helpers::{apply_server, wait_until};
use diloco_tests::node_pods::{is_ready, logs};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

use crate::{example_spec, pod_name, ready_server};

const OPERATOR_PODS: &str = "app.kubernetes.io/name=diloco-operator";
/// The chart's Lease (`<fullname>-leader`; release `diloco-operator` is its own fullname).
const LEASE: &str = "diloco-operator-leader";

async fn holder(client: &Client, namespace: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get(LEASE)
        .await
        .ok()?
        .spec?
        .holder_identity
}

/// The operator pod whose identity holds the Lease (the chart passes the pod's name).
fn pod_of<'a>(identity: &str, pods: &'a [Pod]) -> Option<&'a Pod> {
    pods.iter().find(|p| pod_name(p) == identity)
}

async fn secret_versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("diloco.dev/server=llm"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn killing_the_leading_operator_pod_hands_over_to_the_other_replica_and_no_secret_changes() {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let client = node.client().await.unwrap();
    let namespace = node.namespace(&client, "node-leader", &[]).await.unwrap();
    // `helm install --wait` returns once both replicas are Ready: the standby too.
    node.install_operator(&namespace, "diloco-operator", 2);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = pods_api
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter().all(is_ready),
        "leader and standby are both Ready"
    );

    ready_server(
        node,
        &client,
        &namespace,
        "llm",
        example_spec(node, json!({})),
    )
    .await;
    let first_holder = holder(&client, &namespace)
        .await
        .expect("a leader holds the Lease");
    let leader = pod_of(&first_holder, &pods)
        .expect("the holder is one of the operator pods")
        .clone();
    let standby = pods
        .iter()
        .find(|p| pod_name(p) != pod_name(&leader))
        .unwrap()
        .clone();
    assert!(
        logs(&client, &namespace, &pod_name(&leader), "operator")
            .await
            .contains("became the leader")
    );
    assert!(
        !logs(&client, &namespace, &pod_name(&standby), "operator")
            .await
            .contains("became the leader")
    );
    let secrets = secret_versions(&client, &namespace).await;
    assert!(
        secrets.len() >= 4,
        "token, admin token, CA, certificates, bundle: {secrets:?}"
    );

    // Killed: no grace, so it cannot hand the Lease over; the standby waits for it to expire.
    pods_api
        .delete(&pod_name(&leader), &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let new_holder = wait_until(
        Duration::from_secs(60),
        "another replica holding the Lease",
        || async {
            let identity = holder(&client, &namespace).await?;
            (identity != first_holder).then_some(identity)
        },
    )
    .await;
    let now = pods_api
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .unwrap()
        .items;
    let new_leader = pod_of(&new_holder, &now).expect("the new holder is a live operator pod");
    assert_ne!(pod_name(new_leader), pod_name(&leader));

    // The new leader reconciles: a spec change reaches the coordinator's config.
    let generation = apply_server(
        &client,
        &namespace,
        "llm",
        json!({}),
        example_spec(node, json!({"training": {"syncEvery": 7}})),
    )
    .await
    .metadata
    .generation;
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let servers: Api<DiLoCoServer> = Api::namespaced(client.clone(), &namespace);
    wait_until(
        Duration::from_secs(60),
        "the new leader reconciling syncEvery: 7",
        || async {
            let config = configs.get("llm-coordinator-config").await.ok()?;
            let observed = servers.get("llm").await.ok()?.status?.observed_generation;
            let text = config.data?.get("coordinator.yaml")?.clone();
            (text.contains("sync_every: 7") && observed == generation).then_some(())
        },
    )
    .await;
    assert!(
        logs(&client, &namespace, &pod_name(new_leader), "operator")
            .await
            .contains("became the leader")
    );
    assert_eq!(
        secret_versions(&client, &namespace).await,
        secrets,
        "no Secret was written by the handover or the new leader"
    );
}
