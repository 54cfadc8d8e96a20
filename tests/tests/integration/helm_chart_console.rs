//! The chart's console and Grafana dashboard, rendered: the console is off by default and
//! nothing of it renders; `console.enabled=true` renders its ServiceAccount, a restricted
//! Deployment, a Service, a NetworkPolicy, and a ClusterRole with no right on Secrets, and
//! tells the operator who the console is. The dashboard ConfigMap follows the ServiceMonitor
//! unless its own value says otherwise.

use diloco_tests::chart::render_chart;
use diloco_tests::local_cluster::repo_root;
use serde_json::{Value, json};

/// Every object rendered into namespace `ops`.
fn render(sets: &[&str]) -> Vec<Value> {
    render_chart("ops", sets)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The operator container's arguments.
fn operator_args(objects: &[Value]) -> Vec<String> {
    named(objects, "Deployment", "diloco-diloco-operator")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

const CONSOLE: &str = "diloco-diloco-operator-console";

#[test]
fn the_console_is_off_by_default_and_nothing_of_it_renders() {
    let objects = render(&[]);
    let console_objects: Vec<String> = objects
        .iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .contains("console")
                || o["metadata"]["labels"]["app.kubernetes.io/name"] == "diloco-console"
        })
        .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
        .collect();
    assert!(console_objects.is_empty(), "{console_objects:?}");
    assert!(
        !operator_args(&objects)
            .iter()
            .any(|a| a.starts_with("--console")),
        "no console: the operator issues no console certificate"
    );
}

#[test]
fn an_enabled_console_gets_a_restricted_pod_its_own_identity_and_no_secrets() {
    let objects = render(&["console.enabled=true", "image.pullPolicy=Always"]);
    let account = named(&objects, "ServiceAccount", CONSOLE);
    assert_eq!(account["metadata"]["namespace"], "ops");

    let deployment = named(&objects, "Deployment", CONSOLE);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], CONSOLE);
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/diloco-dev/diloco-console:0.1.0"
    );
    assert_eq!(container["imagePullPolicy"], "Always", "as the operator's");
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );

    let service = named(&objects, "Service", CONSOLE);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // Cluster-wide reads of servers, patch for the rotation annotations, TokenReview and
    // SubjectAccessReview: that is all, and nothing on Secrets.
    let cluster_role = named(&objects, "ClusterRole", &format!("{CONSOLE}-ops"));
    assert_eq!(
        cluster_role["rules"],
        json!([
            {"apiGroups": ["diloco.dev"], "resources": ["dilocoservers"],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
             "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
             "verbs": ["create"]},
        ])
    );
    let rules = serde_json::to_string(&cluster_role["rules"]).unwrap();
    assert!(
        !rules.contains("secrets") && !rules.contains('*'),
        "{rules}"
    );
    let binding = named(&objects, "ClusterRoleBinding", &format!("{CONSOLE}-ops"));
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": CONSOLE, "namespace": "ops"}])
    );
    // No other Role or binding names the console: its Secrets come from the operator's
    // per-server Roles.
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind.ends_with("RoleBinding") && object != binding {
            assert!(!object.to_string().contains(CONSOLE), "{object}");
        }
    }

    // The operator learns who the console is: its ServiceAccount and its pods' labels.
    let args = operator_args(&objects);
    assert!(
        args.contains(&format!("--console-service-account=ops/{CONSOLE}")),
        "{args:?}"
    );
    let labels = args
        .iter()
        .find_map(|a| a.strip_prefix("--console-pod-labels="))
        .expect("--console-pod-labels");
    let labels: serde_json::Map<String, Value> = labels
        .split(',')
        .map(|pair| pair.split_once('=').unwrap())
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
    assert_eq!(
        Value::Object(labels),
        deployment["spec"]["template"]["metadata"]["labels"]
    );
}

/// The console's pods reach only DNS, the API server and the coordinators' control port, and
/// nobody reaches them unless `console.ingressFrom` says who.
#[test]
fn the_console_network_policy_limits_its_traffic() {
    let objects = render(&["console.enabled=true", "watchNamespaces={team-a,team-b}"]);
    let policy = named(&objects, "NetworkPolicy", CONSOLE);
    let deployment = named(&objects, "Deployment", CONSOLE);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["spec"]["ingress"], json!([]));
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3);
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"],
        json!({"k8s-app": "kube-dns"})
    );
    assert_eq!(
        egress[1],
        json!({"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]})
    );
    assert_eq!(
        egress[2],
        json!({
            "to": [{
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "diloco",
                                                "app.kubernetes.io/component": "coordinator"}},
                "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                    "operator": "In", "values": ["team-a", "team-b"]}]},
            }],
            "ports": [{"port": "control", "protocol": "TCP"}],
        })
    );
    let admitted = render(&[
        "console.enabled=true",
        "console.ingressFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress",
    ]);
    assert_eq!(
        named(&admitted, "NetworkPolicy", CONSOLE)["spec"]["ingress"],
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                "ports": [{"port": "http", "protocol": "TCP"}]}])
    );
    let without = render(&["console.enabled=true", "networkPolicy.enabled=false"]);
    assert!(find(&without, "NetworkPolicy", CONSOLE).is_none());
}

/// The dashboard ConfigMap: with the ServiceMonitor by default, or as its own value says;
/// labelled for Grafana's sidecar; the file as shipped.
#[test]
fn the_dashboard_ships_with_the_service_monitor_or_when_asked() {
    let name = "diloco-diloco-operator-dashboard";
    assert!(find(&render(&[]), "ConfigMap", name).is_none());
    assert!(
        find(
            &render(&[
                "metrics.serviceMonitor.enabled=true",
                "grafanaDashboard.enabled=false"
            ]),
            "ConfigMap",
            name
        )
        .is_none()
    );
    for sets in [
        &["metrics.serviceMonitor.enabled=true"][..],
        &["grafanaDashboard.enabled=true"][..],
    ] {
        let objects = render(sets);
        let map = named(&objects, "ConfigMap", name);
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"], "1",
            "{sets:?}"
        );
        let shipped: Value =
            serde_json::from_str(map["data"]["diloco.json"].as_str().unwrap()).unwrap();
        let file = std::fs::read_to_string(
            repo_root().join("charts/diloco-operator/dashboards/diloco.json"),
        )
        .unwrap();
        assert_eq!(shipped, serde_json::from_str::<Value>(&file).unwrap());
    }
    let elsewhere = render(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
    ]);
    assert_eq!(
        named(&elsewhere, "ConfigMap", name)["metadata"]["namespace"],
        "monitoring"
    );
}
