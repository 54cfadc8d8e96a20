//! Load: what exists for a server — its own credential Secrets and Services
//! (only those it controls: an object of the same name owned by someone else is recorded as a
//! conflict and never read further), and the metadata of every object its spec refers to.
//! The data of a referenced Secret is fetched only after [`super::references`] accepted the
//! reference ([`load_referenced_secrets`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

use diloco_crds::DiLoCoServer;

use crate::error::{Error, Result};
use crate::names::ChildNames;
use crate::reconcile::ownership::{self, Conflict};

/// The objects a reconcile starts from.
#[derive(Clone, Default)]
pub struct Observed {
    /// The operator's own Secrets for this server, by name (only those this server controls).
    pub owned_secrets: BTreeMap<String, Secret>,
    /// The objects the spec names (metadata only until the references are accepted).
    pub references: Vec<Reference>,
    /// `auth.tokenSecretRef`, once accepted and read.
    pub token_secret_ref: Option<Secret>,
    /// `tls.secretName`, once accepted and read.
    pub tls_secret_ref: Option<Secret>,
    /// `tls.clientCASecretRef`, once accepted and read.
    pub client_ca_secret_ref: Option<Secret>,
    pub control_service: Option<Service>,
    pub bulk_service: Option<Service>,
    /// Children by `Kind/name` that exist and were found to be this server's.
    pub verified_children: Vec<String>,
    /// Objects with a child's name that belong to someone else.
    pub conflicts: Vec<Conflict>,
}

impl std::fmt::Debug for Observed {
    /// Names only: Secrets' data never reaches a log through this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: &Option<Secret>| s.as_ref().map(ResourceExt::name_any);
        f.debug_struct("Observed")
            .field(
                "owned_secrets",
                &self.owned_secrets.keys().collect::<Vec<_>>(),
            )
            .field("references", &self.references)
            .field("token_secret_ref", &name(&self.token_secret_ref))
            .field("tls_secret_ref", &name(&self.tls_secret_ref))
            .field("client_ca_secret_ref", &name(&self.client_ca_secret_ref))
            .field(
                "control_service",
                &self.control_service.as_ref().map(ResourceExt::name_any),
            )
            .field(
                "bulk_service",
                &self.bulk_service.as_ref().map(ResourceExt::name_any),
            )
            .field("verified_children", &self.verified_children)
            .field("conflicts", &self.conflicts)
            .finish()
    }
}

impl Observed {
    /// An owned Secret by name.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.owned_secrets.get(name)
    }
}

/// Which spec field names an object, and of what kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceField {
    TokenSecret,
    TlsSecret,
    ClientCaSecret,
    AuditClaim,
    ModelClaim,
    ServiceAccount,
}

impl ReferenceField {
    /// The spec path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Self::TokenSecret => "auth.tokenSecretRef",
            Self::TlsSecret => "tls.secretName",
            Self::ClientCaSecret => "tls.clientCASecretRef",
            Self::AuditClaim => "audit.existingClaim",
            Self::ModelClaim => "model.claimName",
            Self::ServiceAccount => "serviceAccountName",
        }
    }

    /// The kind of object it names.
    pub fn kind(self) -> &'static str {
        match self {
            Self::TokenSecret | Self::TlsSecret | Self::ClientCaSecret => "Secret",
            Self::AuditClaim | Self::ModelClaim => "PersistentVolumeClaim",
            Self::ServiceAccount => "ServiceAccount",
        }
    }
}

/// An object the spec names, and its metadata if it exists.
#[derive(Clone, Debug)]
pub struct Reference {
    pub field: ReferenceField,
    pub name: String,
    pub metadata: Option<ObjectMeta>,
}

/// The objects `server`'s spec names, by field.
pub fn referenced_names(server: &DiLoCoServer) -> Vec<(ReferenceField, String)> {
    let spec = &server.spec;
    let mut names = Vec::new();
    if let Some(reference) = &spec.auth.token_secret_ref {
        names.push((ReferenceField::TokenSecret, reference.name.clone()));
    }
    if let Some(name) = &spec.tls.secret_name {
        names.push((ReferenceField::TlsSecret, name.clone()));
    }
    if let Some(reference) = &spec.tls.client_ca_secret_ref {
        names.push((ReferenceField::ClientCaSecret, reference.name.clone()));
    }
    if let Some(name) = &spec.audit.existing_claim {
        names.push((ReferenceField::AuditClaim, name.clone()));
    }
    if let Some(name) = spec.model.as_ref().and_then(|m| m.claim_name.as_ref()) {
        names.push((ReferenceField::ModelClaim, name.clone()));
    }
    if let Some(name) = &spec.service_account_name {
        names.push((ReferenceField::ServiceAccount, name.clone()));
    }
    names
}

/// Reads everything the pipeline needs about `server`, except referenced Secrets' data.
pub async fn load(client: &Client, server: &DiLoCoServer) -> Result<Observed> {
    let namespace = server.namespace().unwrap_or_default();
    let uid = server.uid().unwrap_or_default();
    let names = ChildNames::new(&server.name_any());
    let mut observed = Observed::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    // Credentials are read by name with quorum reads, never from a cache: a stale read that
    // missed a Secret would mint a second token or CA.
    let mut owned_names = vec![
        names.token_secret(),
        names.admin_token_secret(),
        names.ca_secret(),
        names.server_tls_secret(),
        names.operator_tls_secret(),
        // Read whether or not a console is configured: cheap, and the plan then reuses it
        // when the console is switched back on within its validity.
        names.console_tls_secret(),
    ];
    owned_names.extend(
        server
            .spec
            .tls
            .clients
            .iter()
            .map(|c| names.client_secret(&c.name)),
    );
    for name in owned_names {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read Secret {name}")))?;
        if let Some(secret) = observed.keep_if_ours(secret, &uid) {
            observed.owned_secrets.insert(name, secret);
        }
    }
    for (field, name) in referenced_names(server) {
        let metadata = match field {
            ReferenceField::TokenSecret
            | ReferenceField::TlsSecret
            | ReferenceField::ClientCaSecret => {
                metadata_of::<Secret>(client, &namespace, &name).await?
            }
            ReferenceField::AuditClaim | ReferenceField::ModelClaim => {
                metadata_of::<PersistentVolumeClaim>(client, &namespace, &name).await?
            }
            ReferenceField::ServiceAccount => {
                metadata_of::<ServiceAccount>(client, &namespace, &name).await?
            }
        };
        observed.references.push(Reference {
            field,
            name,
            metadata,
        });
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let control_service = services
        .get_opt(&names.control_service())
        .await
        .map_err(Error::kube("read the control Service"))?;
    observed.control_service = observed.keep_if_ours(control_service, &uid);
    let bulk_service = services
        .get_opt(&names.bulk_service())
        .await
        .map_err(Error::kube("read the bulk Service"))?;
    observed.bulk_service = observed.keep_if_ours(bulk_service, &uid);
    Ok(observed)
}

impl Observed {
    /// `object` if this server controls it; otherwise it is recorded as a conflict and
    /// dropped, so nothing of it (a Secret's key, a Service's load-balancer address) is used.
    fn keep_if_ours<K>(&mut self, object: Option<K>, uid: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()>,
    {
        let object = object?;
        let id = format!(
            "{}/{}",
            K::kind(&()),
            object.meta().name.clone().unwrap_or_default()
        );
        match ownership::foreign_owner(K::kind(&()).as_ref(), object.meta(), uid, None) {
            None => {
                self.verified_children.push(id);
                Some(object)
            }
            Some(owner) => {
                self.conflicts.push(Conflict { object: id, owner });
                None
            }
        }
    }
}

async fn metadata_of<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<ObjectMeta>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_metadata_opt(name)
        .await
        .map_err(Error::kube(format!("read {} {name}", K::kind(&()))))?;
    Ok(found.map(|object| object.metadata))
}

/// Reads the data of the referenced Secrets; call only once the references are accepted.
pub async fn load_referenced_secrets(
    client: &Client,
    server: &DiLoCoServer,
    observed: &mut Observed,
) -> Result<()> {
    let namespace = server.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for reference in &observed.references {
        if reference.metadata.is_none() {
            continue;
        }
        let slot = match reference.field {
            ReferenceField::TokenSecret => &mut observed.token_secret_ref,
            ReferenceField::TlsSecret => &mut observed.tls_secret_ref,
            ReferenceField::ClientCaSecret => &mut observed.client_ca_secret_ref,
            ReferenceField::AuditClaim
            | ReferenceField::ModelClaim
            | ReferenceField::ServiceAccount => continue,
        };
        *slot = secrets
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube(format!("read Secret {}", reference.name)))?;
    }
    Ok(())
}
