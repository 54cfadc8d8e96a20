//! The `DiLoCoServer`s, read with the console's ServiceAccount and shown only to users whose
//! access a SubjectAccessReview confirms; [`ServerSummary`] is built from the resource alone,
//! so it is there even when the coordinator is down.

use std::collections::BTreeMap;

use diloco_contract::console::{ConditionSummary, ServerSummary};
use diloco_crds::DiLoCoServer;
use futures_util::stream::{self, StreamExt};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::error::{ApiError, kube_failure};
use crate::kube_auth::{KubeAuth, User, Verb};

/// SubjectAccessReviews asked at once while filtering the list.
const CONCURRENT_REVIEWS: usize = 8;
/// The longest namespace or server name (a DNS subdomain).
const MAX_NAME_CHARS: usize = 253;

/// Refuses (400) a namespace or name that no Kubernetes object can have, before anything is
/// asked of anyone.
pub fn validate_names(namespace: &str, name: &str) -> Result<(), ApiError> {
    for (what, value) in [("namespace", namespace), ("server name", name)] {
        let valid = !value.is_empty()
            && value.len() <= MAX_NAME_CHARS
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(ApiError::bad_request(format!(
                "{what} {value:?} is not a valid Kubernetes name"
            )));
        }
    }
    Ok(())
}

/// The `DiLoCoServer` `namespace/name`, or 404.
pub async fn get_server(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<DiLoCoServer, ApiError> {
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| kube_failure("read the DiLoCoServer", &e))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "there is no DiLoCoServer \"{name}\" in namespace \"{namespace}\""
            ))
        })
}

/// The servers of every namespace in which `user` may `list` `DiLoCoServer`s, sorted by
/// namespace and name.
pub async fn visible_servers(
    client: &Client,
    auth: &KubeAuth,
    user: &User,
) -> Result<Vec<ServerSummary>, ApiError> {
    let all = Api::<DiLoCoServer>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_failure("list the DiLoCoServers", &e))?;
    let mut by_namespace: BTreeMap<String, Vec<DiLoCoServer>> = BTreeMap::new();
    for server in all.items {
        by_namespace
            .entry(server.namespace().unwrap_or_default())
            .or_default()
            .push(server);
    }
    let decisions: Vec<(String, Result<bool, ApiError>)> =
        stream::iter(by_namespace.keys().cloned())
            .map(|namespace| async move {
                let allowed = auth
                    .decide(user, Verb::List, &namespace, None)
                    .await
                    .map(|d| d.allowed);
                (namespace, allowed)
            })
            .buffer_unordered(CONCURRENT_REVIEWS)
            .collect()
            .await;
    let mut visible = Vec::new();
    for (namespace, allowed) in decisions {
        if allowed? {
            visible.extend(
                by_namespace
                    .get(&namespace)
                    .into_iter()
                    .flatten()
                    .map(summary),
            );
        }
    }
    visible.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(visible)
}

/// What the list and the server page show of a server.
pub fn summary(server: &DiLoCoServer) -> ServerSummary {
    let status = server.status.clone().unwrap_or_default();
    let coordinator = status.coordinator.as_ref();
    ServerSummary {
        namespace: server.namespace().unwrap_or_default(),
        name: server.name_any(),
        phase: status
            .phase
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_str().map(str::to_string)),
        round: coordinator.and_then(|c| u64::try_from(c.round).ok()),
        workers: coordinator.and_then(|c| u64::try_from(c.workers).ok()),
        endpoint: status.endpoints.as_ref().and_then(|e| e.control.clone()),
        created: server
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionSummary {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
                message: Some(c.message.clone()).filter(|m| !m.is_empty()),
            })
            .collect(),
        token_rotated_at: status.token_rotation.and_then(|t| t.rotated_at),
        certificate_expires_at: status.certificates.and_then(|c| c.not_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A path segment that is not a Kubernetes name never reaches the API server.
    #[test]
    fn names_must_be_kubernetes_names() {
        assert!(validate_names("team-a", "llm.v2").is_ok());
        for (namespace, name) in [
            ("team-a", ""),
            ("Team", "llm"),
            ("team-a", "../secrets"),
            ("team-a", "llm-"),
            ("team a", "llm"),
            ("team-a", "llm%2F"),
        ] {
            let refused = validate_names(namespace, name).unwrap_err();
            assert_eq!(refused.status, 400, "{namespace}/{name}");
        }
        assert!(validate_names("a", &"x".repeat(254)).is_err());
    }

    #[test]
    fn the_summary_comes_from_the_resource_status() {
        let server: DiLoCoServer = serde_json::from_value(json!({
            "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
            "metadata": {"name": "llm", "namespace": "team-a",
                         "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": {"image": "coordinator:1"},
            "status": {
                "phase": "Ready",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                "message": "", "lastTransitionTime": "2026-12-01T10:01:00Z"}],
                "endpoints": {"control": "https://llm-control.team-a.svc:8512"},
                "tokenRotation": {"rotatedAt": "2026-12-02T00:00:00Z"},
                "certificates": {"notAfter": "2027-03-01T00:00:00Z"},
                "coordinator": {"round": 12, "workers": 3}
            }
        }))
        .unwrap();
        let summary = summary(&server);
        assert_eq!(summary.phase.as_deref(), Some("Ready"));
        assert_eq!((summary.round, summary.workers), (Some(12), Some(3)));
        assert_eq!(
            summary.endpoint.as_deref(),
            Some("https://llm-control.team-a.svc:8512")
        );
        assert_eq!(summary.created.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(summary.conditions[0].reason.as_deref(), Some("Serving"));
        assert_eq!(summary.conditions[0].message, None);
        assert_eq!(
            summary.token_rotated_at.as_deref(),
            Some("2026-12-02T00:00:00Z")
        );
        assert_eq!(
            summary.certificate_expires_at.as_deref(),
            Some("2027-03-01T00:00:00Z")
        );
    }
}
