//! Ownership: before a child is read, adopted or overwritten, it must be this server's — its
//! controller owner reference carries the server's uid. Child names are `<server>-<role>`, so
//! two servers can want the same name (server `a` with client `ca` and server `a-client` both
//! want `a-client-ca`); the first one keeps it and the other is refused with `NameConflict`,
//! never force-applied over it.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use diloco_crds::{DiLoCoServer, SERVER_LABEL};

use crate::error::{Error, Result};
use crate::names::MANAGED_BY;
use crate::reconcile::build::DesiredObjects;
use crate::reconcile::invalid::Invalid;

/// An object that has a child's name but is not this server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `Kind/name`.
    pub object: String,
    /// Who it belongs to, in words.
    pub owner: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.object, self.owner)
    }
}

/// Who owns `meta` if it is not the server with `uid`: `None` when the server controls it.
///
/// A claim kept after its server was deleted (`audit.retainOnDelete`) has no owner; it is
/// this server's again when it carries the operator's labels for `claim_server` (the same
/// name in the same namespace: the server was re-created and keeps its audit trail).
pub fn foreign_owner(
    kind: &str,
    meta: &ObjectMeta,
    uid: &str,
    claim_server: Option<&str>,
) -> Option<String> {
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if !uid.is_empty() && owner.uid == uid => None,
        Some(owner) => Some(format!("controlled by {} {}", owner.kind, owner.name)),
        None => {
            let labels = meta.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            let retained_claim = kind == "PersistentVolumeClaim"
                && claim_server.is_some()
                && label("app.kubernetes.io/managed-by") == Some(MANAGED_BY)
                && label(SERVER_LABEL) == claim_server;
            (!retained_claim).then(|| "not created by the operator for this server".to_string())
        }
    }
}

/// The desired children that exist but belong to someone else. Children already read by
/// load (`verified`, as `Kind/name`) are not asked for again.
pub async fn foreign_children(
    client: &Client,
    server: &DiLoCoServer,
    desired: &DesiredObjects,
    verified: &[String],
) -> Result<Vec<Conflict>> {
    let DesiredObjects {
        secrets,
        config_maps,
        service_accounts,
        claims,
        services,
        network_policies,
        deployments,
        roles,
        role_bindings,
    } = desired;
    let mut conflicts = Vec::new();
    conflicts.extend(check(client, server, secrets, verified).await?);
    conflicts.extend(check(client, server, config_maps, verified).await?);
    conflicts.extend(check(client, server, service_accounts, verified).await?);
    conflicts.extend(check(client, server, claims, verified).await?);
    conflicts.extend(check(client, server, services, verified).await?);
    conflicts.extend(check(client, server, network_policies, verified).await?);
    conflicts.extend(check(client, server, deployments, verified).await?);
    conflicts.extend(check(client, server, roles, verified).await?);
    conflicts.extend(check(client, server, role_bindings, verified).await?);
    Ok(conflicts)
}

async fn check<K>(
    client: &Client,
    server: &DiLoCoServer,
    objects: &[K],
    verified: &[String],
) -> Result<Vec<Conflict>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let namespace = server.namespace().unwrap_or_default();
    let uid = server.uid().unwrap_or_default();
    let server_name = server.name_any();
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let mut conflicts = Vec::new();
    for object in objects {
        let name = object.name_any();
        let id = format!("{kind}/{name}");
        if verified.contains(&id) {
            continue;
        }
        let existing = api
            .get_metadata_opt(&name)
            .await
            .map_err(Error::kube(format!("read {kind} {name}")))?;
        let Some(existing) = existing else { continue };
        if let Some(owner) = foreign_owner(&kind, &existing.metadata, &uid, Some(&server_name)) {
            conflicts.push(Conflict { object: id, owner });
        }
    }
    Ok(conflicts)
}

/// `NameConflict` when some child's name is taken by an object that is not this server's.
pub fn refuse_taken_names(conflicts: &[Conflict]) -> Result<(), Invalid> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let list = conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(Invalid::other(
        "NameConflict",
        format!(
            "children of this server would take names that already belong to someone else: \
             {list}; the operator neither reads nor overwrites them. Rename this DiLoCoServer \
             (or its tls.clients entry) so its children `<name>-<role>` are free"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owned_by(kind: &str, name: &str, uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "diloco.dev/v1alpha1".into(),
                kind: kind.into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(controller),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_servers_own_uid_makes_a_child_its_own() {
        let ours = owned_by("DiLoCoServer", "a", "uid-a", true);
        assert_eq!(foreign_owner("Secret", &ours, "uid-a", None), None);
        assert_eq!(
            foreign_owner("Secret", &ours, "uid-b", None).as_deref(),
            Some("controlled by DiLoCoServer a")
        );
        // A same-named server re-created gets a new uid: the old children are not adopted.
        let not_controller = owned_by("DiLoCoServer", "a", "uid-a", false);
        assert!(foreign_owner("Secret", &not_controller, "uid-a", None).is_some());
        assert!(foreign_owner("Secret", &ObjectMeta::default(), "uid-a", None).is_some());
        // A server without a uid (never read from the API) owns nothing.
        assert!(
            foreign_owner("Secret", &owned_by("DiLoCoServer", "a", "", true), "", None).is_some()
        );
    }

    #[test]
    fn a_retained_claim_is_adopted_only_by_the_server_it_was_labelled_for() {
        let labels = |server: &str| ObjectMeta {
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
                (SERVER_LABEL.to_string(), server.to_string()),
            ])),
            ..ObjectMeta::default()
        };
        let claim = "PersistentVolumeClaim";
        assert_eq!(
            foreign_owner(claim, &labels("llm"), "uid", Some("llm")),
            None
        );
        assert!(foreign_owner(claim, &labels("other"), "uid", Some("llm")).is_some());
        assert!(foreign_owner("Secret", &labels("llm"), "uid", Some("llm")).is_some());
        assert!(foreign_owner(claim, &ObjectMeta::default(), "uid", Some("llm")).is_some());
    }
}
