//! `spec.audit`: the volume holding the audit log and the checkpoints.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::default_true;

/// The persistent volume for the audit log (`audit.jsonl`) and checkpoints.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.storage) && has(self.existingClaim))")
    .message("audit.storage and audit.existingClaim are mutually exclusive"))]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// A PersistentVolumeClaim `<name>-state` the operator creates. Used when neither this nor
    /// `existingClaim` is set, with 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("audit.storage is immutable: a claim cannot move to another size or class"))]
    pub storage: Option<AuditStorage>,
    /// Use this PersistentVolumeClaim instead. It must exist in the namespace, be labelled
    /// `diloco.dev/referable: "true"` (its owner's consent to be mounted by the coordinator)
    /// and not be a claim the operator created for a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("audit.existingClaim is immutable"))]
    pub existing_claim: Option<String>,
    /// Keep the claim when the DiLoCoServer is deleted: audit logs outlive the server.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

impl Default for AuditSpec {
    fn default() -> Self {
        Self {
            storage: None,
            existing_claim: None,
            retain_on_delete: true,
        }
    }
}

/// Size and class of the claim the operator creates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditStorage {
    /// Requested capacity, for example `10Gi`.
    pub size: Quantity,
    /// StorageClass of the claim; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The capacity of the claim when `audit.storage` is not set.
pub const DEFAULT_AUDIT_STORAGE_SIZE: &str = "10Gi";
