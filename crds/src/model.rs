//! `spec.model`: where the model a run starts from comes from — its initial parameters (a
//! safetensors file or a sharded checkpoint directory) and its definition (configuration,
//! Python sources, tokenizer files), which forgather's workers fetch from `/model_def`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The model the coordinator starts from. Without it the first worker's `/init_params`
/// defines the parameters and `/model_def` answers 503. A checkpoint of the run, once there is
/// one, always wins over `initialParameters`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.initialParameters) || has(self.definition)")
    .message("model needs initialParameters, definition or both"))]
#[x_kube(validation = Rule::new("!has(self.claimName) || ((!has(self.initialParameters) || !self.initialParameters.startsWith('/')) && (!has(self.definition) || !self.definition.startsWith('/')))")
    .message("with model.claimName, initialParameters and definition are paths inside the claim: relative, not starting with /"))]
#[x_kube(validation = Rule::new("has(self.claimName) || ((!has(self.initialParameters) || self.initialParameters.startsWith('/')) && (!has(self.definition) || self.definition.startsWith('/')))")
    .message("without model.claimName, initialParameters and definition are absolute paths in the coordinator's image"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// A PersistentVolumeClaim holding the model, mounted read-only into the coordinator. It
    /// must be labelled `diloco.dev/referable: "true"` (its owner's consent) and not be a claim
    /// the operator created for a server. Without it, the paths below are in the coordinator's
    /// image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("model.claimName must be a Kubernetes object name"))]
    pub claim_name: Option<String>,
    /// The initial parameters: a `.safetensors` file, or a directory with
    /// `model.safetensors.index.json` and its shards (a Hugging Face checkpoint), or with
    /// `model.safetensors`. Float tensors of one dtype (F32 or BF16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("model.initialParameters must not contain .. segments"))]
    pub initial_parameters: Option<String>,
    /// The model definition directory, served to workers at `/model_def` as a deterministic
    /// tar (weight files and hidden files left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("model.definition must not contain .. segments"))]
    pub definition: Option<String>,
}
