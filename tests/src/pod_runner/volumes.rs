//! A pod's volumes as local directories: where each one lives, and keeping their files in step
//! with the API server, each changed file replaced atomically (temp file + rename) so a process
//! re-reading it never sees half a credential.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use super::mount_paths::MountPaths;
use super::volume_sources::{SourceReader, VolumeContent};

/// The volumes of one pod.
pub(super) struct PodVolumes {
    volumes: Vec<LocalVolume>,
}

struct LocalVolume {
    dir: PathBuf,
    name: String,
    content: VolumeContent,
    /// Files written by the last sync (relative paths), to remove keys that disappear.
    written: BTreeSet<PathBuf>,
    /// Service-account tokens issued for this volume, by file path.
    tokens: BTreeMap<PathBuf, Vec<u8>>,
}

impl PodVolumes {
    /// Where each volume of `pod` goes: `<pod_dir>/volumes/<volume>`, except a
    /// persistentVolumeClaim, which lives in `<claims_dir>/<claimName>` and so outlives the pod.
    /// Fails for volume kinds the runner cannot provide.
    pub(super) fn plan(pod: &Pod, pod_dir: &Path, claims_dir: &Path) -> anyhow::Result<Self> {
        let mut volumes = Vec::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let dir = match &volume.persistent_volume_claim {
                Some(claim) => claims_dir.join(&claim.claim_name),
                None => pod_dir.join("volumes").join(&volume.name),
            };
            volumes.push(LocalVolume {
                dir,
                name: volume.name.clone(),
                content: VolumeContent::of(volume, pod)?,
                written: BTreeSet::new(),
                tokens: BTreeMap::new(),
            });
        }
        Ok(Self { volumes })
    }

    /// Volume name → its local directory.
    pub(super) fn dirs(&self) -> BTreeMap<String, PathBuf> {
        self.volumes
            .iter()
            .map(|v| (v.name.clone(), v.dir.clone()))
            .collect()
    }

    /// Brings every volume in line with the API server now. A missing Secret or ConfigMap is an
    /// error (the kubelet keeps such a pod in ContainerCreating); volumes already written stay.
    pub(super) async fn sync(
        &mut self,
        client: &Client,
        pod: &Pod,
        mount_paths: &MountPaths,
    ) -> anyhow::Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        for volume in &mut self.volumes {
            std::fs::create_dir_all(&volume.dir)
                .with_context(|| format!("failed to create {}", volume.dir.display()))?;
            let VolumeContent::Files(sources) = &volume.content else {
                continue;
            };
            let mut reader = SourceReader {
                client,
                pod,
                namespace,
                mount_paths,
                tokens: &mut volume.tokens,
            };
            let files = reader
                .files(sources)
                .await
                .with_context(|| format!("volume {}", volume.name))?;
            for (relative, content) in &files {
                let path = volume.dir.join(relative);
                if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
                    replace_file(&path, content)?;
                }
            }
            for stale in volume.written.iter().filter(|p| !files.contains_key(*p)) {
                let path = volume.dir.join(stale);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(e)
                            .with_context(|| format!("failed to remove {}", path.display()));
                    }
                    _ => {}
                }
            }
            volume.written = files.into_keys().collect();
        }
        Ok(())
    }
}

/// Writes `content` to a temp file beside `path` and renames it over `path`.
fn replace_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .context("a volume file has a parent directory")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("failed to create {}", parent.display()))?;
    let name = path
        .file_name()
        .context("a volume file has a name")?
        .to_string_lossy();
    let temp = parent.join(format!(".{name}.pod-runner-tmp"));
    std::fs::write(&temp, content)
        .with_context(|| format!("failed to write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("failed to replace {}", path.display()))
}
