//! Operator-wide settings from the command line, shared by every reconcile.

/// The SSA field manager: one for every object the operator applies.
pub const FIELD_MANAGER: &str = "diloco-operator";

/// Settings that are the same for every `DiLoCoServer`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace the operator runs in: its pods may reach the control port by default.
    pub operator_namespace: String,
    /// DNS suffix of the cluster (certificate SANs, endpoints).
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_namespace: "diloco-system".into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}
