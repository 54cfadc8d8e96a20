//! What the console's tests set up around it on the real control plane: a TLS coordinator
//! whose clients file names the console, the console's client-certificate Secret as the
//! operator stores it, and ServiceAccounts with a Role on DiLoCoServers and a token each.

use std::collections::BTreeMap;
use std::path::Path;

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::pki::{Pem, TestCa};
use crate::processes::CoordinatorProcess;
use crate::tokens::TestTokens;

/// The name of the single tensor of the coordinator's initial parameters.
pub const PARAMETER: &str = "w";
/// Its shape.
pub const PARAMETER_SHAPE: [usize; 2] = [4, 8];

/// The clients file with a worker `site-a` and the console in `role` (or without it).
pub fn clients(console_role: Option<&str>) -> String {
    let mut clients = vec![json!({"name": "site-a", "role": "worker"})];
    if let Some(role) = console_role {
        clients.push(json!({"name": "diloco-console", "role": role}));
    }
    json!({ "clients": clients }).to_string()
}

/// Replaces a file in one step, as the kubelet updates a mounted Secret.
pub fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("the temporary file can be written");
    std::fs::rename(&temp, path).expect("the temporary file can be renamed");
}

/// A coordinator in `dir` with TLS (server certificate for `service_host`, the name
/// `<server>-control.<ns>.svc`), client certificates from `ca`, the console an admin in
/// `clients.json`, bearer tokens for workers, an audit log in `audit.jsonl`, and the extra
/// top-level YAML `extra_config` (for example a `training:` line). Returns it and its tokens.
pub fn start_coordinator(
    dir: &Path,
    ca: &TestCa,
    service_host: &str,
    extra_config: &str,
) -> (CoordinatorProcess, TestTokens) {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).expect("the pki directory can be created");
    std::fs::write(pki.join("ca.pem"), ca.cert_pem()).expect("the CA can be written");
    let server = ca.server(&[service_host]);
    std::fs::write(pki.join("server.pem"), &server.cert).expect("the certificate can be written");
    std::fs::write(pki.join("server.key"), &server.key).expect("the key can be written");
    let tokens = TestTokens::write(dir);
    replace(&dir.join("clients.json"), &clients(Some("admin")));
    let layout = ModelLayout::new(vec![(PARAMETER.into(), PARAMETER_SHAPE.to_vec())])
        .expect("a valid layout");
    let count = PARAMETER_SHAPE.iter().product();
    let blob = safetensors::encode(
        &layout,
        &vec![0.5; count],
        WireDtype::Fp32,
        &BTreeMap::new(),
    );
    std::fs::write(dir.join("init.safetensors"), blob).expect("the parameters can be written");
    let config = format!(
        "tls: {{cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem}}\n\
         auth: {{{}, clients_file: clients.json}}\n\
         model: {{initial_parameters: init.safetensors}}\n\
         checkpoint: {{dir: checkpoints, every_rounds: 0}}\n\
         audit: {{path: audit.jsonl}}\n{extra_config}\n",
        tokens.auth_keys()
    );
    (CoordinatorProcess::start(dir, &config), tokens)
}

/// Stores the console's client certificate for `server` as the operator would, in the Secret
/// `<server>-console-client-tls` with the CA it trusts for the coordinator.
pub async fn put_console_secret(
    admin: &Client,
    namespace: &str,
    server: &str,
    pem: &Pem,
    ca: &str,
) {
    let name = format!("{server}-console-client-tls");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": pem.cert, "tls.key": pem.key, "ca.crt": ca},
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(admin.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply("diloco-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("the console's Secret is applied");
}

/// A ServiceAccount `name` bound to a Role with `verbs` on DiLoCoServers; a fresh token for it
/// (an hour long).
pub async fn user_with(admin: &Client, namespace: &str, name: &str, verbs: &[&str]) -> String {
    let post = PostParams::default();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ServiceAccount");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": name}, "rules": [
        {"apiGroups": ["diloco.dev"], "resources": ["dilocoservers"], "verbs": verbs}]}))
    .expect("a Role");
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}))
    .expect("a RoleBinding");
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    accounts
        .create(&post, &account)
        .await
        .expect("the ServiceAccount is created");
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&post, &role)
        .await
        .expect("the Role is created");
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&post, &binding)
        .await
        .expect("the RoleBinding is created");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &post, &request)
        .await
        .expect("a TokenRequest is answered")
        .status
        .and_then(|status| status.token)
        .expect("a token in the TokenRequest status")
}
