//! Build: the desired child objects of a `DiLoCoServer`, from its spec and the credentials
//! decided before. Pure — no client, no clock, no randomness — so every object is tested
//! whole against YAML fixtures.

mod clients;
mod config;
mod console_access;
mod deployment;
mod network_policies;
mod secrets;
pub mod services;

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use diloco_crds::DiLoCoServer;

use crate::error::{Error, Result};
use crate::names::{ChildNames, Component};
use crate::reconcile::certificates::PkiPlan;
use crate::reconcile::token::TokenPlan;
use crate::settings::Settings;

pub use clients::{build_clients_config_map, client_list};
pub use config::coordinator_config;
pub use console_access::build_console_access;
pub use deployment::{build_deployment, build_service_account, build_state_claim};
pub use network_policies::build_network_policies;
pub use secrets::build_secrets;
pub use services::{build_bulk_service, build_control_service, endpoints};

/// Where the bearer token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// `auth.mode: none`.
    Disabled,
    /// Minted and rotated by the operator.
    Owned(TokenPlan),
    /// The user's Secret (`auth.tokenSecretRef`): mounted as is, copied into worker bundles.
    Referenced { secret: String, token: String },
}

impl std::fmt::Debug for TokenSource {
    /// Never shows a token: only where it comes from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => f.write_str("Disabled"),
            Self::Owned(plan) => f.debug_tuple("Owned").field(plan).finish(),
            Self::Referenced { secret, .. } => f
                .debug_struct("Referenced")
                .field("secret", secret)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// Where the server certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// `tls.mode: disabled`.
    Disabled,
    /// The operator's CA and leaves.
    Owned(PkiPlan),
    /// The user's `kubernetes.io/tls` Secret (`tls.secretName`) and its `ca.crt`, if any,
    /// and the Secret with the dedicated client CA (`tls.clientCASecretRef`), if any.
    Referenced {
        secret: String,
        ca_bundle: Option<String>,
        client_ca_secret: Option<String>,
    },
}

impl TlsSource {
    /// The PEM bundle workers trust, if any.
    pub fn trust_bundle(&self) -> Option<&str> {
        match self {
            Self::Disabled => None,
            Self::Owned(pki) => Some(&pki.ca.trust_bundle),
            Self::Referenced { ca_bundle, .. } => ca_bundle.as_deref(),
        }
    }

    /// Whether the coordinator serves TLS.
    pub fn enabled(&self) -> bool {
        !matches!(self, Self::Disabled)
    }
}

/// The credentials a reconcile settled on.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The workers' bearer token.
    pub token: TokenSource,
    /// The admin bearer token (control actions), always the operator's own; none without
    /// authentication.
    pub admin_token: Option<TokenPlan>,
    pub tls: TlsSource,
}

/// Everything one server should have.
#[derive(Clone, Debug, Default)]
pub struct DesiredObjects {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub service_accounts: Vec<ServiceAccount>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    pub network_policies: Vec<NetworkPolicy>,
    pub deployments: Vec<Deployment>,
    /// The console's Role on its certificate Secret (with a console configured).
    pub roles: Vec<Role>,
    /// Its binding to the console's ServiceAccount.
    pub role_bindings: Vec<RoleBinding>,
}

/// The server and what the build needs to know about it.
pub struct BuildContext<'a> {
    pub server: &'a DiLoCoServer,
    pub names: ChildNames,
    pub namespace: String,
    pub owner: OwnerReference,
    pub settings: &'a Settings,
}

impl<'a> BuildContext<'a> {
    /// Context for `server` (which must have been read from the API: it needs a uid).
    pub fn new(server: &'a DiLoCoServer, settings: &'a Settings) -> Result<Self> {
        let owner = server
            .controller_owner_ref(&())
            .ok_or_else(|| Error::InvalidSpec("the DiLoCoServer has no uid yet".into()))?;
        Ok(Self {
            names: ChildNames::new(&server.name_any()),
            namespace: server.namespace().unwrap_or_default(),
            owner,
            server,
            settings,
        })
    }

    /// Metadata of a child: name, namespace, labels and the owner reference.
    pub fn metadata(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.names.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Every desired child of the server.
pub fn build(ctx: &BuildContext<'_>, credentials: &Credentials) -> Result<DesiredObjects> {
    let spec = &ctx.server.spec;
    let config = coordinator_config(ctx, credentials)?;
    let mut services = vec![build_control_service(ctx)];
    if spec.bulk.enabled {
        services.push(build_bulk_service(ctx));
    }
    let network_policies = if spec.network_policy.enabled {
        build_network_policies(ctx)
    } else {
        Vec::new()
    };
    let mut config_maps = vec![];
    if let Some(clients) = build_clients_config_map(ctx, credentials)? {
        config_maps.push(clients);
    }
    let deployment = build_deployment(ctx, credentials, &config);
    config_maps.insert(0, config);
    let (roles, role_bindings) = build_console_access(ctx, credentials).into_iter().unzip();
    Ok(DesiredObjects {
        secrets: build_secrets(ctx, credentials)?,
        deployments: vec![deployment],
        config_maps,
        service_accounts: spec
            .service_account_name
            .is_none()
            .then(|| build_service_account(ctx))
            .into_iter()
            .collect(),
        claims: build_state_claim(ctx).into_iter().collect(),
        services,
        network_policies,
        roles,
        role_bindings,
    })
}
