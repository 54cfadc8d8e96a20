//! `credentials NAME --out DIR`: the worker bundle the operator publishes, as private files.

use diloco_contract::credentials::{
    CA_CERT, ENDPOINTS, Endpoints, TLS_CERT, TLS_KEY, TOKEN, WORKER_BUNDLE,
};
use diloco_contract::env;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::bundle::{BundleFile, DIR_MODE, FILE_MODE, write_bundle};
use crate::cli::{CredentialsArgs, GlobalArgs};
use crate::commands::get_server;
use crate::error::{PluginError, Result, kube_error};
use crate::kube_access::Cluster;

/// Reads the Secret named in `status.secrets.workerCredentials` and writes its files.
pub async fn run(global: &GlobalArgs, args: &CredentialsArgs) -> Result<()> {
    let cluster = Cluster::connect(global).await?;
    let namespace = &cluster.namespace;
    let name = &args.name;
    let server = get_server(&cluster, name).await?;
    let secret_name = server
        .status
        .as_ref()
        .and_then(|s| s.secrets.as_ref())
        .and_then(|s| s.worker_credentials.clone())
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "{namespace}/{name} has no worker bundle yet (status.secrets.workerCredentials \
                 is empty): the operator has not reconciled it. See its conditions: kubectl \
                 diloco status {name} -n {namespace}"
            ))
        })?;
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), namespace)
        .get(&secret_name)
        .await
        .map_err(|e| kube_error(&format!("Secret {namespace}/{secret_name}"), e))?;
    let mut data = secret.data.unwrap_or_default();
    // Only the bundle's known file names: a key is a file name, so nothing else is written.
    let files: Vec<BundleFile> = WORKER_BUNDLE
        .iter()
        .filter_map(|key| {
            data.remove(*key).map(|value| BundleFile {
                name: (*key).to_string(),
                contents: value.0,
            })
        })
        .collect();
    if files.is_empty() {
        return Err(PluginError::Usage(format!(
            "Secret {namespace}/{secret_name} holds none of the bundle's files ({})",
            WORKER_BUNDLE.join(", ")
        )));
    }
    let control_url = files
        .iter()
        .find(|f| f.name == ENDPOINTS)
        .and_then(|f| serde_json::from_slice::<Endpoints>(&f.contents).ok())
        .map(|e| e.control);
    write_bundle(&args.out, &files)?;

    let dir = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    let dir_shown = dir.display();
    println!(
        "Wrote the worker bundle of {namespace}/{name} (Secret {secret_name}) to {dir_shown} \
         (mode {DIR_MODE:04o}, files {FILE_MODE:04o}):"
    );
    for file in &files {
        println!("  {}", file.name);
    }
    println!();
    println!("Point a worker at it (it reads the files; the token is never an argument):");
    println!("  export {}={dir_shown}", env::CREDENTIALS_DIR);
    println!("or file by file:");
    if let Some(url) = &control_url {
        println!("  export {}={url}", env::URL);
    }
    let has = |key: &str| files.iter().any(|f| f.name == key);
    if has(TOKEN) {
        println!("  export {}={dir_shown}/{TOKEN}", env::TOKEN_FILE);
    }
    if has(CA_CERT) {
        println!("  export {}={dir_shown}/{CA_CERT}", env::CA_FILE);
    }
    if has(TLS_CERT) && has(TLS_KEY) {
        println!("  export {}={dir_shown}/{TLS_CERT}", env::CLIENT_CERT);
        println!("  export {}={dir_shown}/{TLS_KEY}", env::CLIENT_KEY);
    }
    if let Some(url) = &control_url {
        println!();
        println!(
            "{url} is the address inside the cluster; from elsewhere set {} to an address \
             you can reach (its host must be one the server certificate names: \
             spec.control.externalNames).",
            env::URL
        );
    }
    if has(TOKEN) {
        println!(
            "After `kubectl diloco rotate-token {name}`, run this again into a new directory: \
             the old token stops working when the grace period ends."
        );
    }
    Ok(())
}
