//! The Helm chart without a cluster: `helm lint --strict` is clean, the rendered CRD is the
//! one the types generate (kept on uninstall), the namespaced default (one Role per watched
//! namespace) and the cluster-wide mode render, the operator Deployment runs two replicas with
//! a restricted security context and gets the settings the chart's values say, the admission
//! policies and the operator's NetworkPolicy render, and values.schema.json refuses typos and
//! impossible values with a message. (Installing it onto the local control plane is
//! `operator_rbac.rs` and `admission_policy.rs`.)

use std::collections::BTreeMap;

use diloco_tests::local_cluster::repo_root;
use diloco_tests::service_accounts::kube_tool;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn helm(args: &[&str]) -> std::process::Output {
    kube_tool("helm").args(args).output().unwrap()
}

/// Every object `helm template` renders with `sets` into namespace `ops`.
fn render(sets: &[&str]) -> Vec<Value> {
    render_in("ops", sets)
}

/// Every object `helm template` renders with `sets` into `namespace`.
fn render_in(namespace: &str, sets: &[&str]) -> Vec<Value> {
    diloco_tests::chart::render_chart(namespace, sets)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn the_chart_lints_clean() {
    let output = helm(&["lint", "--strict", "charts/diloco-operator"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The objects of `kind`.
fn all_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`.
fn one_of<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(objects, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// The operator container's environment as name → value (literal values only).
fn operator_env(objects: &[Value]) -> BTreeMap<String, String> {
    let container = &one_of(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect()
}

/// The operator container's `--flag=value` arguments as flag → value.
fn operator_flags(objects: &[Value]) -> BTreeMap<String, String> {
    let container = &one_of(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.split_once('='))
        .map(|(flag, value)| (flag.into(), value.into()))
        .collect()
}

/// `k=v,k=v` (the operator's label flags) as a JSON object.
fn label_flag(text: &str) -> Value {
    text.split(',')
        .map(|pair| pair.split_once('=').expect("key=value"))
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Namespace → the verbs the operator's reconcile Role there grants on `resource`.
fn verbs(role: &Value, resource: &str) -> Vec<String> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
        })
        .flat_map(|r| r["verbs"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_default_install_watches_the_release_namespace_only_with_the_crd_kept_on_uninstall() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
        ],
        "namespaced by default: no ClusterRole"
    );
    for role in all_of(&objects, "Role") {
        assert_eq!(role["metadata"]["namespace"], "ops", "{role}");
    }
    let crd = one_of(&objects, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let rendered: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
    assert_eq!(
        rendered.spec,
        diloco_crds::crd().spec,
        "the chart's CRD is the generated one"
    );

    let deployment = one_of(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "two replicas, one leader"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    let env = operator_env(&objects);
    assert_eq!(
        env["DILOCO_WATCH_NAMESPACE"], "ops",
        "the release namespace"
    );
    assert_eq!(
        env["DILOCO_ALLOWED_IMAGE_PREFIXES"], "ghcr.io/diloco-dev/diloco-coordinator",
        "the chart's coordinator repository"
    );
    assert_eq!(
        label_flag(&env["DILOCO_OPERATOR_POD_LABELS"]),
        deployment["spec"]["template"]["metadata"]["labels"],
        "the coordinators' NetworkPolicies admit exactly these operator pods"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let flags = operator_flags(&objects);
    assert_eq!(flags["--dns-namespace"], "kube-system");
    assert_eq!(flags["--dns-pod-labels"], "k8s-app=kube-dns");
    let leader_role = all_of(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "diloco-diloco-operator-leader-election")
        .unwrap();
    assert_eq!(
        leader_role["rules"][1]["resourceNames"][0], flags["--lease-name"],
        "the Lease the operator uses is the one its Role names"
    );
}

#[test]
fn the_reconcile_role_grants_what_the_operator_uses_and_no_more() {
    let objects = render(&[]);
    let role = all_of(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "diloco-diloco-operator")
        .unwrap();
    let rules = serde_json::to_string(&role["rules"]).unwrap();
    assert!(!rules.contains("\"*\""), "no wildcard rights: {rules}");
    let write = ["get", "list", "watch", "create", "patch", "delete"];
    for resource in [
        "secrets",
        "configmaps",
        "services",
        "deployments",
        "networkpolicies",
    ] {
        assert_eq!(verbs(role, resource), write, "{resource}");
    }
    assert_eq!(
        verbs(role, "serviceaccounts"),
        ["get", "list", "create", "patch", "delete"]
    );
    assert_eq!(
        verbs(role, "persistentvolumeclaims"),
        ["get", "create", "patch"],
        "audit claims are never listed nor deleted"
    );
    assert_eq!(verbs(role, "pods"), ["get", "list"]);
    assert_eq!(
        verbs(role, "replicasets"),
        ["get", "list"],
        "the status probe checks a pod's owner"
    );
    assert_eq!(verbs(role, "dilocoservers"), ["get", "list", "watch"]);
    assert_eq!(verbs(role, "dilocoservers/status"), ["get", "patch"]);
    assert_eq!(verbs(role, "events"), ["create", "patch"]);
    // The console's per-server Role and RoleBinding: applied, checked, pruned; never watched.
    for resource in ["roles", "rolebindings"] {
        assert_eq!(
            verbs(role, resource),
            ["get", "list", "create", "patch", "delete"],
            "{resource}"
        );
    }
}

#[test]
fn listed_watch_namespaces_get_one_role_each_and_no_cluster_rights() {
    let objects = render(&[
        "watchNamespaces={team-a,team-b}",
        "crds.install=false",
        "metrics.serviceMonitor.enabled=true",
    ]);
    assert!(all_of(&objects, "ClusterRole").is_empty());
    assert!(all_of(&objects, "ClusterRoleBinding").is_empty());
    let namespaces_of = |kind: &str| -> Vec<String> {
        let mut namespaces: Vec<String> = all_of(&objects, kind)
            .iter()
            .filter(|o| o["metadata"]["name"] == "diloco-diloco-operator")
            .map(|o| o["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect();
        namespaces.sort();
        namespaces
    };
    assert_eq!(namespaces_of("Role"), ["team-a", "team-b"]);
    assert_eq!(namespaces_of("RoleBinding"), ["team-a", "team-b"]);
    let leader = all_of(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "diloco-diloco-operator-leader-election")
        .unwrap();
    assert_eq!(
        leader["metadata"]["namespace"], "ops",
        "the Lease stays in the release namespace"
    );
    assert_eq!(
        operator_env(&objects)["DILOCO_WATCH_NAMESPACE"],
        "team-a,team-b"
    );
    for binding in all_of(&objects, "ValidatingAdmissionPolicyBinding") {
        let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
        assert_eq!(
            selector["matchExpressions"][0],
            json!({"key": "kubernetes.io/metadata.name", "operator": "In",
                   "values": ["team-a", "team-b"]}),
            "the admission policy covers the watched namespaces"
        );
    }
    assert_eq!(all_of(&objects, "ServiceMonitor").len(), 1);
}

#[test]
fn a_cluster_wide_install_gets_a_cluster_role_and_watches_every_namespace() {
    let objects = render(&["clusterWide=true"]);
    let cluster_role = one_of(&objects, "ClusterRole");
    let binding = one_of(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "diloco-diloco-operator", "namespace": "ops"})
    );
    let roles = all_of(&objects, "Role");
    assert_eq!(roles.len(), 1, "only the Lease Role");
    assert!(
        !operator_env(&objects).contains_key("DILOCO_WATCH_NAMESPACE"),
        "no watch namespace: every namespace"
    );
    for binding in all_of(&objects, "ValidatingAdmissionPolicyBinding") {
        assert!(
            binding["spec"].get("matchResources").is_none(),
            "the admission policy covers every namespace: {binding}"
        );
    }
}

#[test]
fn the_admission_policies_bind_the_operators_identity_and_the_allowed_images() {
    let objects = render(&["allowedImages={registry.example/diloco,mirror.example/team/}"]);
    let policies = all_of(&objects, "ValidatingAdmissionPolicy");
    let mut names: Vec<&str> = policies
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "diloco-diloco-operator-deployments.ops.diloco.dev",
            "diloco-diloco-operator-labels.ops.diloco.dev",
            "diloco-diloco-operator-rolebindings.ops.diloco.dev",
            "diloco-diloco-operator-roles.ops.diloco.dev",
            "diloco-diloco-operator-services.ops.diloco.dev",
        ],
        "release and namespace in the name: two installs never share a policy"
    );
    for policy in &policies {
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        assert_eq!(
            policy["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == \"system:serviceaccount:ops:diloco-diloco-operator\""
        );
        let name = &policy["metadata"]["name"];
        let binding = all_of(&objects, "ValidatingAdmissionPolicyBinding")
            .into_iter()
            .find(|b| b["spec"]["policyName"] == *name)
            .expect("every policy is bound");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    }
    let deployments = policies
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .contains("-deployments.")
        })
        .unwrap();
    let prefixes = deployments["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "allowedPrefixes")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(prefixes["expression"].as_str().unwrap()).unwrap(),
        json!(["registry.example/diloco", "mirror.example/team/"]),
        "the policy allows the images the operator allows"
    );
    assert_eq!(
        operator_env(&objects)["DILOCO_ALLOWED_IMAGE_PREFIXES"],
        "registry.example/diloco,mirror.example/team/"
    );

    let other_namespace = render_in("team-ops", &["admissionPolicy.enabled=true"]);
    assert!(
        all_of(&other_namespace, "ValidatingAdmissionPolicy")
            .iter()
            .all(|p| p["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with(".team-ops.diloco.dev"))
    );
    let disabled = render(&["admissionPolicy.enabled=false"]);
    assert!(all_of(&disabled, "ValidatingAdmissionPolicy").is_empty());
    assert!(all_of(&disabled, "ValidatingAdmissionPolicyBinding").is_empty());
}

#[test]
fn the_operator_network_policy_admits_only_the_listed_peers_to_metrics() {
    let objects = render(&[]);
    let policy = one_of(&objects, "NetworkPolicy");
    let deployment = one_of(&objects, "Deployment");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([]),
        "no peers: no ingress rule, nobody may connect"
    );

    let objects = render(&[
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    ]);
    let policy = one_of(&objects, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": "metrics", "protocol": "TCP"}],
        }])
    );
    assert!(all_of(&render(&["networkPolicy.enabled=false"]), "NetworkPolicy").is_empty());
}

#[test]
fn the_values_schema_refuses_typos_and_impossible_values() {
    for (set, expected) in [
        ("replicaCount=0", "replicaCount"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("allowedImages={has space}", "allowedImages"),
        ("dns.podLabels.k8s-app=a=b", "podLabels"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
        (
            "watchNamespace=team-a",
            "`watchNamespace` was removed in chart 0.2.0",
        ),
        (
            "clusterWide=true,watchNamespaces={team-a}",
            "leave `watchNamespaces` empty",
        ),
    ] {
        let output = helm(&["template", "diloco", "charts/diloco-operator", "--set", set]);
        assert!(!output.status.success(), "{set} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{set}: {stderr}");
    }
}

#[test]
fn the_kubectl_bundle_is_the_chart_rendered_with_its_defaults() {
    let output = helm(&[
        "template",
        "diloco-operator",
        "charts/diloco-operator",
        "--namespace",
        "diloco-system",
    ]);
    assert!(output.status.success());
    let rendered = String::from_utf8(output.stdout).unwrap();
    let bundle = std::fs::read_to_string(repo_root().join("deploy/install.yaml")).unwrap();
    assert!(
        bundle.ends_with(&rendered) && bundle.contains("kind: Namespace"),
        "deploy/install.yaml is stale: run `make bundle`"
    );
}
