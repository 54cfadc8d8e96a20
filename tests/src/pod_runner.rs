//! A stand-in kubelet for end-to-end tests. The local control plane has no container runtime
//! and no scheduler; a [`PodRunner`] registers a Node of its own, binds the namespace's pods to
//! it, and runs each pod's container as a local process — the workspace's
//! `diloco-coordinator` for the image command `diloco-coordinator` — on a loopback IP of the
//! pod's own, with its volumes materialised in a work directory and its status reported like a
//! kubelet's. Every process it starts dies with it.

mod container;
mod mount_paths;
mod node;
mod pod_worker;
mod probe;
mod status;
mod volume_sources;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use node::RunnerNode;
use probe::ProbeClients;

/// The field manager of everything the runner writes with server-side apply.
const FIELD_MANAGER: &str = "diloco-pod-runner";
/// How often the runner lists the namespace's pods.
const POLL_PERIOD: Duration = Duration::from_millis(200);
/// How often the node's Lease and Ready condition are renewed.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);

/// A pod the runner has set up: where it lives and how its container is doing.
#[derive(Clone, Debug)]
pub struct RunningPod {
    /// The pod's name.
    pub name: String,
    /// The pod's uid (a replacement of the same name has another).
    pub uid: String,
    /// The pod's own loopback IP (its `status.podIP`); its listeners bind there.
    pub ip: Ipv4Addr,
    /// The container's process while one runs.
    pub pid: Option<u32>,
    /// Whether the runner reports the container Ready.
    pub ready: bool,
    /// How often the container was restarted (its `restartCount`).
    pub restart_count: u32,
    /// The container's stdout and stderr, across restarts.
    pub log_path: PathBuf,
    /// The pod's directory (`<work_dir>/<pod name>`).
    pub dir: PathBuf,
    volumes: BTreeMap<String, PathBuf>,
}

impl RunningPod {
    /// The local directory the volume `name` is materialised in.
    pub fn volume_dir(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(PathBuf::as_path)
    }

    /// The container's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Plays the kubelet for the pods of one namespace; dropping it kills every process it started.
pub struct PodRunner {
    node_name: String,
    pods: Arc<PodTable>,
    supervisor: JoinHandle<()>,
}

impl PodRunner {
    /// Registers the node `pod-runner-<namespace>` and starts running the namespace's pods,
    /// with their files under `work_dir`. Builds the workspace binaries first if needed.
    pub async fn start(client: Client, namespace: &str, work_dir: &Path) -> anyhow::Result<Self> {
        let coordinator_binary =
            tokio::task::spawn_blocking(|| crate::workspace_binary(container::COORDINATOR_COMMAND))
                .await
                .context("failed to build the workspace binaries")?;
        Self::start_with(client, namespace, work_dir, coordinator_binary).await
    }

    /// Like [`PodRunner::start`], running `coordinator_binary` for the image command
    /// `diloco-coordinator` (for callers outside `cargo test`, such as `diloco-pod-runner`).
    pub async fn start_with(
        client: Client,
        namespace: &str,
        work_dir: &Path,
        coordinator_binary: PathBuf,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("failed to create {}", work_dir.display()))?;
        let node = RunnerNode::register(client.clone(), &format!("pod-runner-{namespace}")).await?;
        let pods = Arc::new(PodTable::default());
        let context = Arc::new(RunnerContext {
            client,
            namespace: namespace.to_string(),
            node_name: node.name().to_string(),
            work_dir: work_dir.to_path_buf(),
            coordinator_binary,
            probe_clients: ProbeClients::new()?,
            pods: pods.clone(),
        });
        Ok(Self {
            node_name: node.name().to_string(),
            pods,
            supervisor: tokio::spawn(supervise(context, node)),
        })
    }

    /// The name of the runner's Node.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The pods the runner runs now.
    pub fn pods(&self) -> Vec<RunningPod> {
        self.pods.lock().pods.values().cloned().collect()
    }

    /// Waits until one of the runner's pods satisfies `condition` and returns it; the error
    /// names `what` and shows every pod's state and log.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&RunningPod) -> bool,
    ) -> anyhow::Result<RunningPod> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pod) = self.pods().into_iter().find(|p| condition(p)) {
                return Ok(pod);
            }
            if Instant::now() >= deadline {
                let pods = self.pods();
                let states: String = pods
                    .iter()
                    .map(|p| format!("\n{p:?}\n--- log of {} ---\n{}", p.name, p.log()))
                    .collect();
                bail!("no pod became {what} within {timeout:?}; pods:{states}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a pod whose container is Ready.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<RunningPod> {
        self.wait_for("ready", timeout, |p| p.ready).await
    }

    /// SIGKILLs the container of pod `name`, as a crash would; the runner restarts it.
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .pods()
            .into_iter()
            .find(|p| p.name == name)
            .with_context(|| format!("the runner runs no pod {name}"))?
            .pid
            .with_context(|| format!("pod {name} has no running process"))?;
        container::signal(pid, libc::SIGKILL);
        Ok(())
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        for pid in self.pods.stop_all() {
            container::signal(pid, libc::SIGKILL);
        }
        // Dropping the supervisor drops its pod workers, whose children are kill-on-drop.
        self.supervisor.abort();
    }
}

/// What the supervisor and the pod workers share.
struct RunnerContext {
    client: Client,
    namespace: String,
    node_name: String,
    work_dir: PathBuf,
    coordinator_binary: PathBuf,
    probe_clients: ProbeClients,
    pods: Arc<PodTable>,
}

/// The runner's pods by uid, and whether the runner is stopping (then no process may start).
#[derive(Default)]
struct PodTable {
    inner: Mutex<PodTableInner>,
}

#[derive(Default)]
struct PodTableInner {
    pods: BTreeMap<String, RunningPod>,
    stopping: bool,
}

impl PodTable {
    fn lock(&self) -> MutexGuard<'_, PodTableInner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, uid: &str, pod: RunningPod) {
        self.lock().pods.insert(uid.to_string(), pod);
    }

    fn update(&self, uid: &str, change: impl FnOnce(&mut RunningPod)) {
        if let Some(pod) = self.lock().pods.get_mut(uid) {
            change(pod);
        }
    }

    fn remove(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    /// Records a started process; false if the runner is stopping (the caller must kill it).
    fn process_started(&self, uid: &str, pid: u32) -> bool {
        let mut inner = self.lock();
        if inner.stopping {
            return false;
        }
        if let Some(pod) = inner.pods.get_mut(uid) {
            pod.pid = Some(pid);
        }
        true
    }

    fn process_exited(&self, uid: &str) {
        self.update(uid, |pod| {
            pod.pid = None;
            pod.ready = false;
        });
    }

    /// Marks the runner stopping and returns the processes still running.
    fn stop_all(&self) -> Vec<u32> {
        let mut inner = self.lock();
        inner.stopping = true;
        inner.pods.values().filter_map(|p| p.pid).collect()
    }
}

/// The runner's loop: keeps the node alive, binds unbound pods to it, and gives every pod bound
/// to it a worker, forwarding each new version of the pod to that worker.
async fn supervise(context: Arc<RunnerContext>, node: RunnerNode) {
    let api = Api::<Pod>::namespaced(context.client.clone(), &context.namespace);
    let mut workers: BTreeMap<String, watch::Sender<Pod>> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut tasks = JoinSet::new();
    let mut last_heartbeat = Instant::now();
    let mut tick = tokio::time::interval(POLL_PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if last_heartbeat.elapsed() >= HEARTBEAT_PERIOD {
            match node.heartbeat().await {
                Ok(()) => last_heartbeat = Instant::now(),
                Err(error) => eprintln!("pod-runner: {error:#}"),
            }
        }
        while let Some(done) = tasks.try_join_next() {
            match done {
                Ok(uid) => {
                    workers.remove(&uid);
                    finished.insert(uid);
                }
                Err(error) => eprintln!("pod-runner: a pod worker failed: {error}"),
            }
        }
        let pods = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                eprintln!("pod-runner: failed to list pods: {error}");
                continue;
            }
        };
        let mut present = BTreeSet::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            match bound_to.as_deref() {
                None | Some("") => {
                    if pod.metadata.deletion_timestamp.is_none() {
                        bind(&context, &pod).await;
                    }
                }
                Some(node_name) if node_name == context.node_name => {
                    present.insert(uid.clone());
                    if finished.contains(&uid) {
                        continue;
                    }
                    match workers.get(&uid) {
                        Some(sender) => {
                            sender.send_if_modified(|known| {
                                let newer = known.metadata.resource_version
                                    != pod.metadata.resource_version;
                                if newer {
                                    *known = pod;
                                }
                                newer
                            });
                        }
                        None => {
                            let (sender, receiver) = watch::channel(pod);
                            tasks.spawn(pod_worker::run(context.clone(), receiver));
                            workers.insert(uid, sender);
                        }
                    }
                }
                Some(_) => {}
            }
        }
        // Dropping a worker's sender tells it its pod is gone.
        workers.retain(|uid, _| present.contains(uid));
        finished.retain(|uid| present.contains(uid));
    }
}

/// Binds `pod` to the runner's node, as the scheduler would.
async fn bind(context: &RunnerContext, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(context.namespace.clone()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(context.node_name.clone()),
            ..ObjectReference::default()
        },
    };
    let api = Api::<Pod>::namespaced(context.client.clone(), &context.namespace);
    let result: Result<serde_json::Value, _> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    if let Err(error) = result {
        eprintln!("pod-runner: failed to bind pod {name}: {error}");
    }
}

/// A loopback IP no other pod of this test process has: `127.<from the pid>.<n>.<n>`, never in
/// `127.0.0.0/16` (where the control plane listens), so pods can all use the same ports.
fn next_pod_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (254 * 254);
    let second = 2 + std::process::id() % 250;
    let [_, _, _, second] = second.to_be_bytes();
    let [_, _, _, third] = (n / 254).to_be_bytes();
    let [_, _, _, fourth] = (1 + n % 254).to_be_bytes();
    Ipv4Addr::new(127, second, third, fourth)
}

/// A timestamp as the API server writes them (RFC 3339, whole seconds, UTC).
fn rfc3339(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
