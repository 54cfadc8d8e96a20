//! Where a server's coordinator is and the certificate the console shows it, both derived
//! from Kubernetes objects (the `DiLoCoServer` and the console's Secret), never from a request.

use axum::http::StatusCode;
use diloco_contract::console::CONSOLE_CLIENT_TLS_SUFFIX;
use diloco_contract::credentials::{CA_CERT, TLS_CERT, TLS_KEY};
use diloco_crds::{ClientAuth, DiLoCoServer, TlsMode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::error::{ApiError, kube_failure};

/// `<name>-control`: the Service of a server's control plane (the operator's naming).
pub fn control_service(name: &str) -> String {
    format!("{name}-control")
}

/// `<name>-control.<ns>.svc`: the name the coordinator's certificate is verified for.
pub fn service_host(namespace: &str, name: &str) -> String {
    format!("{}.{namespace}.svc", control_service(name))
}

/// `<name>-control.<ns>.svc.<clusterDomain>`: the name looked up in DNS (and the key of
/// [`crate::ConsoleSettings::resolve`]).
pub fn lookup_host(namespace: &str, name: &str, cluster_domain: &str) -> String {
    format!("{}.{cluster_domain}", service_host(namespace, name))
}

/// `<name>-console-client-tls`: the console's client certificate for a server.
pub fn client_secret_name(name: &str) -> String {
    format!("{name}-{CONSOLE_CLIENT_TLS_SUFFIX}")
}

/// Where a server's coordinator is, derived from its resource only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The server's namespace.
    pub namespace: String,
    /// The server's name.
    pub name: String,
    /// The name its certificate is verified for.
    pub service_host: String,
    /// The name looked up for its address.
    pub lookup_host: String,
    /// `spec.control.port`.
    pub port: u16,
}

impl Target {
    /// The coordinator of `server`; 409 when the console cannot reach it over mTLS.
    pub fn of(server: &DiLoCoServer, cluster_domain: &str) -> Result<Self, ApiError> {
        let namespace = server.namespace().unwrap_or_default();
        let name = server.name_any();
        if server.spec.tls.mode == TlsMode::Disabled {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "DiLoCoServer \"{name}\" has tls.mode disabled: the console reaches \
                     coordinators only over TLS with its client certificate; enable TLS to use \
                     it from the console"
                ),
            ));
        }
        if server.spec.tls.client_auth == ClientAuth::None {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "DiLoCoServer \"{name}\" has tls.clientAuth none: the console authenticates \
                     to coordinators with a client certificate only; set tls.clientAuth optional"
                ),
            ));
        }
        let port = u16::try_from(server.spec.control.port)
            .map_err(|_| ApiError::internal("spec.control.port is not a port"))?;
        Ok(Self {
            service_host: service_host(&namespace, &name),
            lookup_host: lookup_host(&namespace, &name, cluster_domain),
            namespace,
            name,
            port,
        })
    }
}

/// The console's client certificate for one server, as its Secret holds it.
pub struct ClientCertificate {
    /// `tls.crt` and `tls.key`, concatenated (what reqwest loads).
    pub(super) identity_pem: Vec<u8>,
    /// `ca.crt`: the only CA the coordinator's certificate may chain to.
    pub(super) ca_pem: Vec<u8>,
    /// The Secret's `resourceVersion`: a new one means new material.
    pub(super) version: String,
}

/// Reads the console's client certificate for `target` (503 while it does not exist).
pub async fn read_client_certificate(
    client: &Client,
    target: &Target,
) -> Result<ClientCertificate, ApiError> {
    let secret_name = client_secret_name(&target.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &target.namespace)
        .get_opt(&secret_name)
        .await
        .map_err(|e| kube_failure(&format!("read Secret {secret_name}"), &e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the console's client certificate for this server (Secret {secret_name}) \
                     does not exist yet; the operator issues it"
                ),
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let key = |k: &str| {
        data.get(k)
            .map(|v| v.0.clone())
            .ok_or_else(|| ApiError::bad_gateway(format!("Secret {secret_name} has no key {k}")))
    };
    let mut identity_pem = key(TLS_CERT)?;
    identity_pem.push(b'\n');
    identity_pem.extend(key(TLS_KEY)?);
    Ok(ClientCertificate {
        identity_pem,
        ca_pem: key(CA_CERT)?,
        version: secret.metadata.resource_version.unwrap_or_default(),
    })
}
