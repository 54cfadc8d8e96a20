//! `make bench-operator`: the operator at scale on the local control plane. N `DiLoCoServer`s
//! (default 200, `DILOCO_BENCH_SERVERS`) are created at once in one namespace; the time until
//! every one has all its children applied and its status written (`CredentialsReady=True`,
//! which the operator sets only after applying every child) is measured, with the operator's
//! peak RSS.
//!
//! Baseline, measured in the same run against the same API server: the same number of objects
//! (children per server × N, as ConfigMaps of the same total size) server-side applied
//! directly by one client with the same concurrency, i.e. what the API server alone needs
//! for those writes. The ratio says how much the operator's work (PKI, reads, status) adds.
//!
//! Prints one JSON object and writes it to `target/bench/operator-scale.json`.

use std::time::{Duration, Instant};

use diloco_crds::DiLoCoServer;
use diloco_tests::LocalCluster;
use diloco_tests::kube_helpers::install_crd;
use diloco_tests::operator_process::OperatorProcess;
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// Children a default server gets (5 Secrets, ConfigMap, 2 Services, 4 NetworkPolicies,
/// ServiceAccount, PVC, Deployment).
const CHILDREN_PER_SERVER: usize = 15;
/// Concurrent requests of the baseline (the operator reconciles many servers at once).
const BASELINE_CONCURRENCY: usize = 16;

fn main() {
    let servers: usize = std::env::var("DILOCO_BENCH_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let root = diloco_tests::bench_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let summary = runtime.block_on(run(servers));
    let text = serde_json::to_string_pretty(&summary).expect("JSON");
    println!("{text}");
    std::fs::write(root.join("operator-scale.json"), format!("{text}\n")).expect("summary written");
}

async fn run(servers: usize) -> serde_json::Value {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.expect("a client");
    install_crd(&client).await;

    let baseline_ns = cluster
        .namespace(&client, "bench-baseline")
        .await
        .expect("namespace");
    let baseline = baseline_seconds(&client, &baseline_ns, servers * CHILDREN_PER_SERVER).await;
    eprintln!(
        "baseline: {} direct applies in {baseline:.2} s",
        servers * CHILDREN_PER_SERVER
    );

    let namespace = cluster
        .namespace(&client, "bench-scale")
        .await
        .expect("namespace");
    let logs = tempfile::tempdir().expect("tempdir");
    let operator = OperatorProcess::start(cluster.kubeconfig(), &namespace, logs.path(), &[]);
    let api: Api<DiLoCoServer> = Api::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    stream::iter(0..servers)
        .for_each_concurrent(BASELINE_CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let name = format!("s{i:04}");
                let object = json!({
                    "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
                    "metadata": {"name": name},
                    "spec": {"image": "diloco-coordinator:bench"},
                });
                api.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&object),
                )
                .await
                .expect("create a DiLoCoServer");
            }
        })
        .await;
    let created = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut peak_rss = 0;
    loop {
        peak_rss = peak_rss.max(operator.peak_rss_bytes().unwrap_or(0));
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list servers");
        let done = list
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "CredentialsReady" && c.status == "True")
                })
            })
            .count();
        if done == servers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{servers} servers reconciled after 15 min\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_applied = started.elapsed().as_secs_f64();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace)
        .list_metadata(
            &ListParams::default().labels("app.kubernetes.io/managed-by=diloco-operator"),
        )
        .await
        .expect("list secrets")
        .items
        .len();
    assert_eq!(secrets, servers * 5, "five Secrets per server");
    // Let the status and Deployment-status reconciles that follow settle, then read the peak.
    tokio::time::sleep(Duration::from_secs(5)).await;
    peak_rss = peak_rss.max(operator.peak_rss_bytes().unwrap_or(0));
    let errors = operator.log_text().matches("reconcile failed").count();
    let samples =
        diloco_tests::metrics(&diloco_tests::http_client(), &operator.metrics_url, None).await;
    let reconciles = samples
        .get("diloco_operator_reconciles_total")
        .copied()
        .unwrap_or(0.0);
    operator.stop();
    json!({
        "servers": servers,
        "children_per_server": CHILDREN_PER_SERVER,
        "create_seconds": round(created),
        "all_children_applied_seconds": round(all_applied),
        "per_server_ms": round(all_applied * 1000.0 / servers as f64),
        "baseline_direct_apply_seconds": round(baseline),
        "ratio_to_baseline": round(all_applied / baseline),
        "operator_peak_rss_mb": round(peak_rss as f64 / 1e6),
        "failed_reconciles": errors,
        "reconciles": reconciles,
        "machine_cores": std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// Seconds to server-side apply `count` ConfigMaps of a child's typical size directly.
async fn baseline_seconds(client: &Client, namespace: &str, count: usize) -> f64 {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    // About the average size of a child (certificates and the Deployment are the big ones).
    let payload = "x".repeat(1500);
    let started = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(BASELINE_CONCURRENCY, |i| {
            let api = api.clone();
            let payload = payload.clone();
            async move {
                let name = format!("c{i:05}");
                let object = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"bench": "baseline"}},
                    "data": {"payload": payload},
                });
                api.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&object),
                )
                .await
                .expect("apply a ConfigMap");
            }
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let stored = api
        .list_metadata(&ListParams::default().labels("bench=baseline"))
        .await
        .expect("list the baseline ConfigMaps")
        .items
        .len();
    assert_eq!(stored, count, "every baseline object was written");
    seconds
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
