//! Apply: server-side apply of every desired child with one field manager (`force`, so the
//! operator's fields win over hand edits of its own objects — the ownership step has refused
//! any name someone else holds), then deletion of labelled children this server controls
//! that are no longer desired (a plane switched off, a client removed, the console switched
//! off: its Role and RoleBinding go before its Secret). Claims are never
//! deleted: they hold the audit log.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::reconcile::build::DesiredObjects;
use crate::reconcile::ownership::foreign_owner;
use crate::settings::FIELD_MANAGER;

/// What apply left behind, for the status step.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub deployment: Option<Deployment>,
    pub services: Vec<Service>,
    /// `Kind/name` of every child deleted because it is no longer desired.
    pub deleted: Vec<String>,
}

/// Applies `desired` in `namespace` and, with `prune`, deletes what the selector finds
/// beyond it that the server with `uid` controls. The ownership step has made sure no desired
/// name belongs to anyone else, so `force` only ever overrides hand edits of our own objects.
pub async fn apply(
    client: &Client,
    namespace: &str,
    selector: &str,
    uid: &str,
    desired: &DesiredObjects,
    prune_leftovers: bool,
) -> Result<Applied> {
    // Every kind named, no `..`: a new kind of child that is never applied does not compile.
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
    // Order matters only for a first start: what the pod mounts exists before the pod.
    apply_all(client, namespace, secrets).await?;
    apply_all(client, namespace, roles).await?;
    apply_all(client, namespace, role_bindings).await?;
    apply_all(client, namespace, config_maps).await?;
    apply_all(client, namespace, service_accounts).await?;
    apply_all(client, namespace, claims).await?;
    let applied_services = apply_all(client, namespace, services).await?;
    apply_all(client, namespace, network_policies).await?;
    let deployment = apply_all(client, namespace, deployments)
        .await?
        .into_iter()
        .next();

    let mut deleted = Vec::new();
    if prune_leftovers {
        let scope = PruneScope {
            namespace,
            selector,
            uid,
        };
        // Claims are left out on purpose: they hold the audit log.
        deleted.extend(prune(client, &scope, network_policies).await?);
        deleted.extend(prune(client, &scope, services).await?);
        deleted.extend(prune(client, &scope, deployments).await?);
        deleted.extend(prune(client, &scope, service_accounts).await?);
        deleted.extend(prune(client, &scope, config_maps).await?);
        deleted.extend(prune(client, &scope, role_bindings).await?);
        deleted.extend(prune(client, &scope, roles).await?);
        deleted.extend(prune(client, &scope, secrets).await?);
    }
    Ok(Applied {
        deployment,
        services: applied_services,
        deleted,
    })
}

async fn apply_all<K>(client: &Client, namespace: &str, objects: &[K]) -> Result<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let name = object.name_any();
        let result = api
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
        applied.push(result);
    }
    Ok(applied)
}

/// Where leftovers are looked for, and whose they must be.
struct PruneScope<'a> {
    namespace: &'a str,
    selector: &'a str,
    uid: &'a str,
}

async fn prune<K>(client: &Client, scope: &PruneScope<'_>, desired: &[K]) -> Result<Vec<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let keep: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    let api: Api<K> = Api::namespaced(client.clone(), scope.namespace);
    let kind = K::kind(&());
    // From the API server's watch cache: a slightly stale list can only miss an object that
    // was just created (pruned on the next pass) or list one already gone (404, ignored).
    let existing = api
        .list_metadata(&ListParams::default().labels(scope.selector).match_any())
        .await
        .map_err(Error::kube(format!("list {kind}s to prune")))?;
    let mut deleted = Vec::new();
    for object in existing.items {
        let name = object.name_any();
        // Labels can be copied by anyone who can create the object; the uid cannot.
        let ours = foreign_owner(&kind, &object.metadata, scope.uid, None).is_none();
        if keep.contains(&name) || object.metadata.deletion_timestamp.is_some() || !ours {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete {kind} {name}"))(e)),
        }
    }
    Ok(deleted)
}
