//! A real node for end-to-end tests: `scripts/local-cluster up --node` (control plane plus
//! containerd, kubelet, kube-proxy, CoreDNS, kube-router and local-path-provisioner; see
//! docs/local-node.md) started once per test binary, with the project's images imported into
//! the node's containerd, and the tools a user would reach for: kubectl, helm, and a TCP
//! forward from the host's loopback into the node's network namespace.
//!
//! Set `DILOCO_TEST_NODE_DIR` to the directory of a cluster already started with
//! `scripts/local-cluster up --node --dir DIR` to reuse it (the images are imported again,
//! which takes seconds when they are already there).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::local_cluster::{self, repo_root};

/// Set to the directory of a running `local-cluster up --node` cluster to reuse it.
pub const NODE_DIR_ENV: &str = "DILOCO_TEST_NODE_DIR";
/// The images every node test needs: the operator, and the CPU-only coordinator and example
/// worker (`scripts/images`: the same Dockerfile targets without the CUDA libraries, which
/// keeps the import into each fresh node to seconds).
pub const IMAGES: [&str; 3] = ["operator", "coordinator-cpu", "worker-cpu"];
/// How long one `kubectl exec` in a test pod may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// Label that makes the API server enforce a PodSecurity level in a namespace.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// An image imported into the node.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// Its reference (what a pod's `image` names).
    pub reference: String,
    /// The docker-archive it was imported from.
    pub archive: PathBuf,
}

/// A running local cluster with a real node and the project's images.
pub struct RealNode {
    dir: PathBuf,
    kubeconfig: PathBuf,
    path: OsString,
    images: BTreeMap<String, LoadedImage>,
    helper_image: String,
}

static SHARED: OnceLock<RealNode> = OnceLock::new();

impl RealNode {
    /// The node shared by every test of this test binary. The first caller starts it and
    /// loads the images; a watchdog takes it down when this process exits.
    pub fn shared() -> &'static RealNode {
        SHARED.get_or_init(|| match Self::start() {
            Ok(node) => node,
            Err(error) => panic!("could not start the real node: {error:#}"),
        })
    }

    fn start() -> anyhow::Result<Self> {
        let script = repo_root().join("scripts/local-cluster");
        let dir = match std::env::var_os(NODE_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let started = Instant::now();
                let dir = local_cluster::up("diloco-test-node", &["--node"])?;
                eprintln!("real node up in {:.0?}", started.elapsed());
                dir
            }
        };
        let exports = output(Command::new(&script).args(["env", "--dir"]).arg(&dir))?;
        let export = |name: &str| {
            exports.lines().find_map(|line| {
                line.strip_prefix(&format!("export {name}="))
                    .map(str::to_string)
            })
        };
        let kubeconfig = export("KUBECONFIG").context("local-cluster env printed no KUBECONFIG")?;
        export("CONTAINERD_ADDRESS")
            .with_context(|| format!("the cluster in {} has no node", dir.display()))?;
        // `export PATH=<kube tools>:$PATH`: kubectl and helm of the project's pinned versions.
        let tools = export("PATH")
            .and_then(|p| p.split(':').next().map(str::to_string))
            .context("local-cluster env printed no PATH")?;
        let mut path = OsString::from(tools);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());

        // The binaries first, built the way every test builds them (cargo's environment of
        // this test process would make a nested `cargo build` rebuild half the tree), then
        // the images from exactly those binaries.
        let binary = crate::workspace_binary("diloco-operator");
        let bin_dir = binary.parent().context("the binary has a directory")?;
        let started = Instant::now();
        let loaded = output(
            Command::new(repo_root().join("scripts/images"))
                .args(["load", "--dir"])
                .arg(&dir)
                .args(IMAGES)
                .env("IMAGE_BIN_DIR", bin_dir)
                .stderr(Stdio::inherit()),
        )?;
        eprintln!("images built and loaded in {:.0?}", started.elapsed());
        let images = loaded
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (name, reference, archive) = (fields.next()?, fields.next()?, fields.next()?);
                let image = LoadedImage {
                    reference: reference.to_string(),
                    archive: archive.into(),
                };
                Some((name.to_string(), image))
            })
            .collect::<BTreeMap<_, _>>();
        for name in IMAGES {
            if !images.contains_key(name) {
                bail!("scripts/images load did not report {name}: {loaded}");
            }
        }
        let node_images =
            output(Command::new(repo_root().join("scripts/images")).arg("node-archives"))?;
        let helper_image = node_images
            .lines()
            .find_map(|line| line.strip_prefix("helper "))
            .and_then(|rest| rest.split_whitespace().next())
            .context("scripts/images node-archives printed no helper image")?
            .to_string();
        let node = Self {
            dir,
            kubeconfig: kubeconfig.into(),
            path,
            images,
            helper_image,
        };
        // The CRD once for all tests; every test installs its own operator with the chart.
        node.run(
            node.kubectl()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(repo_root().join("crds/dilocoserver.yaml")),
        )?;
        node.run(node.kubectl().args([
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "30s",
            "crd/dilocoservers.diloco.dev",
        ]))?;
        Ok(node)
    }

    /// Waits for this test's turn on the node and holds it until the guard drops. The tests
    /// of a binary run on threads of their own; on a two-core machine, several operators,
    /// coordinators and worker pods starting at once would only make each other miss their
    /// timeouts, so the node serves one test at a time.
    pub async fn one_test_at_a_time(&self) -> tokio::sync::MutexGuard<'static, ()> {
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        TURN.lock().await
    }

    /// The cluster's directory (`DIR` of `local-cluster up --dir DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the cluster-admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The image `name` of [`IMAGES`].
    pub fn image(&self, name: &str) -> &LoadedImage {
        self.images
            .get(name)
            .unwrap_or_else(|| panic!("image {name} is not one of {IMAGES:?}"))
    }

    /// The node's busybox image (a shell and `nc`, for client pods).
    pub fn helper_image(&self) -> &str {
        &self.helper_image
    }

    /// A cluster-admin client. Make one per test: a client belongs to the runtime it was made on.
    pub async fn client(&self) -> anyhow::Result<Client> {
        local_cluster::client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Creates a namespace of the test's own, named after `prefix`, with `labels`. It is
    /// deleted when the returned guard drops, so a node that serves many tests (or is reused
    /// through `DILOCO_TEST_NODE_DIR`) does not fill up with their pods.
    pub async fn namespace(
        &self,
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<TestNamespace> {
        let name = local_cluster::unique_name(prefix);
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("failed to create namespace {name}"))?;
        Ok(TestNamespace {
            name,
            kubectl: self.kubectl(),
        })
    }

    /// A namespace of the test's own (as [`RealNode::namespace`]) whose pods the API server
    /// admits only when they meet PodSecurity `restricted`: where the operator's pods must run.
    pub async fn restricted_namespace(
        &self,
        client: &Client,
        prefix: &str,
    ) -> anyhow::Result<TestNamespace> {
        self.namespace(client, prefix, &[(POD_SECURITY_ENFORCE, "restricted")])
            .await
    }

    /// `kubectl` with the cluster-admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.tool("kubectl")
    }

    /// `helm` with the cluster-admin kubeconfig.
    pub fn helm(&self) -> Command {
        self.tool("helm")
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(name);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .current_dir(repo_root());
        command
    }

    /// Runs `command`, returning its stdout; an error carries its stderr.
    pub fn run(&self, command: &mut Command) -> anyhow::Result<String> {
        output(command)
    }

    /// Installs the chart as release `release` in `namespace`, watching that namespace, with
    /// the operator as `replicas` pods from its image; waits until they are Ready.
    pub fn install_operator(&self, namespace: &str, release: &str, replicas: u32) {
        let started = Instant::now();
        let result = self.run(self.helm().args([
            "install",
            release,
            "charts/diloco-operator",
            "--namespace",
            namespace,
            "--set",
            "crds.install=false",
            "--set",
            &format!("replicaCount={replicas}"),
            "--set",
            "logLevel=info\\,kube=warn",
            "--wait",
            "--timeout",
            "120s",
        ]));
        if let Err(error) = result {
            let pods = self
                .run(
                    self.kubectl()
                        .args(["get", "pods", "-o", "wide", "-n", namespace]),
                )
                .unwrap_or_default();
            panic!("helm install of the operator failed: {error:#}\n{pods}");
        }
        eprintln!(
            "operator ({replicas} replicas) installed in {namespace} in {:.0?}",
            started.elapsed()
        );
    }

    /// Runs `script` with busybox's `sh` in container `container` of pod `pod` (kubectl exec:
    /// apiserver → kubelet → containerd). Returns whether it exited 0, and its output.
    pub fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        script: &str,
    ) -> (bool, String) {
        // `timeout`: an exec whose stream the apiserver or kubelet never closes must fail the
        // test, not hang it (kubectl's --request-timeout does not cover a streaming exec).
        let result = self
            .tool("timeout")
            .args([&EXEC_TIMEOUT.as_secs().to_string(), "kubectl"])
            .args(["exec", "-n", namespace, pod, "-c", container, "--"])
            .args(["/bin/busybox", "sh", "-c", script])
            .output()
            .expect("kubectl runs");
        let mut text = String::from_utf8_lossy(&result.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&result.stderr));
        (result.status.success(), text)
    }

    /// Whether a TCP connection from `pod`'s `container` to `host:port` is accepted within
    /// 3 s (busybox `nc`; a NetworkPolicy refusal is a reject, seen as "connection refused").
    pub fn connects(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        host: &str,
        port: u16,
    ) -> bool {
        self.exec(
            namespace,
            pod,
            container,
            &format!("busybox nc -w 3 {host} {port} </dev/null"),
        )
        .0
    }

    /// Forwards `ports` of a fresh loopback address of the host to `target` (a Service's
    /// ClusterIP, a pod IP) in the node's network namespace, through `scripts/netns-forward`.
    /// Each forward has an address of its own, so the same port numbers (a worker bundle's
    /// URLs) can be forwarded for several servers at once.
    pub fn forward(&self, targets: &[(&str, u16)]) -> HostForward {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        for _ in 0..5 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let address = std::net::Ipv4Addr::new(
                127,
                100 + (std::process::id() % 100) as u8,
                (n / 200) as u8,
                (n % 200 + 2) as u8,
            );
            let mut command = Command::new(repo_root().join("scripts/netns-forward"));
            for (target, port) in targets {
                command
                    .arg("host")
                    .arg(format!("{address}:{port}"))
                    .arg(self.dir.join("node/netns"))
                    .arg(format!("{target}:{port}"));
            }
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("scripts/netns-forward starts");
            let listening =
                crate::processes::announced_line(&mut child, "netns-forward: listening");
            if listening.recv_timeout(Duration::from_secs(10)).is_ok() {
                return HostForward { child, address };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("scripts/netns-forward did not start listening");
    }
}

/// A namespace of one test; deleted (without waiting) on drop. Derefs to its name.
pub struct TestNamespace {
    name: String,
    kubectl: Command,
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self
            .kubectl
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `scripts/netns-forward`; stopped on drop.
pub struct HostForward {
    child: Child,
    /// The host loopback address it listens on.
    pub address: std::net::Ipv4Addr,
}

impl Drop for HostForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let result = command
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !result.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}
