//! Rotations through the resource: a fresh value of `diloco.dev/rotate-token` or
//! `diloco.dev/rotate-certificates`, which the operator handles once (as a GitOps nonce).

use diloco_contract::console::Rotation;
use diloco_crds::{DiLoCoServer, ROTATE_CERTIFICATES_ANNOTATION, ROTATE_TOKEN_ANNOTATION};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, kube_failure};
use crate::session::random_hex;

/// The field manager of the console's patches.
pub const FIELD_MANAGER: &str = "diloco-console";

/// `POST …/rotate/<what>` reply: the annotation set and its new value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRequested {
    /// The annotation.
    pub annotation: String,
    /// Its new value.
    pub value: String,
}

/// The annotation that asks for `what`.
pub fn annotation(what: Rotation) -> &'static str {
    match what {
        Rotation::Token => ROTATE_TOKEN_ANNOTATION,
        Rotation::Certificates => ROTATE_CERTIFICATES_ANNOTATION,
    }
}

/// Sets the annotation of `what` on `namespace/name` to a value never used before.
pub async fn request_rotation(
    client: &Client,
    namespace: &str,
    name: &str,
    what: Rotation,
) -> Result<RotationRequested, ApiError> {
    let random = random_hex(&SystemRandom::new())?;
    let value = format!("console-{}-{}", jiff::Timestamp::now(), &random[..12]);
    let annotation = annotation(what).to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {&annotation: &value}}});
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 404 => ApiError::not_found(format!(
                "there is no DiLoCoServer \"{name}\" in namespace \"{namespace}\""
            )),
            _ => kube_failure("set the rotation annotation", &e),
        })?;
    Ok(RotationRequested { annotation, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rotation_has_its_annotation() {
        assert_eq!(annotation(Rotation::Token), "diloco.dev/rotate-token");
        assert_eq!(
            annotation(Rotation::Certificates),
            "diloco.dev/rotate-certificates"
        );
    }
}
