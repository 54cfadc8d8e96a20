//! `spec.networkPolicy`: which pods may reach the coordinator.

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::default_true;

/// NetworkPolicies around the coordinator pod: ingress only on its ports and only from these
/// peers; egress only to the cluster DNS pods.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies. When false they are removed.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the control port. Default: pods in this namespace labelled
    /// `diloco.dev/server: <name>`, and the operator's own pods (status polling). An empty
    /// list is refused: in a NetworkPolicy it would admit everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("networkPolicy.controlFrom: an empty list would admit every source; leave the field out for the defaults or list the peers"))]
    pub control_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may reach the bulk port. Default: pods in this namespace labelled
    /// `diloco.dev/server: <name>`. An empty list is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("networkPolicy.bulkFrom: an empty list would admit every source; leave the field out for the defaults or list the peers"))]
    pub bulk_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may scrape the metrics port. Default: nobody (set it to your Prometheus; the
    /// kubelet's probes come from the node). An empty list is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("networkPolicy.metricsFrom: an empty list would admit every source; leave the field out for nobody or list the peers"))]
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
