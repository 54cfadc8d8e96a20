//! Container paths → local paths: a process on this machine cannot see `/etc/diloco/tls`, so
//! every occurrence of a volume mount's path in its arguments, environment and ConfigMap files
//! is rewritten to the directory the runner materialised that volume in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Container;

/// A container's volume mounts, longest mount path first, so a nested mount wins.
#[derive(Clone, Debug, Default)]
pub(super) struct MountPaths {
    mounts: Vec<(String, String)>,
}

impl MountPaths {
    /// The mounts of `container`, each mapped into the local directory of its volume
    /// (`volume_dirs`: volume name → directory), `subPath` appended.
    pub(super) fn new(
        container: &Container,
        volume_dirs: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            if mount.sub_path_expr.is_some() {
                bail!(
                    "volumeMount {} uses subPathExpr, which the pod runner does not support",
                    mount.name
                );
            }
            let dir = volume_dirs.get(&mount.name).with_context(|| {
                format!("volumeMount {} names no volume of the pod", mount.name)
            })?;
            let mut local = dir.clone();
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                let sub_path = Path::new(sub_path);
                if sub_path.is_absolute() || sub_path.components().any(|c| c.as_os_str() == "..") {
                    bail!("volumeMount {} has an unsafe subPath", mount.name);
                }
                local = local.join(sub_path);
            }
            let container_path = mount.mount_path.trim_end_matches('/');
            if container_path.is_empty() {
                bail!("volumeMount {} is mounted at /", mount.name);
            }
            mounts.push((container_path.to_string(), local.display().to_string()));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(Self { mounts })
    }

    /// `text` with every mount path that stands as a path of its own (not inside a longer
    /// name) replaced by its local directory, in one pass so a replacement is never rewritten.
    pub(super) fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut previous: Option<char> = None;
        'scan: while let Some(next) = rest.chars().next() {
            if previous.is_none_or(|c| !is_name_char(c) && c != '/') {
                for (from, to) in &self.mounts {
                    if let Some(after) = rest.strip_prefix(from.as_str())
                        && after.chars().next().is_none_or(|c| !is_name_char(c))
                    {
                        out.push_str(to);
                        previous = to.chars().last();
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            out.push(next);
            previous = Some(next);
            rest = &rest[next.len_utf8()..];
        }
        out
    }
}

/// Characters that continue a file name: a mount path followed by one is a different path.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(mounts: &[(&str, &str)]) -> MountPaths {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": mounts.iter().map(|(name, path)| {
                serde_json::json!({"name": name, "mountPath": path})
            }).collect::<Vec<_>>(),
        }))
        .unwrap();
        let dirs = mounts
            .iter()
            .map(|(name, _)| (name.to_string(), PathBuf::from(format!("/w/{name}"))))
            .collect();
        MountPaths::new(&container, &dirs).unwrap()
    }

    #[test]
    fn nested_mounts_map_to_their_own_volume() {
        let paths = paths(&[
            ("state", "/var/lib/diloco"),
            ("token", "/var/lib/diloco/token"),
        ]);
        assert_eq!(
            paths.rewrite("a: /var/lib/diloco/token/x, b: /var/lib/diloco/audit.jsonl"),
            "a: /w/token/x, b: /w/state/audit.jsonl"
        );
    }

    #[test]
    fn longer_names_and_paths_inside_other_paths_are_left_alone() {
        let paths = paths(&[("config", "/etc/diloco")]);
        assert_eq!(
            paths.rewrite("/etc/diloco-old /opt/etc/diloco /etc/diloco"),
            "/etc/diloco-old /opt/etc/diloco /w/config"
        );
        assert_eq!(
            paths.rewrite("--config=/etc/diloco/c.yaml"),
            "--config=/w/config/c.yaml"
        );
    }

    #[test]
    fn sub_path_points_inside_the_volume_and_sub_path_expr_is_refused() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app.yaml", "subPath": "app.yaml"},
            ],
        }))
        .unwrap();
        let dirs = BTreeMap::from([("config".to_string(), PathBuf::from("/w/config"))]);
        let paths = MountPaths::new(&container, &dirs).unwrap();
        assert_eq!(paths.rewrite("/etc/app.yaml"), "/w/config/app.yaml");

        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [{"name": "config", "mountPath": "/x", "subPathExpr": "$(POD)"}],
        }))
        .unwrap();
        let error = MountPaths::new(&container, &dirs).unwrap_err();
        assert!(error.to_string().contains("subPathExpr"), "{error}");
    }
}
