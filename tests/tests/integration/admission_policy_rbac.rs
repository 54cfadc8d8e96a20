//! The chart's admission policies on the operator's Roles and RoleBindings, on the real API
//! server and as the operator's ServiceAccount: the console's per-server Role (`get` on its
//! certificate Secret) and its binding to the console's ServiceAccount are admitted; a Role
//! with any other right, or a binding of another Role or to another subject, is refused —
//! although the operator's RBAC (and the API server's escalation check) would allow them.

use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::chart::install_operator_chart;
use diloco_tests::kube_helpers::wait_until;
use diloco_tests::service_accounts::{client_from, service_account_kubeconfig};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const OPERATOR: &str = "diloco-diloco-operator";
const CONSOLE: &str = "diloco-diloco-operator-console";

fn labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "diloco-operator", "diloco.dev/server": "llm"})
}

fn role(rules: Value) -> Role {
    serde_json::from_value(json!({
        "metadata": {"name": "llm-console", "labels": labels()},
        "rules": rules,
    }))
    .unwrap()
}

fn binding(role: &str, subject: Value) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": "llm-console", "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [subject],
    }))
    .unwrap()
}

/// The API server's answer to creating `object` (a dry run unless `for_real`): `Ok` or the
/// refusal's message.
async fn create<K>(api: &Api<K>, object: &K, for_real: bool) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let params = PostParams {
        dry_run: !for_real,
        ..PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(format!("{} {}", status.code, status.message)),
        Err(error) => panic!("{error}"),
    }
}

fn assert_policy_refused(what: &str, result: Result<(), String>, expected: &str) {
    let message = result.expect_err(what);
    assert!(
        message.starts_with("403")
            && message.contains("ValidatingAdmissionPolicy")
            && message.contains(expected),
        "{what}: {message}"
    );
}

async fn operator_client(admin: &Client, namespace: &str) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(admin, namespace, OPERATOR, dir.path()).await;
    client_from(&kubeconfig).await
}

#[tokio::test]
async fn the_operator_may_write_only_the_consoles_role_and_binding() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    let namespace = cluster.namespace(&admin, "vap-rbac").await.unwrap();
    install_operator_chart(
        cluster.kubeconfig(),
        "diloco",
        &namespace,
        &["console.enabled=true"],
    );
    let operator = operator_client(&admin, &namespace).await;
    let roles = Api::<Role>::namespaced(operator.clone(), &namespace);
    let bindings = Api::<RoleBinding>::namespaced(operator.clone(), &namespace);
    let read_all =
        role(json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]));
    wait_until(Duration::from_secs(30), "the policies in force", || async {
        create(&roles, &read_all, false)
            .await
            .err()
            .filter(|m| m.contains("ValidatingAdmissionPolicy"))
            .map(|_| ())
    })
    .await;

    let console_rule = json!({"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["llm-console-client-tls"], "verbs": ["get"]});
    let expected_role =
        "may only create Roles that allow `get` on the Secret llm-console-client-tls";
    for (what, rules) in [
        (
            "get and list on every Secret",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]),
        ),
        (
            "get on another Secret",
            json!([{"apiGroups": [""], "resources": ["secrets"],
                                          "resourceNames": ["llm-token"], "verbs": ["get"]}]),
        ),
        (
            "a second rule",
            json!([console_rule.clone(),
                                 {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
        ),
        (
            "another resource",
            json!([{"apiGroups": [""], "resources": ["configmaps"],
                                     "resourceNames": ["llm-console-client-tls"], "verbs": ["get"]}]),
        ),
    ] {
        assert_policy_refused(
            what,
            create(&roles, &role(rules), false).await,
            expected_role,
        );
    }
    let mut unlabelled = role(json!([console_rule.clone()]));
    unlabelled.metadata.labels = None;
    // Two policies refuse it (the labels policy and the roles policy, which cannot read the
    // server's name without the label); the API server reports whichever it evaluates first.
    assert_policy_refused(
        "an unlabelled Role",
        create(&roles, &unlabelled, false).await,
        "Role llm-console",
    );
    // The console's Role passes (created for real: a binding needs its Role to exist).
    create(&roles, &role(json!([console_rule])), true)
        .await
        .expect("the console's Role is admitted");

    let console = json!({"kind": "ServiceAccount", "name": CONSOLE, "namespace": namespace});
    create(&bindings, &binding("llm-console", console.clone()), false)
        .await
        .expect("the console's binding is admitted");
    let expected_binding = "may only bind the Role <server>-console";
    for (what, object) in [
        (
            "to another ServiceAccount",
            binding(
                "llm-console",
                json!({"kind": "ServiceAccount", "name": "default", "namespace": namespace}),
            ),
        ),
        (
            "to a user",
            binding(
                "llm-console",
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}),
            ),
        ),
        (
            "the operator's own Role",
            binding(OPERATOR, console.clone()),
        ),
    ] {
        assert_policy_refused(
            what,
            create(&bindings, &object, false).await,
            expected_binding,
        );
    }
    // Cluster-admin is not the policy's business.
    let admin_roles = Api::<Role>::namespaced(admin.clone(), &namespace);
    let mut admins_own = read_all.clone();
    admins_own.metadata.name = Some("reader".into());
    assert_eq!(create(&admin_roles, &admins_own, false).await, Ok(()));
}
