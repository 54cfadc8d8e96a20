//! Load: what exists for a server — its credential Secrets, the Secrets its spec refers to,
//! its Services (for LoadBalancer addresses) and its Deployment (for availability).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::Api;
use kube::{Client, ResourceExt};

use diloco_crds::DiLoCoServer;

use crate::error::{Error, Result};
use crate::names::ChildNames;

/// The objects a reconcile starts from.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The operator's own Secrets for this server, by name.
    pub owned_secrets: BTreeMap<String, Secret>,
    /// `auth.tokenSecretRef`, when set and present.
    pub token_secret_ref: Option<Secret>,
    /// `tls.secretName`, when set and present.
    pub tls_secret_ref: Option<Secret>,
    pub control_service: Option<Service>,
    pub bulk_service: Option<Service>,
    pub deployment: Option<Deployment>,
}

impl Observed {
    /// An owned Secret by name.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.owned_secrets.get(name)
    }
}

/// Reads everything the pipeline needs about `server`.
pub async fn load(client: &Client, server: &DiLoCoServer) -> Result<Observed> {
    let namespace = server.namespace().unwrap_or_default();
    let names = ChildNames::new(&server.name_any());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    // Credentials are read by name with quorum reads, never from a cache: a stale read that
    // missed a Secret would mint a second token or CA.
    let mut owned_names = vec![
        names.token_secret(),
        names.ca_secret(),
        names.server_tls_secret(),
        names.operator_tls_secret(),
    ];
    owned_names.extend(
        server
            .spec
            .tls
            .clients
            .iter()
            .map(|c| names.client_secret(&c.name)),
    );
    let mut owned_secrets = BTreeMap::new();
    for name in owned_names {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read Secret {name}")))?;
        if let Some(secret) = secret {
            owned_secrets.insert(name, secret);
        }
    }
    let get_secret = |name: Option<String>| {
        let secrets = secrets.clone();
        async move {
            match name {
                Some(name) => secrets
                    .get_opt(&name)
                    .await
                    .map_err(Error::kube(format!("read Secret {name}"))),
                None => Ok(None),
            }
        }
    };
    let spec = &server.spec;
    let token_secret_ref =
        get_secret(spec.auth.token_secret_ref.as_ref().map(|r| r.name.clone())).await?;
    let tls_secret_ref = get_secret(spec.tls.secret_name.clone()).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let control_service = services
        .get_opt(&names.control_service())
        .await
        .map_err(Error::kube("read the control Service"))?;
    let bulk_service = services
        .get_opt(&names.bulk_service())
        .await
        .map_err(Error::kube("read the bulk Service"))?;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get_opt(&names.deployment())
        .await
        .map_err(Error::kube("read the coordinator Deployment"))?;
    Ok(Observed {
        owned_secrets,
        token_secret_ref,
        tls_secret_ref,
        control_service,
        bulk_service,
        deployment,
    })
}
