//! The NetworkPolicies the operator writes, enforced by kube-router and shown by connections
//! from pods: a worker pod of the server reaches both planes, a pod without the label and a
//! pod of another namespace are refused until the spec names them, and the coordinator itself
//! can open no connection but DNS.
//!
//! (Not covered: a pod's connections to itself. kube-router, like other enforcers, lets a pod
//! reach its own IP whatever its policies say, so the coordinator reaching its own Service is
//! not an egress it could use against anyone.)

use std::time::Duration;

use diloco_tests::kube_helpers::apply_server;
use diloco_tests::node_pods::{add_probe_container, ready_pod, start_client_pod};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::{
    cluster_ip, coordinator_selector, eventually, example_spec, pod_ip, pod_name, ready_server,
};

/// How long a policy change may take to reach kube-router's rules.
const POLICY_SYNC: Duration = Duration::from_secs(30);

#[tokio::test]
async fn only_the_servers_workers_and_named_peers_connect_and_the_coordinator_reaches_only_dns() {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let client = node.client().await.unwrap();
    let namespace = node.namespace(&client, "node-policies", &[]).await.unwrap();
    let other = node
        .namespace(&client, "node-policies-other", &[])
        .await
        .unwrap();
    node.install_operator(&namespace, "diloco-operator", 1);
    let spec = example_spec(node, json!({}));
    ready_server(node, &client, &namespace, "llm", spec.clone()).await;

    let worker_label = [("diloco.dev/server", "llm")];
    let helper = node.helper_image();
    start_client_pod(&client, &namespace, "worker", &worker_label, helper).await;
    start_client_pod(&client, &namespace, "unlabelled", &[], helper).await;
    start_client_pod(&client, &other, "foreign", &worker_label, helper).await;
    let control = format!("llm-control.{namespace}.svc.cluster.local");
    let bulk = format!("llm-bulk.{namespace}.svc.cluster.local");
    let coordinator = ready_pod(
        &client,
        &namespace,
        &coordinator_selector("llm"),
        Duration::from_secs(10),
    )
    .await;
    let coordinator_ip = pod_ip(&coordinator);
    let connects =
        |ns: &str, pod: &str, host: &str, port: u16| node.connects(ns, pod, "client", host, port);

    // A pod labelled diloco.dev/server=llm reaches both planes by Service name (DNS, kube-proxy).
    eventually(POLICY_SYNC, "the worker pod reaching both planes", || {
        connects(&namespace, "worker", &control, 8512)
            && connects(&namespace, "worker", &bulk, 8513)
    })
    .await;
    assert!(
        connects(&namespace, "worker", &coordinator_ip, 8512),
        "and the pod IP"
    );
    for (host, port) in [
        (&control, 8512),
        (&bulk, 8513),
        (&coordinator_ip, 8512),
        (&coordinator_ip, 8513),
    ] {
        assert!(
            !connects(&namespace, "unlabelled", host, port),
            "unlabelled pod reached {host}:{port}"
        );
        assert!(
            !connects(&other, "foreign", host, port),
            "pod of another namespace reached {host}:{port}"
        );
    }

    // The spec names the other namespace's workers on the control plane (and keeps the
    // defaults it replaces: this namespace's workers and the operator's pods).
    let named = json!({"networkPolicy": {"controlFrom": [
        {"podSelector": {"matchLabels": {"diloco.dev/server": "llm"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": &*other}},
         "podSelector": {"matchLabels": {"diloco.dev/server": "llm"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "diloco-operator"}}},
    ]}});
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({}),
        example_spec(node, named),
    )
    .await;
    eventually(
        POLICY_SYNC,
        "the named namespace's pod reaching the control plane",
        || connects(&other, "foreign", &control, 8512),
    )
    .await;
    assert!(
        !connects(&other, "foreign", &bulk, 8513),
        "bulkFrom still admits only this namespace's workers"
    );
    assert!(
        !connects(&namespace, "unlabelled", &control, 8512),
        "still no unlabelled pod"
    );

    // The coordinator's own connections, from an ephemeral container in its pod (same network
    // namespace and so the same egress policy; the coordinator image has no shell). Each
    // target listens and is reachable from a pod the egress policy does not select, so a
    // refusal here is the policy.
    add_probe_container(
        &client,
        &namespace,
        &pod_name(&coordinator),
        "coordinator",
        "egress",
        helper,
    )
    .await;
    let from_coordinator = |host: &str, port: u16| {
        node.connects(&namespace, &pod_name(&coordinator), "egress", host, port)
    };
    let (resolved, lookup) = node.exec(
        &namespace,
        &pod_name(&coordinator),
        "egress",
        &format!("busybox nslookup {control}"),
    );
    let control_ip = cluster_ip(&client, &namespace, "llm-control").await;
    assert!(
        resolved && lookup.contains(&control_ip),
        "DNS works from the coordinator: {lookup}"
    );
    let dns_pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .unwrap()
        .items;
    let dns_ip = pod_ip(&dns_pods[0]);
    assert!(from_coordinator(&dns_ip, 53), "DNS over TCP to the DNS pod");
    let kubernetes = cluster_ip(&client, "default", "kubernetes").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let unlabelled_ip = pod_ip(&pods.get("unlabelled").await.unwrap());
    for (what, host, port) in [
        (
            "the apiserver through the kubernetes Service",
            kubernetes.as_str(),
            443,
        ),
        ("the DNS pod on a port other than 53", dns_ip.as_str(), 8080),
        ("another pod of the namespace", unlabelled_ip.as_str(), 8080),
    ] {
        assert!(
            connects(&namespace, "worker", host, port),
            "{what} is reachable from the worker pod"
        );
        assert!(
            !from_coordinator(host, port),
            "the coordinator reached {what} ({host}:{port})"
        );
    }
}
