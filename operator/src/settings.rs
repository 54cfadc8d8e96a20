//! Operator-wide settings from the command line, shared by every reconcile.

use std::collections::BTreeMap;

/// The SSA field manager: one for every object the operator applies.
pub const FIELD_MANAGER: &str = "diloco-operator";

/// The chart's own coordinator repository: the only image allowed when nothing else is said.
pub const DEFAULT_COORDINATOR_REPOSITORY: &str = "ghcr.io/diloco-dev/diloco-coordinator";

/// Settings that are the same for every `DiLoCoServer`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace the operator runs in: its pods may reach the control port by default.
    pub operator_namespace: String,
    /// Labels of the operator's own pods: with the namespace, the NetworkPolicy peer allowed
    /// on the control port (status polling), so no other pod of that namespace is.
    pub operator_pod_labels: BTreeMap<String, String>,
    /// DNS suffix of the cluster (certificate SANs, endpoints).
    pub cluster_domain: String,
    /// The coordinator images a `DiLoCoServer` may run.
    pub allowed_images: ImageAllowlist,
    /// Namespace of the cluster DNS pods: the coordinator's only egress.
    pub dns_namespace: String,
    /// Labels of the cluster DNS pods.
    pub dns_pod_labels: BTreeMap<String, String>,
    /// The console, if one is installed: it gets a client certificate for every server with
    /// operator-owned TLS, and its pods may reach the control port.
    pub console: Option<ConsoleSettings>,
}

/// Who the console is: the ServiceAccount that may read each server's console certificate,
/// and the pods the coordinators' NetworkPolicies admit on the control port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Namespace of the console's ServiceAccount and pods.
    pub namespace: String,
    /// Name of the console's ServiceAccount.
    pub service_account: String,
    /// Labels of the console's pods.
    pub pod_labels: BTreeMap<String, String>,
}

/// Default labels of the console's pods (the chart's selector labels).
pub const DEFAULT_CONSOLE_POD_LABELS: &str = "app.kubernetes.io/name=diloco-console";

/// Parses `<namespace>/<name>` (the form of `--console-service-account`).
pub fn parse_service_account(text: &str) -> Result<(String, String), String> {
    let (namespace, name) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not <namespace>/<name>"))?;
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !valid(namespace) || !valid(name) {
        return Err(format!(
            "`{text}` is not <namespace>/<name> of lowercase DNS names"
        ));
    }
    Ok((namespace.to_string(), name.to_string()))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_namespace: "diloco-system".into(),
            operator_pod_labels: BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                "diloco-operator".into(),
            )]),
            cluster_domain: "cluster.local".into(),
            allowed_images: ImageAllowlist::new([DEFAULT_COORDINATOR_REPOSITORY]),
            dns_namespace: "kube-system".into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            console: None,
        }
    }
}

/// Image references a spec may name, as prefixes. A prefix matches the image itself, a tag or
/// digest of it (`<prefix>:…`, `<prefix>@…`), or, when it ends with `/`, anything below that
/// path. So `registry.example/diloco` allows `registry.example/diloco:1.2` but not
/// `registry.example/diloco-evil:1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageAllowlist {
    prefixes: Vec<String>,
}

impl ImageAllowlist {
    /// An allowlist of these prefixes (empty entries are ignored).
    pub fn new<I, S>(prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            prefixes: prefixes
                .into_iter()
                .map(Into::into)
                .map(|p: String| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// The prefixes, for messages.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether `image` is allowed.
    pub fn permits(&self, image: &str) -> bool {
        self.prefixes.iter().any(|prefix| {
            let Some(rest) = image.strip_prefix(prefix.as_str()) else {
                return false;
            };
            if prefix.ends_with('/') {
                !rest.is_empty()
            } else {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('@')
            }
        })
    }
}

/// Parses `key=value,key=value` (the form of label flags) into labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        if key.trim().is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_prefix_allows_its_tags_and_digests_but_not_a_longer_name() {
        let allowed = ImageAllowlist::new(["registry.example/diloco", "mirror.example/team/"]);
        assert!(allowed.permits("registry.example/diloco"));
        assert!(allowed.permits("registry.example/diloco:1.2"));
        assert!(allowed.permits("registry.example/diloco@sha256:abcd"));
        assert!(!allowed.permits("registry.example/diloco-evil:1"));
        assert!(!allowed.permits("registry.example/dilo"));
        assert!(!allowed.permits("evil.example/registry.example/diloco:1"));
        assert!(allowed.permits("mirror.example/team/anything:3"));
        assert!(!allowed.permits("mirror.example/team/"));
        assert!(!allowed.permits("mirror.example/teammate:1"));
    }

    #[test]
    fn an_empty_allowlist_allows_nothing() {
        let allowed = ImageAllowlist::new(["", "  "]);
        assert!(allowed.prefixes().is_empty());
        assert!(!allowed.permits("anything:1"));
    }

    #[test]
    fn label_flags_parse_into_labels() {
        assert_eq!(
            parse_labels("a=1, b.io/c = x,").unwrap(),
            BTreeMap::from([("a".into(), "1".into()), ("b.io/c".into(), "x".into())])
        );
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn a_console_service_account_is_namespace_slash_name() {
        assert_eq!(
            parse_service_account("diloco-system/diloco-console").unwrap(),
            ("diloco-system".to_string(), "diloco-console".to_string())
        );
        for bad in ["diloco-console", "/x", "ns/", "ns/Name", "a/b/c"] {
            assert!(parse_service_account(bad).is_err(), "{bad}");
        }
    }
}
