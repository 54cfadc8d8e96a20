//! The console's contract: what `diloco-console`, the operator and `kubectl diloco` agree on.
//!
//! - The operator issues, for every `DiLoCoServer`, a client certificate with common name
//!   [`CONSOLE_COMMON_NAME`] in the Secret `<server>-`[`CONSOLE_CLIENT_TLS_SUFFIX`] (keys of
//!   [`crate::credentials`]'s TLS Secret), lists that name as an admin in the server's clients
//!   file, and lets only the console's ServiceAccount `get` that one Secret (a Role and
//!   RoleBinding per server). The console reaches the coordinator with it, never with a token.
//! - The console's JSON API lives under [`API_PREFIX`]. A browser authenticates with the
//!   session cookie [`SESSION_COOKIE`] (and sends [`CSRF_HEADER`] on every `POST`); a program
//!   such as `kubectl diloco` sends `Authorization: Bearer <Kubernetes token>` instead (no
//!   cookie, so no CSRF token is needed).
//! - An upstream coordinator's 401 or 403 is passed on with [`UPSTREAM_AUTH_FAILED_HEADER`]`: 1`:
//!   the coordinator refused the *console's* credential, the user's session is fine. A 401 or
//!   403 without it is the console refusing the user.

use serde::{Deserialize, Serialize};

use crate::api::ControlAction;

/// Common name of the console's client certificate, in every server's clients file.
pub const CONSOLE_COMMON_NAME: &str = "diloco-console";
/// `<server>-console-client-tls`: the console's client certificate for one server.
pub const CONSOLE_CLIENT_TLS_SUFFIX: &str = "console-client-tls";
/// Set to `1` on a reply whose upstream coordinator answered 401 or 403.
pub const UPSTREAM_AUTH_FAILED_HEADER: &str = "x-upstream-auth-failed";
/// The browser session cookie (`HttpOnly; Secure; SameSite=Strict`).
pub const SESSION_COOKIE: &str = "diloco_console_session";
/// The anti-CSRF token a browser echoes on every state-changing request.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of every JSON route.
pub const API_PREFIX: &str = "/api";
/// `POST` [`LoginRequest`] → [`SessionReply`] and the cookie.
pub const LOGIN: &str = "/api/login";
/// `POST`: ends the session.
pub const LOGOUT: &str = "/api/logout";
/// `GET` → [`SessionReply`] of the current session, or 401.
pub const SESSION: &str = "/api/session";
/// `GET` → `Vec<`[`ServerSummary`]`>`: the servers the caller may `get`.
pub const SERVERS: &str = "/api/servers";

/// `/api/servers/<namespace>/<name>`: one server's summary ([`ServerSummary`]).
pub fn server_path(namespace: &str, name: &str) -> String {
    format!("{SERVERS}/{namespace}/{name}")
}

/// `/api/servers/<namespace>/<name>/status`: the coordinator's `/status`, passed through.
pub fn status_path(namespace: &str, name: &str) -> String {
    format!("{}/status", server_path(namespace, name))
}

/// `/api/servers/<namespace>/<name>/history`: loss and throughput over rounds
/// ([`crate::api::StatsHistoryReply`]).
pub fn history_path(namespace: &str, name: &str) -> String {
    format!("{}/history", server_path(namespace, name))
}

/// `/api/servers/<namespace>/<name>/control/<action>`: a control action, proxied.
pub fn control_path(namespace: &str, name: &str, action: ControlAction) -> String {
    format!("{}/control/{}", server_path(namespace, name), action.name())
}

/// `/api/servers/<namespace>/<name>/rotate/<what>`: sets the rotation annotation.
pub fn rotate_path(namespace: &str, name: &str, what: Rotation) -> String {
    format!("{}/rotate/{}", server_path(namespace, name), what.name())
}

/// The control actions the console proxies (forgather's allowlist, reference §4); any other
/// name is a 400 before anything is sent upstream.
pub const PROXIED_ACTIONS: [ControlAction; 7] = ControlAction::ALL;

/// What a rotation request rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The worker bearer token (`diloco.dev/rotate-token`).
    Token,
    /// The leaf certificates (`diloco.dev/rotate-certificates`).
    Certificates,
}

impl Rotation {
    /// Its name in the path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Certificates => "certificates",
        }
    }

    /// The rotation named in the path.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Token, Self::Certificates]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// `POST /api/login` body: a Kubernetes bearer token (ServiceAccount or OIDC), checked with a
/// TokenReview and then forgotten (the session keeps the user's name and groups only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The token.
    pub token: String,
}

/// The signed-in user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReply {
    /// The user name the TokenReview returned.
    pub user: String,
    /// The token a browser sends in [`CSRF_HEADER`].
    pub csrf_token: String,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout_seconds: u64,
}

/// One server as the list and the server page show it (from the resource, not the
/// coordinator: it is there even when the coordinator is down).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    pub namespace: String,
    pub name: String,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.coordinator.round`.
    pub round: Option<u64>,
    /// `status.coordinator.workers`.
    pub workers: Option<u64>,
    /// The control endpoint workers use.
    pub endpoint: Option<String>,
    /// `metadata.creationTimestamp`, RFC 3339.
    pub created: Option<String>,
    /// Every status condition.
    pub conditions: Vec<ConditionSummary>,
    /// When the worker token was last rotated, RFC 3339.
    pub token_rotated_at: Option<String>,
    /// When the server certificate expires, RFC 3339.
    pub certificate_expires_at: Option<String>,
}

/// A status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// Every error the console answers with (its own and a proxied upstream's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleError {
    /// What went wrong, for a person.
    pub error: String,
    /// The coordinator's status code when the error is the coordinator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_server_and_the_action() {
        assert_eq!(
            control_path("team-a", "llm", ControlAction::SaveState),
            "/api/servers/team-a/llm/control/save_state"
        );
        assert_eq!(
            rotate_path("team-a", "llm", Rotation::Certificates),
            "/api/servers/team-a/llm/rotate/certificates"
        );
        assert_eq!(Rotation::from_name("token"), Some(Rotation::Token));
        assert_eq!(Rotation::from_name("ca"), None);
    }
}
