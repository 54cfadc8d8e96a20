//! The pod runner plays the kubelet for a Deployment of the coordinator on the real local
//! control plane: the Deployment's pod runs and becomes Ready on the API server, serves on its
//! own pod IP with the token from its Secret, follows a token rotation without a restart, is
//! restarted after a crash, and is gone, process and all, once the Deployment is deleted.

use std::path::Path;
use std::time::{Duration, Instant};

use diloco_tests::LocalCluster;
use diloco_tests::fresh_token;
use diloco_tests::pod_runner::PodRunner;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const COORDINATOR_CONFIG: &str = "\
listen: 0.0.0.0:8512
auth: {token_dir: /var/run/diloco/token}
insecure: true
metrics: {listen: 0.0.0.0:9090}
audit: {path: /var/lib/diloco/audit.jsonl}
";

fn coordinator_deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "coordinator"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "coordinator"}},
            "template": {
                "metadata": {"labels": {"app": "coordinator"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "coordinator",
                        "image": "diloco-coordinator:test",
                        "command": ["diloco-coordinator"],
                        "args": ["--config", "/etc/diloco/config/coordinator.yaml"],
                        "ports": [
                            {"name": "control", "containerPort": 8512},
                            {"name": "metrics", "containerPort": 9090},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/health", "port": "control"},
                            "periodSeconds": 5,
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/diloco/config"},
                            {"name": "token", "mountPath": "/var/run/diloco/token"},
                            {"name": "state", "mountPath": "/var/lib/diloco"},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "coordinator-config"}},
                        {"name": "token", "secret": {"secretName": "token"}},
                        {"name": "state", "emptyDir": {}},
                    ],
                },
            },
        },
    }))
    .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn restart_count(pod: &Pod) -> i32 {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|s| s.first())
        .map_or(0, |s| s.restart_count)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Polls the API server until a pod of the namespace satisfies `condition`; panics after
/// `timeout` with what the API server and the runner saw.
async fn wait_for_pod(
    pods: &Api<Pod>,
    runner: &PodRunner,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + timeout;
    loop {
        let items = pods.list(&ListParams::default()).await.unwrap().items;
        if let Some(pod) = items.iter().find(|p| condition(p)) {
            return pod.clone();
        }
        if Instant::now() >= deadline {
            panic!("no pod {what} within {timeout:?}; {}", seen(&items, runner));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the API server until the namespace has no pod left.
async fn wait_for_no_pods(pods: &Api<Pod>, runner: &PodRunner, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let items = pods.list(&ListParams::default()).await.unwrap().items;
        if items.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "pods still there after {timeout:?}; {}",
                seen(&items, runner)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pods' statuses and the runner's logs, for a failure message.
fn seen(items: &[Pod], runner: &PodRunner) -> String {
    let statuses: Vec<_> = items
        .iter()
        .map(|p| (&p.metadata.name, &p.status))
        .collect();
    let logs: String = runner.pods().iter().map(|p| p.log()).collect();
    format!("pods: {statuses:#?}\nlogs:\n{logs}")
}

async fn status_code(http: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut request = http.get(url).timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_deployment_runs_rotates_its_token_restarts_and_goes_away() {
    let test_started = Instant::now();
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let namespace = cluster.namespace(&client, "pod-runner").await.unwrap();
    let work_dir = tempfile::tempdir().unwrap();
    let runner = PodRunner::start(client.clone(), &namespace, work_dir.path())
        .await
        .unwrap();
    let cluster_ready = Instant::now();

    let first = fresh_token("first");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "token"},
        "stringData": {"token": first},
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "coordinator-config"},
        "data": {"coordinator.yaml": COORDINATOR_CONFIG},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    deployments
        .create(&PostParams::default(), &coordinator_deployment())
        .await
        .unwrap();

    // The Deployment's pod, bound to the runner's node, Running and Ready on the API server.
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let ready = |p: &Pod| phase(p) == "Running" && is_ready(p);
    let pod = wait_for_pod(
        &pods,
        &runner,
        "Running and Ready",
        Duration::from_secs(60),
        ready,
    )
    .await;
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(runner.node_name()));
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "pod IP {ip}");
    let name = pod.metadata.name.clone().unwrap();
    let running = runner.pods().into_iter().find(|p| p.name == name).unwrap();
    assert_eq!(running.ip.to_string(), ip);

    // It serves on its own IP with the token of its Secret; the metrics listener is open.
    let http = diloco_tests::http_client();
    let status_url = format!("http://{ip}:8512/status");
    assert_eq!(status_code(&http, &status_url, Some(&first)).await, 200);
    assert_eq!(status_code(&http, &status_url, None).await, 401);
    let metrics_url = format!("http://{ip}:9090/metrics");
    assert_eq!(status_code(&http, &metrics_url, None).await, 200);
    // The refusal is audited in the emptyDir mounted at /var/lib/diloco (written by a thread
    // of its own, so it may take a moment).
    let audit = running.volume_dir("state").unwrap().join("audit.jsonl");
    let audited = Instant::now();
    while !std::fs::read_to_string(&audit).is_ok_and(|log| log.contains("auth_failure")) {
        assert!(
            audited.elapsed() < Duration::from_secs(5),
            "no auth_failure record in {}",
            audit.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A rotated token reaches the running process through the mounted Secret, no restart.
    let second = fresh_token("second");
    let rotated = Instant::now();
    secrets
        .patch(
            "token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": second}})),
        )
        .await
        .unwrap();
    while status_code(&http, &status_url, Some(&second)).await != 200 {
        assert!(
            rotated.elapsed() < Duration::from_secs(5),
            "the rotated token was not accepted within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rotation_took = rotated.elapsed();
    let token_file = running.volume_dir("token").unwrap().join("token");
    assert_eq!(std::fs::read_to_string(token_file).unwrap(), second);
    let pod = pods.get(&name).await.unwrap();
    assert_eq!(restart_count(&pod), 0);

    // A crash: not Ready on the API server, then restarted and Ready again.
    let first_pid = running.pid.unwrap();
    runner.kill(&name).unwrap();
    let not_ready = |p: &Pod| p.metadata.name.as_ref() == Some(&name) && !is_ready(p);
    wait_for_pod(
        &pods,
        &runner,
        "not Ready",
        Duration::from_secs(10),
        not_ready,
    )
    .await;
    let restarted = |p: &Pod| ready(p) && restart_count(p) == 1;
    wait_for_pod(
        &pods,
        &runner,
        "restarted",
        Duration::from_secs(20),
        restarted,
    )
    .await;
    let running = runner.pods().into_iter().find(|p| p.name == name).unwrap();
    let second_pid = running.pid.unwrap();
    assert_ne!(first_pid, second_pid);
    assert!(
        !process_exists(first_pid),
        "the killed process is still there"
    );
    assert_eq!(status_code(&http, &status_url, Some(&second)).await, 200);

    // Deleting the Deployment deletes the pod (the runner confirms it) and ends the process.
    deployments
        .delete("coordinator", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_no_pods(&pods, &runner, Duration::from_secs(30)).await;
    assert!(!process_exists(second_pid), "the process outlived its pod");
    assert!(runner.pods().is_empty(), "{:?}", runner.pods());

    eprintln!(
        "pod runner test: {:.1?} in all, {:.1?} after the cluster and runner were up; \
         token rotation took {rotation_took:.1?}",
        test_started.elapsed(),
        cluster_ready.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_the_runner_cannot_run_says_why_and_stays_pending() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let namespace = cluster
        .namespace(&client, "pod-runner-refusal")
        .await
        .unwrap();
    let work_dir = tempfile::tempdir().unwrap();
    let runner = PodRunner::start(client.clone(), &namespace, work_dir.path())
        .await
        .unwrap();
    let mut deployment = coordinator_deployment();
    let spec = deployment.spec.template.spec.as_mut().unwrap();
    spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), "sleep 60".into()]);
    Api::<Deployment>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let refused = |p: &Pod| {
        let message = p.status.as_ref().and_then(|s| s.message.as_deref());
        message.is_some_and(|m| m.contains("runs `sh`; the pod runner only runs"))
    };
    let pod = wait_for_pod(&pods, &runner, "refused", Duration::from_secs(30), refused).await;
    // Pending, like a pod whose container cannot be created: a Failed one would be replaced by
    // its ReplicaSet at once, and the replacement would fail too, pod after pod.
    assert_eq!(phase(&pod), "Pending");
    let statuses = pod.status.and_then(|s| s.container_statuses).unwrap();
    let waiting = statuses[0].state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.reason.as_deref()),
        Some("CreateContainerConfigError")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let items = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "the refused pod was replaced");
    assert!(
        runner.pods().is_empty(),
        "nothing may run: {:?}",
        runner.pods()
    );
}
