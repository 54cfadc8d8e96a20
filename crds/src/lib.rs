//! The `DiLoCoServer` custom resource (`diloco.dev/v1alpha1`, short name `dls`).
//!
//! `crdgen` prints the CustomResourceDefinition; the committed copy is
//! `crds/dilocoserver.yaml`, and a test fails when it is stale.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

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
                auth: true
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
        assert_eq!(spec.device, Device::Auto);
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
