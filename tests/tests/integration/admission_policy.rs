//! The chart's ValidatingAdmissionPolicies on the real API server: acting as the operator's
//! ServiceAccount (a TokenRequest token, as the operator runs), the coordinator Deployment the
//! operator builds (its golden build fixture) and labelled children are admitted, and each
//! non-conforming variant is refused with the policy's own message; image prefixes follow the
//! operator's `--allowed-image-prefix` rule; the same objects from cluster-admin are not the
//! policy's business; and the API server type-checks every expression without a warning.

use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::chart::install_operator_chart;
use diloco_tests::kube_helpers::wait_until;
use diloco_tests::local_cluster::repo_root;
use diloco_tests::service_accounts::{client_from, service_account_kubeconfig};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The chart's release name; its ServiceAccount is [`SERVICE_ACCOUNT`].
const RELEASE: &str = "diloco";
const SERVICE_ACCOUNT: &str = "diloco-diloco-operator";
/// Besides the chart's coordinator repository, a whole registry path, to cover both prefix
/// forms.
const MIRROR: &str = "mirror.example/team/";
/// Where every refusal message of the policies starts.
const DENIED: &str = "the diloco-operator may";

/// A client authenticated with a fresh token of `namespace/service_account`, and nothing else.
async fn service_account_client(admin: &Client, namespace: &str, service_account: &str) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig =
        service_account_kubeconfig(admin, namespace, service_account, dir.path()).await;
    client_from(&kubeconfig).await
}

/// The coordinator Deployment exactly as the operator's build step makes it (its golden
/// fixture), in `namespace`, without the owner reference to a server that does not exist here.
fn coordinator_deployment(namespace: &str) -> Value {
    let path = repo_root().join("operator/src/reconcile/build/fixtures/minimal-deployment.yaml");
    let mut deployment: Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let metadata = deployment["metadata"].as_object_mut().unwrap();
    metadata.remove("ownerReferences");
    metadata.insert("namespace".into(), namespace.into());
    deployment
}

/// The labels every child of server `llm` carries.
fn child_labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "diloco-operator", "diloco.dev/server": "llm"})
}

/// A request the API server refused: its HTTP status and message.
#[derive(Debug, PartialEq)]
struct Refused {
    code: u16,
    message: String,
}

/// Creates `object` as `client` (a dry run unless `for_real`): `Ok` or why it was refused.
async fn create<K>(
    client: &Client,
    namespace: &str,
    object: &Value,
    for_real: bool,
) -> Result<(), Refused>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let typed: K = serde_json::from_value(object.clone()).unwrap();
    let params = PostParams {
        dry_run: !for_real,
        ..PostParams::default()
    };
    match Api::<K>::namespaced(client.clone(), namespace)
        .create(&params, &typed)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(Refused {
            code: status.code,
            message: status.message,
        }),
        Err(error) => panic!("creating {} failed: {error}", K::kind(&())),
    }
}

/// Asserts that `result` is the policy's refusal (403), with `expected` in its message.
fn assert_refused(what: &str, result: Result<(), Refused>, expected: &str) {
    match result {
        Ok(()) => panic!("{what}: admitted, but the policy must refuse it"),
        Err(Refused { code, message }) => assert!(
            code == 403
                && message.contains("ValidatingAdmissionPolicy")
                && message.contains(DENIED)
                && message.contains(expected),
            "{what}: refused, but not with the policy's message `{expected}`: {code} {message}"
        ),
    }
}

/// Whether the API server itself refuses privileged containers (`--allow-privileged=false`,
/// as `scripts/local-cluster` and hardened clusters run it): its validation then refuses them
/// for everyone (422) before any admission policy runs.
fn privileged_disallowed_by_the_api_server(result: &Result<(), Refused>) -> bool {
    matches!(result, Err(Refused { code: 422, message })
        if message.contains("privileged: Forbidden: disallowed by cluster policy"))
}

/// A Deployment variant: the conforming one with `change` applied to it.
struct Variant {
    what: &'static str,
    change: fn(&mut Value),
    message: &'static str,
}

fn container(deployment: &mut Value) -> &mut Value {
    &mut deployment["spec"]["template"]["spec"]["containers"][0]
}

fn pod(deployment: &mut Value) -> &mut Value {
    &mut deployment["spec"]["template"]["spec"]
}

/// Every non-conforming Deployment, each breaking exactly one rule.
fn non_conforming_deployments() -> Vec<Variant> {
    vec![
        Variant {
            what: "no managed-by label",
            change: |d| {
                d["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("app.kubernetes.io/managed-by");
            },
            message: "Deployment llm-coordinator is not labelled",
        },
        Variant {
            what: "managed by another tool",
            change: |d| d["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm".into(),
            message: "Deployment llm-coordinator is not labelled",
        },
        Variant {
            what: "no server label",
            change: |d| {
                d["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("diloco.dev/server");
            },
            message: "Deployment llm-coordinator is not labelled",
        },
        Variant {
            what: "a privileged container",
            // allowPrivilegeEscalation: false with privileged is invalid; the privileged
            // rule comes first in the policy, so its message is the one reported.
            change: |d| {
                container(d)["securityContext"]["privileged"] = true.into();
                container(d)["securityContext"]["allowPrivilegeEscalation"] = true.into();
            },
            message: "privileged container",
        },
        Variant {
            what: "hostNetwork",
            change: |d| pod(d)["hostNetwork"] = true.into(),
            message: "hostNetwork",
        },
        Variant {
            what: "hostPID",
            change: |d| pod(d)["hostPID"] = true.into(),
            message: "hostPID",
        },
        Variant {
            what: "hostIPC",
            change: |d| pod(d)["hostIPC"] = true.into(),
            message: "hostIPC",
        },
        Variant {
            what: "a hostPath volume",
            change: |d| {
                pod(d)["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "host", "hostPath": {"path": "/"}}));
            },
            message: "hostPath",
        },
        Variant {
            what: "a hostPort",
            change: |d| container(d)["ports"][0]["hostPort"] = 8512.into(),
            message: "hostPorts",
        },
        Variant {
            what: "allowPrivilegeEscalation: true",
            change: |d| container(d)["securityContext"]["allowPrivilegeEscalation"] = true.into(),
            message: "allowPrivilegeEscalation: false",
        },
        Variant {
            what: "allowPrivilegeEscalation unset",
            change: |d| {
                container(d)["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            },
            message: "allowPrivilegeEscalation: false",
        },
        Variant {
            what: "runAsNonRoot: false on the container (the pod says true)",
            change: |d| container(d)["securityContext"]["runAsNonRoot"] = false.into(),
            message: "runAsNonRoot: true",
        },
        Variant {
            what: "runAsNonRoot on neither container nor pod",
            change: |d| {
                container(d)["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("runAsNonRoot");
                pod(d)["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("runAsNonRoot");
            },
            message: "runAsNonRoot: true",
        },
        Variant {
            what: "an added capability",
            change: |d| {
                container(d)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]);
            },
            message: "add capabilities",
        },
        Variant {
            what: "an automounted ServiceAccount token",
            change: |d| pod(d)["automountServiceAccountToken"] = true.into(),
            message: "automountServiceAccountToken: false",
        },
        Variant {
            what: "automountServiceAccountToken unset (the ServiceAccount's default applies)",
            change: |d| {
                pod(d)
                    .as_object_mut()
                    .unwrap()
                    .remove("automountServiceAccountToken");
            },
            message: "automountServiceAccountToken: false",
        },
        Variant {
            what: "a projected ServiceAccount token",
            change: |d| {
                pod(d)["volumes"].as_array_mut().unwrap().push(json!({
                    "name": "api-token",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}
                }));
            },
            message: "projected ServiceAccount token",
        },
        Variant {
            what: "a foreign image",
            change: |d| container(d)["image"] = "evil.example/miner:1".into(),
            message: "may not run image(s) evil.example/miner:1",
        },
        Variant {
            what: "a foreign image in an init container",
            change: |d| {
                let mut init = container(d).clone();
                init["name"] = "init".into();
                init["image"] = "evil.example/miner:1".into();
                init.as_object_mut().unwrap().remove("readinessProbe");
                init.as_object_mut().unwrap().remove("livenessProbe");
                init.as_object_mut().unwrap().remove("ports");
                pod(d)["initContainers"] = json!([init]);
            },
            message: "may not run image(s) evil.example/miner:1",
        },
    ]
}

/// Waits until the API server type-checked the chart's policies; returns them.
async fn type_checked_policies(admin: &Client, namespace: &str) -> Vec<ValidatingAdmissionPolicy> {
    wait_until(
        Duration::from_secs(30),
        "the policies type-checked",
        || async {
            let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone())
                .list(&Default::default())
                .await
                .ok()?;
            let ours: Vec<_> = policies
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.ends_with(&format!(".{namespace}.diloco.dev")))
                })
                .collect();
            let checked = ours.len() == 5
                && ours.iter().all(|p| {
                    let status = p.status.as_ref();
                    status.and_then(|s| s.observed_generation) == p.metadata.generation
                        && status.and_then(|s| s.type_checking.as_ref()).is_some()
                });
            checked.then_some(ours)
        },
    )
    .await
}

/// The chart in `namespace`, its admission policy allowing the coordinator's image and the
/// test mirror's.
fn install_chart_admitting_the_mirror(kubeconfig: &std::path::Path, namespace: &str) {
    install_operator_chart(
        kubeconfig,
        RELEASE,
        namespace,
        &[&format!(
            "allowedImages={{ghcr.io/diloco-dev/diloco-coordinator,{MIRROR}}}"
        )],
    );
}

#[tokio::test]
async fn the_operators_identity_may_create_only_restricted_labelled_children() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    let namespace = cluster.namespace(&admin, "vap").await.unwrap();
    install_chart_admitting_the_mirror(cluster.kubeconfig(), &namespace);

    for policy in type_checked_policies(&admin, &namespace).await {
        let warnings = policy
            .status
            .and_then(|s| s.type_checking)
            .and_then(|t| t.expression_warnings)
            .unwrap_or_default();
        assert!(
            warnings.is_empty(),
            "{:?}: the API server's type check warns: {warnings:#?}",
            policy.metadata.name
        );
    }

    let operator = service_account_client(&admin, &namespace, SERVICE_ACCOUNT).await;
    // The API server loads new policies asynchronously: wait until one visibly applies.
    let unlabelled_config = json!({"metadata": {"name": "not-a-child"}, "data": {"k": "v"}});
    wait_until(Duration::from_secs(30), "the policies in force", || async {
        create::<ConfigMap>(&operator, &namespace, &unlabelled_config, false)
            .await
            .err()
            .filter(|r| r.message.contains("ValidatingAdmissionPolicy"))
            .map(|_| ())
    })
    .await;

    // What the operator really makes is admitted (created for real at the end, so that the
    // dry runs of its variants below do not collide with it).
    let conforming = coordinator_deployment(&namespace);
    create::<Deployment>(&operator, &namespace, &conforming, false)
        .await
        .expect("the operator's own coordinator Deployment is admitted");
    let labelled_config =
        json!({"metadata": {"name": "llm-coordinator-config", "labels": child_labels()}});
    create::<ConfigMap>(&operator, &namespace, &labelled_config, true)
        .await
        .expect("a labelled ConfigMap is admitted");
    let service = json!({
        "metadata": {"name": "llm-control", "labels": child_labels()},
        "spec": {"ports": [{"name": "control", "port": 8512}]}
    });
    create::<Service>(&operator, &namespace, &service, false)
        .await
        .expect("a labelled Service is admitted");
    // A spec may name its own ServiceAccount: harmless, because no token can be mounted.
    let mut own_service_account = conforming.clone();
    pod(&mut own_service_account)["serviceAccountName"] = "team-runner".into();
    create::<Deployment>(&operator, &namespace, &own_service_account, false)
        .await
        .expect("another ServiceAccount without a token is admitted");

    // Each non-conforming object is refused with its own message; cluster-admin is not affected.
    assert_refused(
        "a ConfigMap without labels",
        create::<ConfigMap>(&operator, &namespace, &unlabelled_config, false).await,
        "ConfigMap not-a-child is not labelled",
    );
    let unlabelled_secret = json!({"metadata": {"name": "stolen"}, "stringData": {"token": "x"}});
    assert_refused(
        "a Secret without labels",
        create::<Secret>(&operator, &namespace, &unlabelled_secret, false).await,
        "Secret stolen is not labelled",
    );
    let mut external = service.clone();
    external["spec"]["externalIPs"] = json!(["203.0.113.7"]);
    assert_refused(
        "a Service with externalIPs",
        create::<Service>(&operator, &namespace, &external, false).await,
        "externalIPs",
    );
    assert!(
        create::<ConfigMap>(&admin, &namespace, &unlabelled_config, false)
            .await
            .is_ok()
    );
    assert!(
        create::<Secret>(&admin, &namespace, &unlabelled_secret, false)
            .await
            .is_ok()
    );
    assert!(
        create::<Service>(&admin, &namespace, &external, false)
            .await
            .is_ok()
    );
    for variant in non_conforming_deployments() {
        let mut deployment = conforming.clone();
        (variant.change)(&mut deployment);
        let by_operator = create::<Deployment>(&operator, &namespace, &deployment, false).await;
        let by_admin = create::<Deployment>(&admin, &namespace, &deployment, false).await;
        if privileged_disallowed_by_the_api_server(&by_admin) {
            // Nobody gets a privileged pod here; the policy's rule is for clusters that allow
            // them. It is still refused for the operator, just earlier.
            assert!(privileged_disallowed_by_the_api_server(&by_operator));
            eprintln!(
                "{}: refused by the API server itself (--allow-privileged=false)",
                variant.what
            );
            continue;
        }
        assert_refused(variant.what, by_operator, variant.message);
        assert_eq!(
            by_admin,
            Ok(()),
            "{}: cluster-admin is not subject to the policy",
            variant.what
        );
    }

    create::<Deployment>(&operator, &namespace, &conforming, true)
        .await
        .expect("the operator's own coordinator Deployment is created");

    // Updates are checked too: the operator cannot strip its labels from a child.
    let unlabel = Patch::Merge(json!({"metadata": {"labels": {"diloco.dev/server": null}}}));
    let patched = Api::<ConfigMap>::namespaced(operator.clone(), &namespace)
        .patch("llm-coordinator-config", &PatchParams::default(), &unlabel)
        .await;
    match patched {
        Err(kube::Error::Api(status)) => assert_refused(
            "removing a child's server label",
            Err(Refused {
                code: status.code,
                message: status.message,
            }),
            "ConfigMap llm-coordinator-config is not labelled",
        ),
        other => panic!("removing a child's server label: {other:?}"),
    }
}

#[tokio::test]
async fn image_prefixes_follow_the_operators_allowlist_rule() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    let namespace = cluster.namespace(&admin, "vap-images").await.unwrap();
    install_chart_admitting_the_mirror(cluster.kubeconfig(), &namespace);
    let operator = service_account_client(&admin, &namespace, SERVICE_ACCOUNT).await;
    let conforming = coordinator_deployment(&namespace);
    let with_image = |image: &str| {
        let mut deployment = conforming.clone();
        container(&mut deployment)["image"] = image.into();
        deployment
    };
    wait_until(Duration::from_secs(30), "the policies in force", || async {
        create::<Deployment>(
            &operator,
            &namespace,
            &with_image("evil.example/x:1"),
            false,
        )
        .await
        .err()
        .filter(|r| r.message.contains("ValidatingAdmissionPolicy"))
        .map(|_| ())
    })
    .await;

    // The cases of settings.rs's `an_image_prefix_allows_its_tags_and_digests_but_not_a_longer_name`.
    let digest = format!(
        "ghcr.io/diloco-dev/diloco-coordinator@sha256:{}",
        "ab".repeat(32)
    );
    let table: [(&str, bool); 9] = [
        ("ghcr.io/diloco-dev/diloco-coordinator", true),
        ("ghcr.io/diloco-dev/diloco-coordinator:0.1.0", true),
        (&digest, true),
        ("mirror.example/team/anything:3", true),
        ("ghcr.io/diloco-dev/diloco-coordinator-evil:1", false),
        ("ghcr.io/diloco-dev/diloco-coord:1", false),
        (
            "evil.example/ghcr.io/diloco-dev/diloco-coordinator:1",
            false,
        ),
        ("mirror.example/team/", false),
        ("mirror.example/teammate:1", false),
    ];
    for (image, allowed) in table {
        let result = create::<Deployment>(&operator, &namespace, &with_image(image), false).await;
        if allowed {
            assert_eq!(result, Ok(()), "{image} is allowed");
        } else {
            assert_refused(image, result, &format!("may not run image(s) {image}:"));
        }
    }
}
