//! What the files of a pod's volumes should contain, read from the API server the way the
//! kubelet reads them: Secrets and ConfigMaps (one file per key, `items` honoured), the
//! downward API, and service-account tokens of projected volumes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
    VolumeProjection,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::mount_paths::MountPaths;

/// One source of files in a volume.
#[derive(Clone, Debug)]
pub(super) enum FileSource {
    Secret {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    ConfigMap {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    DownwardApi(Vec<DownwardAPIVolumeFile>),
    ServiceAccountToken {
        path: String,
        audience: Option<String>,
        expiration_seconds: Option<i64>,
    },
}

/// How a volume is materialised: files kept in step with the API server, or a plain directory.
#[derive(Clone, Debug)]
pub(super) enum VolumeContent {
    Files(Vec<FileSource>),
    /// `emptyDir` and `persistentVolumeClaim`: created empty, then the process's own.
    Directory,
}

impl VolumeContent {
    /// The content of `volume`, or why the runner cannot provide it.
    pub(super) fn of(volume: &Volume, pod: &Pod) -> anyhow::Result<Self> {
        let content = if let Some(secret) = &volume.secret {
            VolumeContent::Files(vec![FileSource::Secret {
                name: secret
                    .secret_name
                    .clone()
                    .with_context(|| format!("secret volume {} has no secretName", volume.name))?,
                items: secret.items.clone(),
                optional: secret.optional.unwrap_or(false),
            }])
        } else if let Some(config_map) = &volume.config_map {
            VolumeContent::Files(vec![FileSource::ConfigMap {
                name: config_map.name.clone(),
                items: config_map.items.clone(),
                optional: config_map.optional.unwrap_or(false),
            }])
        } else if let Some(projected) = &volume.projected {
            let sources = projected.sources.iter().flatten();
            VolumeContent::Files(sources.map(projection).collect::<anyhow::Result<_>>()?)
        } else if let Some(downward) = &volume.downward_api {
            VolumeContent::Files(vec![FileSource::DownwardApi(
                downward.items.clone().unwrap_or_default(),
            )])
        } else if volume.empty_dir.is_some() || volume.persistent_volume_claim.is_some() {
            VolumeContent::Directory
        } else {
            bail!(
                "volume {} is of a kind the pod runner does not support",
                volume.name
            );
        };
        // Refuse unknown downward-API fields now, not on every sync.
        if let VolumeContent::Files(sources) = &content {
            for source in sources {
                if let FileSource::DownwardApi(files) = source {
                    for file in files {
                        downward_value(pod, file)?;
                    }
                }
            }
        }
        Ok(content)
    }
}

fn projection(source: &VolumeProjection) -> anyhow::Result<FileSource> {
    if let Some(secret) = &source.secret {
        Ok(FileSource::Secret {
            name: secret.name.clone(),
            items: secret.items.clone(),
            optional: secret.optional.unwrap_or(false),
        })
    } else if let Some(config_map) = &source.config_map {
        Ok(FileSource::ConfigMap {
            name: config_map.name.clone(),
            items: config_map.items.clone(),
            optional: config_map.optional.unwrap_or(false),
        })
    } else if let Some(downward) = &source.downward_api {
        Ok(FileSource::DownwardApi(
            downward.items.clone().unwrap_or_default(),
        ))
    } else if let Some(token) = &source.service_account_token {
        Ok(FileSource::ServiceAccountToken {
            path: token.path.clone(),
            audience: token.audience.clone(),
            expiration_seconds: token.expiration_seconds,
        })
    } else {
        bail!("a projected volume source the pod runner does not support")
    }
}

/// What the sources of one volume read from.
pub(super) struct SourceReader<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub mount_paths: &'a MountPaths,
    /// Service-account tokens already issued, by file path: requested once per pod.
    pub tokens: &'a mut BTreeMap<PathBuf, Vec<u8>>,
}

impl SourceReader<'_> {
    /// The files `sources` should hold now: relative path → content.
    pub(super) async fn files(
        &mut self,
        sources: &[FileSource],
    ) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
        let mut files = BTreeMap::new();
        for source in sources {
            match source {
                FileSource::Secret {
                    name,
                    items,
                    optional,
                } => {
                    let api = Api::<Secret>::namespaced(self.client.clone(), self.namespace);
                    let secret = api
                        .get_opt(name)
                        .await
                        .with_context(|| format!("failed to read secret {name}"))?;
                    let data = match secret {
                        Some(secret) => secret.data.unwrap_or_default(),
                        None if *optional => BTreeMap::new(),
                        None => bail!("secret {name} not found"),
                    };
                    let data = data.into_iter().map(|(k, ByteString(v))| (k, v)).collect();
                    select_keys(&mut files, data, items.as_deref(), *optional, name)?;
                }
                FileSource::ConfigMap {
                    name,
                    items,
                    optional,
                } => {
                    let api = Api::<ConfigMap>::namespaced(self.client.clone(), self.namespace);
                    let config_map = api
                        .get_opt(name)
                        .await
                        .with_context(|| format!("failed to read configmap {name}"))?;
                    let mut data = BTreeMap::new();
                    match config_map {
                        Some(config_map) => {
                            for (key, text) in config_map.data.unwrap_or_default() {
                                data.insert(key, self.mount_paths.rewrite(&text).into_bytes());
                            }
                            for (key, ByteString(bytes)) in
                                config_map.binary_data.unwrap_or_default()
                            {
                                data.insert(key, bytes);
                            }
                        }
                        None if *optional => {}
                        None => bail!("configmap {name} not found"),
                    }
                    select_keys(&mut files, data, items.as_deref(), *optional, name)?;
                }
                FileSource::DownwardApi(items) => {
                    for item in items {
                        let value = downward_value(self.pod, item)?;
                        files.insert(relative_path(&item.path)?, value.into_bytes());
                    }
                }
                FileSource::ServiceAccountToken {
                    path,
                    audience,
                    expiration_seconds,
                } => {
                    let path = relative_path(path)?;
                    let token = match self.tokens.get(&path) {
                        Some(token) => token.clone(),
                        None => {
                            let token = self
                                .request_token(audience.as_deref(), *expiration_seconds)
                                .await?
                                .into_bytes();
                            self.tokens.insert(path.clone(), token.clone());
                            token
                        }
                    };
                    files.insert(path, token);
                }
            }
        }
        Ok(files)
    }

    async fn request_token(
        &self,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
    ) -> anyhow::Result<String> {
        let account = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": expiration_seconds.unwrap_or(3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod.metadata.name,
                    "uid": self.pod.metadata.uid,
                },
            },
        }))?;
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), self.namespace);
        let issued: TokenRequest = api
            .create_subresource("token", &account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("failed to request a token for serviceaccount {account}"))?;
        issued
            .status
            .and_then(|s| s.token)
            .context("the token request came back without a token")
    }
}

/// Adds the files of a Secret's or ConfigMap's `data`: every key, or only `items`.
fn select_keys(
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    object: &str,
) -> anyhow::Result<()> {
    match items {
        None => {
            for (key, value) in data {
                files.insert(relative_path(&key)?, value);
            }
        }
        Some(items) => {
            for item in items {
                match data.remove(&item.key) {
                    Some(value) => {
                        files.insert(relative_path(&item.path)?, value);
                    }
                    None if optional => {}
                    None => bail!("{object} has no key {}", item.key),
                }
            }
        }
    }
    Ok(())
}

/// A file path inside a volume; refuses anything that could leave it.
fn relative_path(path: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(path);
    if path.as_os_str().is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!(
            "volume file path {} is not a plain relative path",
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

/// The downward API's value for `file` (metadata fields only, as the runner supports).
fn downward_value(pod: &Pod, file: &DownwardAPIVolumeFile) -> anyhow::Result<String> {
    let Some(field) = &file.field_ref else {
        bail!(
            "downward API file {} uses resourceFieldRef, which the pod runner does not support",
            file.path
        );
    };
    let labels = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    let meta = &pod.metadata;
    Ok(match field.field_path.as_str() {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => labels(meta.labels.as_ref()),
        "metadata.annotations" => labels(meta.annotations.as_ref()),
        other => bail!("downward API field {other} is not supported by the pod runner"),
    })
}
