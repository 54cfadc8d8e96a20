//! `spec.networkPolicy`: which pods may reach the coordinator.

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::default_true;

/// NetworkPolicies around the coordinator pod: ingress only on its ports and only from these
/// peers; egress only to DNS.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies. When false they are removed.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the control port. Default: pods in this namespace labelled
    /// `diloco.dev/server: <name>`, and the operator's namespace (status polling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may reach the bulk port. Default: pods in this namespace labelled
    /// `diloco.dev/server: <name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may scrape the metrics port. Default: nobody (set it to your Prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_from: Option<Vec<NetworkPolicyPeer>>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            control_from: None,
            bulk_from: None,
            metrics_from: None,
        }
    }
}
