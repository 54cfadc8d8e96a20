//! The coordinator's current client list (`clients.json` in `<server>-clients`): which client
//! certificates authenticate, by common name, and with which role. The coordinator re-reads it
//! every second, so a client removed from `spec.tls.clients` is refused as soon as the kubelet
//! has updated the mounted file — no restart, and no waiting for its certificate to expire.
//! It is its own ConfigMap, outside the config hash, so a change never restarts the pod.

use std::collections::BTreeMap;

use diloco_contract::clients::{ClientEntry, ClientsFile, Role};
use diloco_contract::console::CONSOLE_COMMON_NAME;
use k8s_openapi::api::core::v1::ConfigMap;

use diloco_crds::ClientAuth;

use crate::error::{Error, Result};
use crate::names::{CLIENTS_KEY, Component, OPERATOR_CLIENT_NAME};
use crate::reconcile::build::{BuildContext, Credentials, TlsSource};

/// The clients whose certificates authenticate, or `None` when the coordinator accepts every
/// certificate of its client CA (a dedicated `tls.clientCASecretRef` without names) or no
/// certificates at all.
pub fn client_list(ctx: &BuildContext<'_>, credentials: &Credentials) -> Option<Vec<ClientEntry>> {
    let tls = &ctx.server.spec.tls;
    if tls.client_auth != ClientAuth::Optional {
        return None;
    }
    match &credentials.tls {
        TlsSource::Disabled => None,
        TlsSource::Owned(_) => {
            let mut clients = vec![entry(OPERATOR_CLIENT_NAME, Role::Admin)];
            // The console proxies control actions for users the console authorised (a
            // SubjectAccessReview for `patch` on the DiLoCoServer), so it needs the admin role.
            if ctx.settings.console.is_some() {
                clients.push(entry(CONSOLE_COMMON_NAME, Role::Admin));
            }
            clients.extend(tls.clients.iter().map(|c| entry(&c.name, Role::Worker)));
            Some(clients)
        }
        TlsSource::Referenced { .. } => tls
            .allowed_client_names
            .as_ref()
            .filter(|names| !names.is_empty())
            .map(|names| names.iter().map(|n| entry(&n.0, Role::Worker)).collect()),
    }
}

/// The ConfigMap with `clients.json`, when there is a client list.
pub fn build_clients_config_map(
    ctx: &BuildContext<'_>,
    credentials: &Credentials,
) -> Result<Option<ConfigMap>> {
    let Some(clients) = client_list(ctx, credentials) else {
        return Ok(None);
    };
    let text = serde_json::to_string_pretty(&ClientsFile { clients })
        .map_err(Error::serialize(CLIENTS_KEY))?;
    Ok(Some(ConfigMap {
        metadata: ctx.metadata(ctx.names.clients_config_map(), Component::Clients),
        data: Some(BTreeMap::from([(CLIENTS_KEY.to_string(), text + "\n")])),
        ..ConfigMap::default()
    }))
}

fn entry(name: &str, role: Role) -> ClientEntry {
    ClientEntry {
        name: name.to_string(),
        role,
    }
}
