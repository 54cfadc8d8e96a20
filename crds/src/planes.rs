//! `spec.control`, `spec.bulk` and `spec.metrics`: the coordinator's listeners and the
//! Services in front of them.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::default_true;

/// The port of the control plane (registration, heartbeats, status, control actions).
pub const DEFAULT_CONTROL_PORT: i32 = 8512;
/// The port of the bulk plane (pseudo-gradient uploads and parameter downloads).
pub const DEFAULT_BULK_PORT: i32 = 8513;
/// The port of the Prometheus metrics listener.
pub const DEFAULT_METRICS_PORT: i32 = 9090;

/// The control plane listener and its Service.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlSpec {
    /// Port of the control plane (container port and Service port).
    #[serde(default = "default_control_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The Service workers reach the control plane through.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Extra DNS names or IP addresses workers use to reach the coordinator (an ingress host,
    /// a DNS record for a LoadBalancer). They are added to the server certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub external_names: Vec<String>,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            port: DEFAULT_CONTROL_PORT,
            service: ServiceSpec::default(),
            external_names: Vec::new(),
        }
    }
}

fn default_control_port() -> i32 {
    DEFAULT_CONTROL_PORT
}

/// The bulk plane listener that carries tensors, and its Service.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.auth || self.tls")
    .message("bulk.auth requires bulk.tls: a bearer token sent over cleartext would leak the control-plane credential"))]
#[serde(rename_all = "camelCase")]
pub struct BulkSpec {
    /// Serve tensors on a separate port and Service. When false, everything goes through the
    /// control plane.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Port of the bulk plane (container port and Service port).
    #[serde(default = "default_bulk_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Encrypt the bulk plane with the server certificate.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// Require the bearer token (or a client certificate) on the bulk plane. Needs `tls`.
    #[serde(default = "default_true")]
    pub auth: bool,
    /// The Service workers reach the bulk plane through.
    #[serde(default)]
    pub service: ServiceSpec,
}

impl Default for BulkSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: DEFAULT_BULK_PORT,
            tls: true,
            auth: true,
            service: ServiceSpec::default(),
        }
    }
}

fn default_bulk_port() -> i32 {
    DEFAULT_BULK_PORT
}

/// The Prometheus metrics listener (`/metrics` and `/health`, no credentials; reachable only
/// from `networkPolicy.metricsFrom`).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Port of the metrics listener (container port named `metrics`).
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            port: DEFAULT_METRICS_PORT,
        }
    }
}

fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}

/// How a plane is exposed.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (in-cluster workers), `NodePort` or `LoadBalancer` (workers in other
    /// clusters). A LoadBalancer's address is added to the server certificate once assigned.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (cloud load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// CIDRs allowed through a LoadBalancer (the cloud provider enforces them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
}

/// Kubernetes Service types.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}
