//! The chart's Grafana dashboard queries only metrics that exist: every metric name in every
//! PromQL expression of `charts/diloco-operator/dashboards/diloco.json` is a series that a real
//! coordinator's or a real operator's `/metrics` exposes (after some activity, and judged by
//! their `# TYPE` lines with the exposition's suffix rules: a counter `x` is the series
//! `x_total`, a histogram `x` is `x_bucket`, `x_sum` and `x_count`, a gauge is `x`).

use std::collections::BTreeSet;
use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::fresh_token;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::local_cluster::repo_root;
use diloco_tests::operator_process::OperatorProcess;
use diloco_tests::processes::CoordinatorProcess;
use diloco_tests::tokens::TestTokens;
use kube::api::Api;
use serde_json::{Value, json};

use diloco_crds::DiLoCoServer;

/// The series names an exposition's `# TYPE` lines stand for.
fn exposed_series(exposition: &str) -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                series.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    series.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                series.insert(name.to_string());
            }
        }
    }
    series
}

/// The metric names in a PromQL expression: identifiers starting with `diloco_`, outside
/// quoted label values.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            unquoted.push(' ');
        } else if !quoted {
            unquoted.push(c);
        }
    }
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = unquoted.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            let token: String = bytes[i..end].iter().collect();
            if token.starts_with("diloco_") {
                names.insert(token);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` of every panel (rows' nested panels too), with its panel's title.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((
                    panel["title"].as_str().unwrap_or("").to_string(),
                    expr.to_string(),
                ));
            }
        }
    }
    found
}

#[test]
fn metric_names_are_read_outside_label_values_and_functions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(diloco_fold_seconds_bucket{namespace=~"diloco_x"}[5m]))) / diloco_round"#
        ),
        BTreeSet::from([
            "diloco_fold_seconds_bucket".to_string(),
            "diloco_round".to_string()
        ])
    );
    let exposed = exposed_series(
        "# HELP diloco_round x\n# TYPE diloco_round gauge\n# TYPE diloco_upload_bytes counter\n\
         # TYPE diloco_fold_seconds histogram\ndiloco_round 3\n",
    );
    assert!(exposed.contains("diloco_upload_bytes_total"));
    assert!(!exposed.contains("diloco_upload_bytes"));
    assert!(!exposed.contains("diloco_round_total"));
    assert!(exposed.contains("diloco_fold_seconds_count"));
}

async fn scrape(url: &str, bearer: Option<&str>) -> String {
    let mut request = diloco_tests::http_client().get(format!("{url}/metrics"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exposed() {
    // A real coordinator, after a refused upload and a credential reload (families such as
    // `diloco_rejected_uploads` have no series, and no TYPE line, before their first event).
    let dir = tempfile::tempdir().unwrap();
    let tokens = TestTokens::write(dir.path());
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        &format!(
            "auth: {{{}}}\naudit: {{path: audit.jsonl}}\n",
            tokens.auth_keys()
        ),
    );
    let http = diloco_tests::http_client();
    let refused = http
        .post(format!("{}/submit_pseudograd", coordinator.url))
        .bearer_auth(&tokens.worker)
        .body("not a submit frame")
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error() || refused.status().is_server_error());
    std::fs::write(
        tokens.worker_dir.join("token"),
        format!("{}\n", fresh_token("rotated")),
    )
    .unwrap();
    let coordinator_metrics = wait_until(
        Duration::from_secs(10),
        "the token reload counted",
        || async {
            let text = scrape(&coordinator.url, Some(&tokens.admin)).await;
            text.contains("diloco_credential_reloads_total{")
                .then_some(text)
        },
    )
    .await;

    // A real operator, after a reconcile that failed (an image it does not allow) and one
    // that did not.
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    let namespace = cluster.namespace(&client, "dashboard").await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let operator = OperatorProcess::start(cluster.kubeconfig(), &namespace, logs.path(), &[]);
    apply_server(
        &client,
        &namespace,
        "bad",
        json!({}),
        json!({"image": "evil.example/x:1"}),
    )
    .await;
    apply_server(
        &client,
        &namespace,
        "good",
        json!({}),
        json!({"image": "diloco-coordinator:test"}),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "both servers reconciled",
        || async {
            let servers = Api::<DiLoCoServer>::namespaced(client.clone(), &namespace);
            let bad = servers.get("bad").await.ok()?;
            let good = servers.get("good").await.ok()?;
            (condition(&bad, "Ready")?.status == "False"
                && condition(&good, "CredentialsReady")?.status == "True")
                .then_some(())
        },
    )
    .await;
    let operator_metrics = scrape(&operator.metrics_url, None).await;
    assert!(
        operator_metrics.contains("diloco_operator_reconcile_errors_total{"),
        "the refused server counted as an error:\n{operator_metrics}"
    );

    let coordinator_series = exposed_series(&coordinator_metrics);
    let operator_series = exposed_series(&operator_metrics);
    let text =
        std::fs::read_to_string(repo_root().join("charts/diloco-operator/dashboards/diloco.json"))
            .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 10, "{expressions:?}");
    let mut queried = BTreeSet::new();
    let mut missing = Vec::new();
    for (title, expr) in &expressions {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title} queries no diloco metric: {expr}"
        );
        for name in names {
            let exposed = if name.starts_with("diloco_operator_") {
                &operator_series
            } else {
                &coordinator_series
            };
            if !exposed.contains(&name) {
                missing.push(format!("{title}: {name}"));
            }
            queried.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not expose: {missing:#?}\n\
         coordinator: {coordinator_series:?}\noperator: {operator_series:?}"
    );
    // What the issue asks the dashboard to cover.
    for needed in [
        "diloco_round",
        "diloco_fold_seconds_count",
        "diloco_upload_bytes_total",
        "diloco_auth_failures_total",
        "diloco_credential_reloads_total",
        "diloco_operator_reconcile_errors_total",
    ] {
        assert!(queried.contains(needed), "no panel queries {needed}");
    }
}
