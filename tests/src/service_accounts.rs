//! Acting as a ServiceAccount in tests (the operator's, as its pods would): a fresh
//! TokenRequest token in a kubeconfig of its own, and a client from it. Cluster tools
//! (`helm`, `kubectl`) from the project's cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::LocalCluster;
use crate::local_cluster::repo_root;

/// `helm` or `kubectl` from the project's cached tools, run from the repository root.
pub fn kube_tool(name: &str) -> Command {
    let output = Command::new("bash")
        .arg("-c")
        .arg("source scripts/common.sh && echo \"$KUBE_TOOLS_DIR/bin\"")
        .current_dir(repo_root())
        .output()
        .expect("scripts/common.sh names the tools directory");
    let bin = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let mut command = Command::new(Path::new(&bin).join(name));
    command.current_dir(repo_root());
    command
}

/// A kubeconfig file in `dir` that authenticates as `namespace/service_account` with a fresh
/// one-hour token (written by this process, never a command-line argument).
pub async fn service_account_kubeconfig(
    admin: &Client,
    namespace: &str,
    service_account: &str,
    dir: &Path,
) -> PathBuf {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .expect("a TokenRequest for the ServiceAccount")
        .status
        .expect("a token in the TokenRequest status")
        .token;
    let admin_config: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(LocalCluster::shared().kubeconfig())
            .expect("the admin kubeconfig is readable"),
    )
    .expect("the admin kubeconfig is YAML");
    let cluster = &admin_config["clusters"][0]["cluster"];
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": service_account, "namespace": namespace}}],
        "current-context": "local",
    });
    let path = dir.join(format!("{service_account}.kubeconfig"));
    let text = serde_norway::to_string(&kubeconfig).expect("a kubeconfig serialises");
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// A client that uses `kubeconfig`.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("a readable kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client from the kubeconfig")
}
