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
    /// One word for the state: `Pending`, `Ready`, `Failed` (the spec cannot be reconciled;
    /// see the `Ready` condition) or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `CredentialsReady`, `NetworkReady` and `CoordinatorAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where workers reach the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Names of the Secrets the operator manages or reads for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretNames>,
    /// The last token rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotation: Option<TokenRotationStatus>,
    /// The certificates the operator issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesStatus>,
    /// Training progress polled from the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorStatus>,
}

/// The state of a server in one word.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reconciled; waiting for a load balancer or the coordinator.
    Pending,
    /// Every condition is true: the coordinator is serving.
    Ready,
    /// The spec cannot be reconciled (an invalid spec, a refused reference, a taken name).
    Failed,
    /// `spec.paused`: the children are left as they are.
    Paused,
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

/// Secret names, so users and tools need not guess them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretNames {
    /// The bearer token (`token`, and `previous-token` during a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The admin bearer token (`token`): control actions (`/control/*`) and every worker's
    /// rights. Give it only to operators of the training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// The CA certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The server certificate (`kubernetes.io/tls` with `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cert: Option<String>,
    /// What in-cluster workers mount: `token`, `ca.crt` and `endpoints.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_credentials: Option<String>,
    /// One Secret per `spec.tls.clients` entry, with its client certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientSecret>,
}

/// The credentials Secret of a named client.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecret {
    /// The `spec.tls.clients` name.
    pub name: String,
    /// Its Secret.
    pub secret: String,
}

/// The last token rotation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRotationStatus {
    /// The `diloco.dev/rotate-token` value last handled; the same value never rotates again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_nonce: Option<String>,
    /// When the token was last rotated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    /// Until when the previous token is still accepted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
}

/// The certificates the operator issued.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesStatus {
    /// Expiry of the server certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When the operator re-issues the leaf certificates (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// Expiry of the CA (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<String>,
    /// The `diloco.dev/rotate-certificates` value last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_nonce: Option<String>,
    /// The `diloco.dev/rotate-ca` value last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ca_nonce: Option<String>,
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
