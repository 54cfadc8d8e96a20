//! A real kube-apiserver, kube-controller-manager and etcd for tests, started by
//! `scripts/local-cluster` (the same script developers use), one per test process: every
//! cluster test of the `integration` test binary shares it.

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
/// (for example `scripts/local-cluster up`) instead of starting one per test process.
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
        let kubeconfig = match std::env::var_os(KUBECONFIG_ENV) {
            Some(kubeconfig) => kubeconfig.into(),
            None => up("diloco-test-cluster", &[])?.join("admin.kubeconfig"),
        };
        Ok(Self { kubeconfig })
    }

    /// Path of the cluster-admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A cluster-admin client. Make one per test: a client belongs to the runtime it was made on.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Creates a namespace of the test's own, named after `prefix`, and returns its name.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> anyhow::Result<String> {
        let name = unique_name(prefix);
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

/// Runs `scripts/local-cluster up --dir <temp>/<name>-<pid> <extra_args>` for this test process
/// and returns the cluster's directory. `--watch-pid` starts the script's watchdog: it takes
/// the cluster down when this process exits, however it exits (a panic, a kill, a timeout).
pub(crate) fn up(name: &str, extra_args: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let status = Command::new(repo_root().join("scripts/local-cluster"))
        .arg("up")
        .args(extra_args)
        .arg("--dir")
        .arg(&dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .status()
        .context("failed to run scripts/local-cluster")?;
    if !status.success() {
        bail!("scripts/local-cluster up {extra_args:?} failed ({status}); its output is above");
    }
    Ok(dir)
}

/// A client with the credentials of `kubeconfig`.
pub(crate) async fn client_from_kubeconfig(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// `<prefix>-<pid>-<n>`: a name no other test of this process, nor of another process on the
/// same cluster, has taken (for namespaces, which outlive a failed test run).
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
