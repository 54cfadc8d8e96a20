//! The `DiLoCoServer` custom resource (`diloco.dev/v1alpha1`, short name `dls`).
//!
//! `crdgen` prints the CustomResourceDefinition; the committed copy is
//! `crds/dilocoserver.yaml`, and a test fails when it is stale.

mod api_reference;
mod audit;
mod contract;
mod duration;
mod model;
mod network_policy;
mod planes;
mod security;
mod spec;
mod status;
mod training;

pub use api_reference::api_reference_markdown;
pub use audit::*;
pub use duration::*;
pub use model::*;
pub use network_policy::*;
pub use planes::*;
pub use security::*;
pub use spec::*;
pub use status::*;
pub use training::*;

/// Annotation whose every new value rotates the bearer token once (GitOps nonce).
pub const ROTATE_TOKEN_ANNOTATION: &str = "diloco.dev/rotate-token";
/// Annotation whose every new value re-issues the leaf certificates once.
pub const ROTATE_CERTIFICATES_ANNOTATION: &str = "diloco.dev/rotate-certificates";
/// Annotation whose every new value replaces the CA once (the old CA stays trusted until the
/// leaves are re-issued).
pub const ROTATE_CA_ANNOTATION: &str = "diloco.dev/rotate-ca";
/// Label that makes a Secret, PersistentVolumeClaim or ServiceAccount usable from a
/// `DiLoCoServer` spec (value `"true"`): its owner's consent to have it mounted into a
/// coordinator. Nothing without it is ever read or mounted on a spec's say-so.
pub const REFERABLE_LABEL: &str = "diloco.dev/referable";
/// Label on every child object and on the pods of workers allowed through the default
/// NetworkPolicies: the name of the `DiLoCoServer`.
pub const SERVER_LABEL: &str = "diloco.dev/server";

/// `#[serde(default = "default_true")]`: the fields that are on unless switched off. It lives
/// at the crate root so that every part of the spec can use it without importing `spec`.
pub(crate) fn default_true() -> bool {
    true
}

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CustomResourceDefinition of `DiLoCoServer`.
pub fn crd() -> CustomResourceDefinition {
    DiLoCoServer::crd()
}

/// The CustomResourceDefinition as YAML, exactly as committed in `crds/dilocoserver.yaml`.
pub fn crd_yaml() -> String {
    // Serialising a derived CRD cannot fail: it holds only strings, numbers, maps and lists.
    serde_norway::to_string(&crd()).expect("a CRD always serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed YAML is what `kubectl apply` and the Helm chart install; it must match
    /// the types. Regenerate with `make crds`.
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let committed = include_str!("../dilocoserver.yaml");
        assert!(
            committed == crd_yaml(),
            "crds/dilocoserver.yaml is stale: run `make crds` and commit the result"
        );
    }

    #[test]
    fn the_charts_crd_copy_matches_the_types() {
        let chart_copy = include_str!("../../charts/diloco-operator/files/dilocoserver.yaml");
        assert!(
            chart_copy == crd_yaml(),
            "charts/diloco-operator/files/dilocoserver.yaml is stale: run `make crds`"
        );
    }

    #[test]
    fn minimal_spec_gets_the_documented_defaults() {
        let spec: DiLoCoServerSpec =
            serde_json::from_value(serde_json::json!({"image": "coordinator:1"})).unwrap();
        assert_eq!(spec.control.port, DEFAULT_CONTROL_PORT);
        assert_eq!(
            spec.bulk,
            BulkSpec {
                enabled: true,
                port: 8513,
                tls: true,
                auth: true,
                service: ServiceSpec::default(),
            }
        );
        assert_eq!(
            spec.training.outer_optimizer,
            OuterOptimizer {
                lr: 0.7,
                momentum: 0.9,
                nesterov: true
            }
        );
        assert_eq!(spec.training.upload_dtype, WireDtype::Bf16);
        assert_eq!(spec.training.download_dtype, WireDtype::Fp32);
        assert_eq!(spec.training.wire_format, WireFormat::Safetensors);
        assert_eq!(spec.device, Device::Auto);
        assert_eq!(spec.auth.mode, AuthMode::Token);
        assert_eq!(spec.tls.mode, TlsMode::Operator);
        assert_eq!(spec.tls.certificate_duration, "90d");
        assert!(spec.network_policy.enabled);
        assert!(spec.audit.retain_on_delete);
    }

    /// The API server enforces these; the generated schema must carry them.
    #[test]
    fn crd_carries_the_cel_rules_and_short_name() {
        let crd = crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["dls".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["diloco".to_string()]));
        let yaml = crd_yaml();
        assert!(yaml.contains("rule: '!self.auth || self.tls'"), "{yaml}");
        assert!(yaml.contains("self.bulk.port != self.control.port"));
    }
}
