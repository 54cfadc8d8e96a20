//! Asks the running coordinator for its round and workers (`GET /status`), over mTLS with the
//! operator's own client certificate (or its bearer token when client certificates are not
//! accepted). It connects to a ready coordinator pod's IP, verifying the certificate for the
//! control Service's DNS name, so it works whether or not the operator can resolve cluster
//! DNS. Failure is a message, never an error.
//!
//! What it trusts: only a pod whose ReplicaSet is controlled by this server's Deployment (a
//! pod anyone labelled like a coordinator gets nothing), a reply of at most
//! [`MAX_REPLY_BYTES`], and it never sends a bearer token over cleartext: with TLS off it asks
//! only when authentication is off too.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use diloco_crds::{ClientAuth, CoordinatorStatus, DiLoCoServer};

use crate::names::{ChildNames, Component};
use crate::reconcile::build::{Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::LeafRole;
use crate::reconcile::status::CoordinatorProbe;

/// A poll that takes longer than this reports the coordinator unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest `/status` reply read; a real one is a few hundred bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct StatusReply {
    sync_round: i64,
    num_registered: i32,
    last_outer_step_seconds: Option<f64>,
}

/// Polls the coordinator of `server` at the IP of a ready pod of `deployment_uid`.
pub async fn probe(
    client: &Client,
    server: &DiLoCoServer,
    credentials: &Credentials,
    namespace: &str,
    deployment_uid: &str,
) -> CoordinatorProbe {
    let names = ChildNames::new(server.metadata.name.as_deref().unwrap_or_default());
    match ready_address(client, namespace, &names, deployment_uid).await {
        Ok(address) => probe_at(server, credentials, namespace, address).await,
        Err(why) => CoordinatorProbe::Unreachable(why),
    }
}

/// Polls the coordinator of `server` at a known pod IP (no request to the API server).
pub async fn probe_at(
    server: &DiLoCoServer,
    credentials: &Credentials,
    namespace: &str,
    address: IpAddr,
) -> CoordinatorProbe {
    match try_probe(server, credentials, namespace, address).await {
        Ok(status) => CoordinatorProbe::Reported(status),
        Err(why) => CoordinatorProbe::Unreachable(why),
    }
}

async fn try_probe(
    server: &DiLoCoServer,
    credentials: &Credentials,
    namespace: &str,
    address: IpAddr,
) -> Result<CoordinatorStatus, String> {
    let names = ChildNames::new(server.metadata.name.as_deref().unwrap_or_default());
    let service = names.control_service();
    let port = u16::try_from(server.spec.control.port).map_err(|e| e.to_string())?;
    let host = format!("{service}.{namespace}.svc");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .resolve(&host, SocketAddr::new(address, port));
    let scheme = if credentials.tls.enabled() {
        "https"
    } else {
        "http"
    };
    let mut use_certificate = false;
    if let Some(bundle) = credentials.tls.trust_bundle() {
        for certificate in reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
            .map_err(|e| format!("the CA bundle does not parse: {e}"))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let TlsSource::Owned(pki) = &credentials.tls
        && server.spec.tls.client_auth == ClientAuth::Optional
        && let Some(leaf) = pki.leaves.get(&LeafRole::Operator)
    {
        let pem = format!("{}\n{}", leaf.keyed.cert_pem, leaf.keyed.key_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|_| "the operator's client certificate does not load".to_string())?;
        builder = builder.identity(identity);
        use_certificate = true;
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let mut request = http.get(format!("{scheme}://{host}:{port}/status"));
    let token = match &credentials.token {
        TokenSource::Owned(plan) => Some(plan.token().to_string()),
        TokenSource::Referenced { token, .. } => Some(token.clone()),
        TokenSource::Disabled => None,
    };
    match token {
        _ if use_certificate => {}
        // A bearer token goes only over TLS; the operator never leaks one to whatever answers.
        Some(token) if credentials.tls.enabled() => request = request.bearer_auth(token),
        Some(_) => {
            return Err(
                "not polled: TLS is off, and the operator never sends a bearer token in clear"
                    .into(),
            );
        }
        None => {}
    }
    let mut response = request.send().await.map_err(|e| describe(&e))?;
    if !response.status().is_success() {
        return Err(format!("GET /status answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(format!(
                "GET /status replied with more than {MAX_REPLY_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let reply: StatusReply = serde_json::from_slice(&body)
        .map_err(|e| format!("GET /status returned an unexpected body: {e}"))?;
    Ok(CoordinatorStatus {
        round: reply.sync_round,
        workers: reply.num_registered,
        last_outer_step_seconds: reply.last_outer_step_seconds,
    })
}

/// The IP of a ready coordinator pod of the server: one whose controlling ReplicaSet is
/// controlled by the Deployment with `deployment_uid`.
pub async fn ready_address(
    client: &Client,
    namespace: &str,
    names: &ChildNames,
    deployment_uid: &str,
) -> Result<IpAddr, String> {
    let selector = names
        .selector_labels(Component::Coordinator)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("cannot list the coordinator pods: {e}"))?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    for pod in &list.items {
        let ready = pod.metadata.deletion_timestamp.is_none()
            && pod.status.as_ref().is_some_and(|status| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        let address = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let (true, Some(address)) = (ready, address) else {
            continue;
        };
        let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
            continue;
        };
        let replica_set = replica_sets
            .get_metadata_opt(&owner.name)
            .await
            .map_err(|e| format!("cannot read ReplicaSet {}: {e}", owner.name))?;
        let owned = replica_set.is_some_and(|rs| {
            rs.metadata.uid.as_deref() == Some(owner.uid.as_str())
                && controller_of(&rs.metadata)
                    .is_some_and(|d| d.kind == "Deployment" && d.uid == deployment_uid)
        });
        if owned {
            return Ok(address);
        }
    }
    Err("no coordinator pod of this server's Deployment is ready".to_string())
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The error chain of a request failure in one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
