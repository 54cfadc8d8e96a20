//! Small helpers for tests against the local control plane: install the CRD, apply a
//! `DiLoCoServer`, poll until something holds.

use std::future::Future;
use std::time::{Duration, Instant};

use diloco_crds::{DiLoCoServer, crd};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource};

/// Installs (or updates) the `DiLoCoServer` CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("diloco-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD not Established within 30 s")
        .expect("watch the CRD");
}

/// Applies `spec` (JSON) as the `DiLoCoServer` `name` in `namespace`, with `annotations`.
pub async fn apply_server(
    client: &Client,
    namespace: &str,
    name: &str,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> DiLoCoServer {
    let object = serde_json::json!({
        "apiVersion": DiLoCoServer::api_version(&()),
        "kind": DiLoCoServer::kind(&()),
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    });
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("diloco-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .expect("apply the DiLoCoServer")
}

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of condition `type_` of a server, if set.
pub fn condition<'a>(
    server: &'a DiLoCoServer,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    server
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}
