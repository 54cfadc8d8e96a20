//! Asks the running coordinator for its round and workers (`GET /status`), over mTLS with the
//! operator's own client certificate (or its bearer token when client certificates are not
//! accepted). It connects to a ready coordinator pod's IP, verifying the certificate for the
//! control Service's DNS name, so it works whether or not the operator can resolve cluster
//! DNS. Failure is a message, never an error.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
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

#[derive(Deserialize)]
struct StatusReply {
    sync_round: i64,
    num_registered: i32,
    last_outer_step_seconds: Option<f64>,
}

/// Polls the coordinator of `server` at the IP of a ready coordinator pod.
pub async fn probe(
    client: &Client,
    server: &DiLoCoServer,
    credentials: &Credentials,
    namespace: &str,
) -> CoordinatorProbe {
    let names = ChildNames::new(server.metadata.name.as_deref().unwrap_or_default());
    match ready_address(client, namespace, &names).await {
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
    let mut use_token = true;
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
        use_token = false;
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let mut request = http.get(format!("{scheme}://{host}:{port}/status"));
    let token = match &credentials.token {
        TokenSource::Owned(plan) => Some(plan.token().to_string()),
        TokenSource::Referenced { token, .. } => Some(token.clone()),
        TokenSource::Disabled => None,
    };
    if let Some(token) = token.filter(|_| use_token) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| describe(&e))?;
    if !response.status().is_success() {
        return Err(format!("GET /status answered {}", response.status()));
    }
    let reply: StatusReply = response
        .json()
        .await
        .map_err(|e| format!("GET /status returned an unexpected body: {e}"))?;
    Ok(CoordinatorStatus {
        round: reply.sync_round,
        workers: reply.num_registered,
        last_outer_step_seconds: reply.last_outer_step_seconds,
    })
}

/// The IP of a ready coordinator pod of the server.
pub async fn ready_address(
    client: &Client,
    namespace: &str,
    names: &ChildNames,
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
    list.items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.status.as_ref())
        .filter(|status| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .find_map(|status| status.pod_ip.as_deref()?.parse().ok())
        .ok_or_else(|| "no coordinator pod is ready".to_string())
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
