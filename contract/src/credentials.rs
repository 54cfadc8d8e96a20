//! The files of a mounted credential, by the key they have in their Secret (a Secret volume
//! makes each key a file):
//!
//! - a **token directory** (`auth.token_dir`, `auth.admin_token_dir`): [`TOKEN`], and during a
//!   rotation [`PREVIOUS_TOKEN`] with [`PREVIOUS_VALID_UNTIL`] (RFC 3339);
//! - a **TLS Secret** (`kubernetes.io/tls`): [`TLS_CERT`], [`TLS_KEY`] and [`CA_CERT`];
//! - a **worker bundle** (`<server>-worker-credentials`): [`TOKEN`], [`CA_CERT`] and
//!   [`ENDPOINTS`]; a named client's `<server>-client-<name>` has [`TLS_CERT`] and [`TLS_KEY`]
//!   instead of the token (its certificate authenticates it).

use serde::{Deserialize, Serialize};

/// The bearer token (current).
pub const TOKEN: &str = "token";
/// The previous bearer token, accepted until [`PREVIOUS_VALID_UNTIL`].
pub const PREVIOUS_TOKEN: &str = "previous-token";
/// When the previous token stops working (RFC 3339).
pub const PREVIOUS_VALID_UNTIL: &str = "previous-valid-until";
/// A certificate chain (PEM), leaf first.
pub const TLS_CERT: &str = "tls.crt";
/// Its private key (PEM).
pub const TLS_KEY: &str = "tls.key";
/// The CA bundle to trust (PEM).
pub const CA_CERT: &str = "ca.crt";
/// Where the coordinator's planes are ([`Endpoints`]).
pub const ENDPOINTS: &str = "endpoints.json";

/// The files of a worker bundle, in the order the docs list them.
pub const WORKER_BUNDLE: [&str; 5] = [TOKEN, CA_CERT, TLS_CERT, TLS_KEY, ENDPOINTS];

/// `endpoints.json`: where the coordinator's planes are reachable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Control-plane URL.
    pub control: String,
    /// Bulk-plane URL (null when the bulk plane is disabled).
    #[serde(default)]
    pub bulk: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python reads `bulk` as "a URL or null": it is always present.
    #[test]
    fn endpoints_always_name_both_planes() {
        let endpoints = Endpoints {
            control: "https://llm-control.ml.svc:8512".into(),
            bulk: None,
        };
        assert_eq!(
            serde_json::to_string(&endpoints).unwrap(),
            r#"{"control":"https://llm-control.ml.svc:8512","bulk":null}"#
        );
        let lean: Endpoints = serde_json::from_str(r#"{"control": "http://c"}"#).unwrap();
        assert_eq!(lean.bulk, None);
    }
}
