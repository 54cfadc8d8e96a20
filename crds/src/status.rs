//! `status` of a `DiLoCoServer`: what the operator observed. Written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed of a `DiLoCoServer` and its coordinator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiLoCoServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for the state: `Pending`, `Running`, `Failed` or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `CredentialsReady`, `NetworkReady` and `CoordinatorAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where workers reach the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Training progress polled from the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorStatus>,
}

/// URLs of the two planes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// URL of the control plane, for example `https://llm-control.ml.svc:8512`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// URL of the bulk plane, when it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<String>,
}

/// Training progress as reported by the coordinator's `/status`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorStatus {
    /// Outer steps completed.
    pub round: i64,
    /// Workers currently registered.
    pub workers: i32,
    /// Wall time of the last outer step, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outer_step_seconds: Option<f64>,
}
