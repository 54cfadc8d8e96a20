//! `spec` of a `DiLoCoServer`: what the user declares. Field docs are what `kubectl explain`
//! shows, so they are written for users.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::audit::AuditSpec;
use crate::model::ModelSpec;
use crate::network_policy::NetworkPolicySpec;
use crate::planes::{BulkSpec, ControlSpec, MetricsSpec};
use crate::security::{AuthSpec, TlsSpec};
use crate::status::DiLoCoServerStatus;
use crate::training::TrainingSpec;

// Integers are i32/i64 as in Kubernetes' own APIs: the API server knows only those formats.

/// A DiLoCo coordinator: the outer optimizer that workers on any cluster register with,
/// upload pseudo-gradients to and receive averaged parameters from. The operator turns it into
/// credentials, certificates, Services, NetworkPolicies and the coordinator Deployment.
// Every printcolumn repeats `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "diloco.dev",
    version = "v1alpha1",
    kind = "DiLoCoServer",
    namespaced,
    shortname = "dls",
    category = "diloco",
    doc = "A DiLoCo training coordinator, reconciled by diloco-operator into credentials, certificates, Services, NetworkPolicies and the coordinator Deployment.",
    status = "DiLoCoServerStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Round",
        type_ = "integer",
        json_path = ".status.coordinator.round"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.coordinator.workers"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoints.control"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    )
)]
#[x_kube(validation = Rule::new("!self.bulk.enabled || self.bulk.port != self.control.port")
    .message("bulk.port must differ from control.port"))]
#[x_kube(validation = Rule::new("self.metrics.port != self.control.port && (!self.bulk.enabled || self.metrics.port != self.bulk.port)")
    .message("metrics.port must differ from control.port and bulk.port"))]
#[x_kube(validation = Rule::new("self.tls.mode != 'disabled' || !self.bulk.enabled || !self.bulk.tls")
    .message("bulk.tls needs tls.mode operator or secret; with tls.mode disabled set bulk.tls and bulk.auth to false"))]
#[x_kube(validation = Rule::new("self.auth.mode != 'token' || self.tls.mode != 'disabled' || self.insecure.cleartextCredentials")
    .message("auth.mode token with tls.mode disabled sends the bearer token in clear; enable TLS, or set insecure.cleartextCredentials: true to accept that"))]
#[x_kube(validation = Rule::new("self.control.service.type == 'ClusterIP' || (self.auth.mode == 'token' && self.tls.mode != 'disabled') || self.insecure.unprotectedExternalService")
    .message("control.service.type NodePort or LoadBalancer exposes the control plane beyond the cluster: it needs auth.mode token and TLS, or insecure.unprotectedExternalService: true"))]
#[x_kube(validation = Rule::new("!self.bulk.enabled || self.bulk.service.type == 'ClusterIP' || (self.bulk.tls && self.bulk.auth && self.auth.mode == 'token') || self.insecure.unprotectedExternalService")
    .message("bulk.service.type NodePort or LoadBalancer exposes the bulk plane beyond the cluster: it needs bulk.tls and bulk.auth (with auth.mode token), or insecure.unprotectedExternalService: true"))]
#[serde(rename_all = "camelCase")]
pub struct DiLoCoServerSpec {
    /// Container image of the coordinator, for example
    /// `ghcr.io/diloco-dev/diloco-coordinator:0.1.0`. It must be one the operator's install
    /// allows (the chart's `allowedImages`; by default its own coordinator repository).
    #[schemars(length(min = 1))]
    pub image: String,

    /// When the kubelet pulls the image: `Always`, `IfNotPresent` or `Never` (Kubernetes'
    /// default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// CPU, memory and GPU (`nvidia.com/gpu`) for the coordinator container. Plan for about
    /// 12 bytes per parameter plus the encoded downloads and two uploads in flight. Unset:
    /// requests `cpu: 250m, memory: 512Mi` and a `memory: 4Gi` limit (enough for small
    /// models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the coordinator pod must match (a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the coordinator pod tolerates (GPU nodes are often tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity of the coordinator pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the coordinator pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// RuntimeClass of the coordinator pod (for example `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,

    /// Extra annotations on the coordinator pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra labels on the coordinator pod (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Run the coordinator under this existing ServiceAccount instead of the one the operator
    /// creates (`<name>-coordinator`). It must be labelled `diloco.dev/referable: "true"` and
    /// not be one the operator manages; its API token is never mounted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Where the outer optimizer runs: `auto` (CUDA when the pod has a GPU, else CPU), `cpu`
    /// or `cuda` (start-up fails without a GPU).
    #[serde(default)]
    pub device: Device,

    /// How rounds are formed and how the outer optimizer steps.
    #[serde(default)]
    pub training: TrainingSpec,

    /// The control plane: registration, heartbeats, status and control actions (HTTPS).
    #[serde(default)]
    pub control: ControlSpec,

    /// The bulk plane that carries tensors, on its own port and Service.
    #[serde(default)]
    pub bulk: BulkSpec,

    /// The Prometheus metrics listener.
    #[serde(default)]
    pub metrics: MetricsSpec,

    /// Bearer-token authentication.
    #[serde(default)]
    pub auth: AuthSpec,

    /// TLS and the certificates the operator issues.
    #[serde(default)]
    pub tls: TlsSpec,

    /// NetworkPolicies around the coordinator.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// The volume for the audit log and checkpoints.
    #[serde(default)]
    pub audit: AuditSpec,

    /// The model to start from: initial parameters and the definition workers build it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,

    /// Explicit acknowledgements of set-ups that weaken security; each is refused without its
    /// flag.
    #[serde(default)]
    pub insecure: InsecureSpec,

    /// Stop reconciling the server's children (for maintenance). The running coordinator is
    /// left as it is.
    #[serde(default)]
    pub paused: bool,
}

/// Set-ups that weaken security, allowed only when acknowledged here (docs/security.md).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InsecureSpec {
    /// Accept `auth.mode: token` with `tls.mode: disabled`: the bearer token crosses the
    /// network in clear, so anyone on the path can become a worker.
    #[serde(default)]
    pub cleartext_credentials: bool,
    /// Accept a NodePort or LoadBalancer Service in front of a plane that is unauthenticated
    /// or cleartext (`auth.mode: none`, `tls.mode: disabled`, `bulk.auth` or `bulk.tls`
    /// false): anyone who reaches the address can read or steer the training.
    #[serde(default)]
    pub unprotected_external_service: bool,
}

/// Where the outer optimizer runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// When the kubelet pulls the coordinator image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}
