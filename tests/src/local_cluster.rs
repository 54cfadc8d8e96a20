//! A real kube-apiserver, kube-controller-manager and etcd for tests, started by
//! `scripts/local-cluster` (the same script developers use), one per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Set to an admin kubeconfig to run the tests against a cluster that is already up
/// (for example `scripts/local-cluster up`) instead of starting one per test binary.
pub const KUBECONFIG_ENV: &str = "DILOCO_TEST_KUBECONFIG";

/// A running local control plane.
pub struct LocalCluster {
    kubeconfig: PathBuf,
}

static SHARED: OnceLock<LocalCluster> = OnceLock::new();

impl LocalCluster {
    /// The control plane shared by every test of this test binary. The first caller starts it;
    /// a watchdog started with it takes it down when this process exits, however it exits.
    pub fn shared() -> &'static LocalCluster {
        SHARED.get_or_init(|| match Self::start() {
            Ok(cluster) => cluster,
            Err(error) => panic!("could not start the local control plane: {error:#}"),
        })
    }

    fn start() -> anyhow::Result<Self> {
        if let Some(kubeconfig) = std::env::var_os(KUBECONFIG_ENV) {
            return Ok(Self {
                kubeconfig: kubeconfig.into(),
            });
        }
        let dir = std::env::temp_dir().join(format!("diloco-test-cluster-{}", std::process::id()));
        let status = Command::new(repo_root().join("scripts/local-cluster"))
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .status()
            .context("failed to run scripts/local-cluster")?;
        if !status.success() {
            bail!("scripts/local-cluster up failed ({status}); its output is above");
        }
        Ok(Self {
            kubeconfig: dir.join("admin.kubeconfig"),
        })
    }

    /// Path of the cluster-admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A cluster-admin client. Make one per test: a client belongs to the runtime it was made on.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace of the test's own, named after `prefix`, and returns its name.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("failed to create namespace {name}"))?;
        Ok(name)
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
