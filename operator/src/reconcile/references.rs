//! References: what a spec may reach. Creating a `DiLoCoServer` must not give its author more
//! than their RBAC does, yet the operator mounts what the spec names into a pod running the
//! spec's image. So a referenced Secret, claim or ServiceAccount is used only with its
//! owner's consent — the `diloco.dev/referable: "true"` label — and never when the operator
//! manages it for a server (another server's token or CA key); and the image must be one the
//! operator's install allows. Pure: metadata in, a verdict out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use diloco_crds::{DiLoCoServer, REFERABLE_LABEL};

use crate::names::MANAGED_BY;
use crate::reconcile::invalid::Invalid;
use crate::reconcile::load::{Reference, ReferenceField};
use crate::settings::ImageAllowlist;

/// Checks the image and every referenced object.
pub fn check(
    server: &DiLoCoServer,
    references: &[Reference],
    allowed_images: &ImageAllowlist,
) -> Result<(), Invalid> {
    let image = &server.spec.image;
    if !allowed_images.permits(image) {
        return Err(Invalid::spec_with_reason(
            "ImageNotAllowed",
            format!(
                "spec.image {image} is not allowed by this operator's install; allowed: {} \
                 (the chart's allowedImages)",
                describe_prefixes(allowed_images)
            ),
        ));
    }
    for reference in references {
        check_reference(reference)?;
    }
    Ok(())
}

fn describe_prefixes(allowed: &ImageAllowlist) -> String {
    if allowed.prefixes().is_empty() {
        "nothing".into()
    } else {
        allowed.prefixes().join(", ")
    }
}

fn check_reference(reference: &Reference) -> Result<(), Invalid> {
    let Reference {
        field,
        name,
        metadata,
    } = reference;
    let (path, kind) = (field.path(), field.kind());
    let refuse = |reason: &'static str, message: String| {
        Err(match field {
            ReferenceField::TokenSecret
            | ReferenceField::TlsSecret
            | ReferenceField::ClientCaSecret => Invalid::credentials(reason, message),
            ReferenceField::AuditClaim
            | ReferenceField::ModelClaim
            | ReferenceField::ServiceAccount => Invalid::other(reason, message),
        })
    };
    let Some(metadata) = metadata else {
        return refuse(
            not_found_reason(*field),
            format!(
                "{path}: {kind} {name} not found in this namespace; create it{}",
                match field {
                    ReferenceField::TokenSecret => " with a `token` key",
                    _ => "",
                }
            ) + &format!(" and label it {REFERABLE_LABEL}=true"),
        );
    };
    if let Some(owner) = managed_for_a_server(metadata) {
        return refuse(
            "ReferenceNotAllowed",
            format!(
                "{path}: {kind} {name} is managed by diloco-operator{owner}; a spec may not \
                 use the credentials or storage of a server"
            ),
        );
    }
    let consented = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(REFERABLE_LABEL))
        .is_some_and(|value| value == "true");
    if !consented {
        return refuse(
            "ReferenceNotAllowed",
            format!(
                "{path}: {kind} {name} is not labelled {REFERABLE_LABEL}=true; whoever owns it \
                 must add that label before a DiLoCoServer may use it"
            ),
        );
    }
    Ok(())
}

fn not_found_reason(field: ReferenceField) -> &'static str {
    match field {
        ReferenceField::TokenSecret => "TokenSecretNotFound",
        ReferenceField::TlsSecret => "TlsSecretNotFound",
        ReferenceField::ClientCaSecret => "ClientCASecretNotFound",
        ReferenceField::AuditClaim => "AuditClaimNotFound",
        ReferenceField::ModelClaim => "ModelClaimNotFound",
        ReferenceField::ServiceAccount => "ServiceAccountNotFound",
    }
}

/// `Some(" for DiLoCoServer x")` (or `Some("")`) when the operator manages the object.
fn managed_for_a_server(metadata: &ObjectMeta) -> Option<String> {
    let server_owner = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "DiLoCoServer");
    if let Some(owner) = server_owner {
        return Some(format!(" for DiLoCoServer {}", owner.name));
    }
    let labels = metadata.labels.as_ref()?;
    (labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some(MANAGED_BY))
    .then(|| {
        labels
            .get(diloco_crds::SERVER_LABEL)
            .map(|server| format!(" for DiLoCoServer {server}"))
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn server(image: &str) -> DiLoCoServer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
            "metadata": {"name": "llm", "namespace": "team-a"},
            "spec": {"image": image},
        }))
        .unwrap()
    }

    fn labelled(labels: &[(&str, &str)]) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        })
    }

    fn reference(field: ReferenceField, metadata: Option<ObjectMeta>) -> Reference {
        Reference {
            field,
            name: "target".into(),
            metadata,
        }
    }

    fn allowed() -> ImageAllowlist {
        ImageAllowlist::new(["registry.example/diloco"])
    }

    #[test]
    fn a_labelled_object_is_usable_and_an_unlabelled_one_is_refused() {
        let ok = reference(
            ReferenceField::AuditClaim,
            labelled(&[(REFERABLE_LABEL, "true")]),
        );
        assert_eq!(
            check(&server("registry.example/diloco:1"), &[ok], &allowed()),
            Ok(())
        );
        for metadata in [labelled(&[]), labelled(&[(REFERABLE_LABEL, "yes")])] {
            let refused = check(
                &server("registry.example/diloco:1"),
                &[reference(ReferenceField::ServiceAccount, metadata)],
                &allowed(),
            )
            .unwrap_err();
            assert_eq!(refused.reason, "ReferenceNotAllowed");
            assert!(!refused.credentials);
            assert!(
                refused
                    .message
                    .contains("serviceAccountName: ServiceAccount target")
            );
            assert!(refused.message.contains("diloco.dev/referable=true"));
        }
    }

    /// Even with the consent label, another server's Secret is never usable: whoever labels
    /// it would hand out its token or CA key.
    #[test]
    fn an_operator_managed_object_is_refused_even_with_the_label() {
        let by_label = labelled(&[
            (REFERABLE_LABEL, "true"),
            ("app.kubernetes.io/managed-by", MANAGED_BY),
            ("diloco.dev/server", "other"),
        ]);
        let mut by_owner = labelled(&[(REFERABLE_LABEL, "true")]).unwrap();
        by_owner.owner_references = Some(vec![OwnerReference {
            api_version: "diloco.dev/v1alpha1".into(),
            kind: "DiLoCoServer".into(),
            name: "other".into(),
            uid: "uid-other".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        for metadata in [by_label, Some(by_owner)] {
            let refused = check(
                &server("registry.example/diloco:1"),
                &[reference(ReferenceField::TokenSecret, metadata)],
                &allowed(),
            )
            .unwrap_err();
            assert_eq!(refused.reason, "ReferenceNotAllowed");
            assert!(refused.credentials, "a credentials problem");
            assert!(
                refused.message.contains("for DiLoCoServer other"),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_missing_object_is_reported_per_field() {
        let refused = check(
            &server("registry.example/diloco:1"),
            &[reference(ReferenceField::TokenSecret, None)],
            &allowed(),
        )
        .unwrap_err();
        assert_eq!(refused.reason, "TokenSecretNotFound");
        assert!(refused.message.contains("with a `token` key and label it"));
        let refused = check(
            &server("registry.example/diloco:1"),
            &[reference(ReferenceField::AuditClaim, None)],
            &allowed(),
        )
        .unwrap_err();
        assert_eq!(refused.reason, "AuditClaimNotFound");
    }

    #[test]
    fn an_image_outside_the_allowlist_is_refused_first() {
        let refused = check(
            &server("evil.example/miner:1"),
            &[reference(ReferenceField::TokenSecret, None)],
            &allowed(),
        )
        .unwrap_err();
        assert_eq!(refused.reason, "ImageNotAllowed");
        assert!(refused.message.contains("evil.example/miner:1"));
        assert!(refused.message.contains("registry.example/diloco"));
    }
}
