//! `spec.auth` and `spec.tls`: who may talk to the coordinator, and how the traffic is
//! encrypted.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DURATION_PATTERN;

/// Bearer-token authentication of workers.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.mode == 'token' || !has(self.tokenSecretRef)")
    .message("auth.tokenSecretRef needs auth.mode token"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// `token`: every request carries `Authorization: Bearer <token>` (or a client
    /// certificate signed by the server's CA). `none`: anyone who can reach the Services may
    /// train; only for isolated test clusters.
    #[serde(default)]
    pub mode: AuthMode,
    /// Bring your own token: a Secret in the same namespace whose key `token` holds it (at
    /// least 32 characters of real variety, e.g. `openssl rand -hex 32`). The Secret must be
    /// labelled `diloco.dev/referable: "true"` (its owner's consent to be mounted into the
    /// coordinator and copied into the worker bundle) and must not be one the operator manages
    /// for a server. The operator reads it and never writes it; rotate by updating the Secret.
    /// Without it the operator generates a 256-bit token in `<name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretReference>,
    /// How long the previous token keeps working after a rotation (`diloco.dev/rotate-token`),
    /// so running workers pick up the new one without a failed request.
    #[serde(default = "default_rotation_grace_period")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub rotation_grace_period: String,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            mode: AuthMode::Token,
            token_secret_ref: None,
            rotation_grace_period: default_rotation_grace_period(),
        }
    }
}

fn default_rotation_grace_period() -> String {
    "15m".to_string()
}

/// How workers authenticate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Token,
    None,
}

/// A Secret in the resource's namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// TLS on the coordinator's listeners.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.mode != 'secret' || has(self.secretName)")
    .message("tls.secretName is required when tls.mode is secret"))]
#[x_kube(validation = Rule::new("self.mode != 'secret' || self.clientAuth != 'optional' || has(self.clientCASecretRef) || (has(self.allowedClientNames) && size(self.allowedClientNames) > 0)")
    .message("tls.mode secret with clientAuth optional needs tls.clientCASecretRef (a CA that signs only this server's clients) or tls.allowedClientNames; otherwise every certificate of the issuer would be a client (or set clientAuth: none)"))]
#[x_kube(validation = Rule::new("self.mode == 'secret' || (!has(self.clientCASecretRef) && !has(self.allowedClientNames))")
    .message("tls.clientCASecretRef and tls.allowedClientNames apply to tls.mode secret; in operator mode the clients are tls.clients"))]
#[x_kube(validation = Rule::new("!has(self.clients) || size(self.clients) == 0 || self.clientAuth == 'optional'")
    .message("tls.clients authenticate with their certificates: they need tls.clientAuth optional"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `operator`: the operator runs a CA per server and issues, renews and rotates the
    /// certificates. `secret`: use the `kubernetes.io/tls` Secret `secretName` (with
    /// `ca.crt`), managed elsewhere (cert-manager). `disabled`: cleartext; tokens cross the
    /// network in clear, only for isolated test clusters.
    #[serde(default)]
    pub mode: TlsMode,
    /// The server certificate Secret when `mode` is `secret` (`tls.crt`, `tls.key`, and
    /// `ca.crt` for workers). It must be labelled `diloco.dev/referable: "true"` and must not
    /// be one the operator manages for a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Lifetime of the certificates the operator issues.
    #[serde(default = "default_certificate_duration")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub certificate_duration: String,
    /// Re-issue a certificate this long before it expires.
    #[serde(default = "default_renew_before")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: String,
    /// Lifetime of the operator's CA for this server.
    #[serde(default = "default_ca_duration")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ca_duration: String,
    /// `optional`: a client certificate authenticates without a bearer token, if the
    /// coordinator's current client list names its common name (the subject is recorded in
    /// the audit log, and the worker ids it may use are its name or `<name>.<suffix>`).
    /// `none`: only bearer tokens.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// With `mode: secret`: a Secret (key `ca.crt`) holding a CA that signs only this server's
    /// clients; client certificates must chain to it instead of to the server certificate's
    /// issuer (a shared issuer such as a cluster-wide cert-manager CA would make every workload
    /// a client). Labelled `diloco.dev/referable: "true"` like every referenced Secret.
    #[serde(
        default,
        rename = "clientCASecretRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ca_secret_ref: Option<SecretReference>,
    /// With `mode: secret`: the common names of the client certificates accepted (all are
    /// workers). Required with `clientAuth: optional` unless `clientCASecretRef` is set; with
    /// both, a certificate must chain to that CA and carry one of these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub allowed_client_names: Option<Vec<ClientName>>,
    /// External workers that authenticate with a client certificate: each gets a Secret
    /// `<server>-client-<name>` with `tls.crt`, `tls.key`, `ca.crt` and the endpoints (no
    /// bearer token). Removing an entry refuses its certificate within seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub clients: Vec<TlsClient>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            mode: TlsMode::Operator,
            secret_name: None,
            certificate_duration: default_certificate_duration(),
            renew_before: default_renew_before(),
            ca_duration: default_ca_duration(),
            client_auth: ClientAuth::Optional,
            client_ca_secret_ref: None,
            allowed_client_names: None,
            clients: Vec::new(),
        }
    }
}

fn default_certificate_duration() -> String {
    "90d".to_string()
}
fn default_renew_before() -> String {
    "15d".to_string()
}
fn default_ca_duration() -> String {
    "5y".to_string()
}

/// Who issues the server certificate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Operator,
    Secret,
    Disabled,
}

/// Whether client certificates authenticate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    None,
}

/// A client certificate's common name (a DNS label).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct ClientName(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub String,
);

/// A named external worker that gets a client certificate.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
pub struct TlsClient {
    /// DNS-label name: the certificate's common name and part of its Secret's name.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}
