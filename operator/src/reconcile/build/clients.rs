//! The coordinator's current client list (`clients.json` in `<server>-clients`): which client
//! certificates authenticate, by common name, and with which role. The coordinator re-reads it
//! every second, so a client removed from `spec.tls.clients` is refused as soon as the kubelet
//! has updated the mounted file — no restart, and no waiting for its certificate to expire.
//! It is its own ConfigMap, outside the config hash, so a change never restarts the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use diloco_crds::ClientAuth;

use crate::error::{Error, Result};
use crate::names::{CLIENTS_KEY, Component};
use crate::reconcile::build::{BuildContext, Credentials, TlsSource};
use crate::reconcile::credentials::OPERATOR_CLIENT_NAME;

/// What a client certificate may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRole {
    /// Control actions and everything a worker may do (the operator's own certificate).
    Admin,
    /// Train: register, heartbeat, submit, download.
    Worker,
}

impl ClientRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Worker => "worker",
        }
    }
}

/// The clients whose certificates authenticate, or `None` when the coordinator accepts every
/// certificate of its client CA (a dedicated `tls.clientCASecretRef` without names) or no
/// certificates at all.
pub fn client_list(
    ctx: &BuildContext<'_>,
    credentials: &Credentials,
) -> Option<Vec<(String, ClientRole)>> {
    let tls = &ctx.server.spec.tls;
    if tls.client_auth != ClientAuth::Optional {
        return None;
    }
    match &credentials.tls {
        TlsSource::Disabled => None,
        TlsSource::Owned(_) => {
            let mut clients = vec![(OPERATOR_CLIENT_NAME.to_string(), ClientRole::Admin)];
            clients.extend(
                tls.clients
                    .iter()
                    .map(|c| (c.name.clone(), ClientRole::Worker)),
            );
            Some(clients)
        }
        TlsSource::Referenced { .. } => tls
            .allowed_client_names
            .as_ref()
            .filter(|names| !names.is_empty())
            .map(|names| {
                names
                    .iter()
                    .map(|n| (n.0.clone(), ClientRole::Worker))
                    .collect()
            }),
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
    let list: Vec<_> = clients
        .iter()
        .map(|(name, role)| json!({"name": name, "role": role.as_str()}))
        .collect();
    let text = serde_json::to_string_pretty(&json!({"clients": list}))
        .map_err(Error::serialize(CLIENTS_KEY))?;
    Ok(Some(ConfigMap {
        metadata: ctx.metadata(ctx.names.clients_config_map(), Component::Clients),
        data: Some(BTreeMap::from([(CLIENTS_KEY.to_string(), text + "\n")])),
        ..ConfigMap::default()
    }))
}
