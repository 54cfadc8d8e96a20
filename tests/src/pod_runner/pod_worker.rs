//! One pod's life on the runner's node: prepare it (IP, volumes, launch plan), run its container
//! with restarts, keep its volumes in step and its status reported, and finish its deletion.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::container::{self, LaunchPlan};
use super::mount_paths::MountPaths;
use super::probe::Readiness;
use super::status::StatusReport;
use super::volumes::PodVolumes;
use super::{RunnerContext, RunningPod, next_pod_ip};

/// How often mounted Secrets and ConfigMaps are re-read.
const VOLUME_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// First wait before restarting a container that exited; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A container that ran this long without exiting gets the initial backoff again.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Cap on `terminationGracePeriodSeconds`, so a deletion never stalls a test for long.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// Attempts at the final delete of a terminated pod.
const DELETE_ATTEMPTS: u32 = 20;

/// Runs the pod whose latest version `updates` carries, until it is deleted or disappears;
/// returns its uid. `updates` closing means the pod is gone from the API server.
pub(super) async fn run(ctx: Arc<RunnerContext>, mut updates: watch::Receiver<Pod>) -> String {
    let pod = updates.borrow_and_update().clone();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ip = next_pod_ip();
    let mut worker = PodWorker {
        api: Api::namespaced(ctx.client.clone(), &ctx.namespace),
        report: StatusReport::new(&pod, ip),
        ctx,
        updates,
        pod,
        name,
        uid: uid.clone(),
    };
    worker.live(ip).await;
    worker.ctx.pods.remove(&uid);
    uid
}

struct PodWorker {
    ctx: Arc<RunnerContext>,
    api: Api<Pod>,
    updates: watch::Receiver<Pod>,
    pod: Pod,
    name: String,
    uid: String,
    report: StatusReport,
}

/// Everything needed to (re)start the container.
struct Setup {
    plan: LaunchPlan,
    mount_paths: MountPaths,
    volumes: PodVolumes,
    readiness: Readiness,
}

/// What ended a run of the container.
enum RunEnd {
    Exited(Option<ExitStatus>),
    /// The pod has a deletionTimestamp; the process is stopped.
    Deleting,
    /// The pod is gone from the API server; the process is killed.
    Gone,
}

/// What happened to the pod while the worker waited.
enum PodEvent {
    Changed,
    Deleting,
    Gone,
}

impl PodWorker {
    async fn live(&mut self, ip: Ipv4Addr) {
        let pod_dir = self.ctx.work_dir.join(&self.name);
        // A pod of the same name before this one (a StatefulSet's) leaves no volume behind.
        let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
        let mut setup = match self.setup(ip, pod_dir.clone()) {
            Ok(setup) => setup,
            Err(error) => {
                let message = format!("{error:#}");
                eprintln!("pod-runner: cannot run pod {}: {message}", self.name);
                let final_phase = self.restart_policy() != "Always";
                self.report.unsupported(&message, final_phase);
                return self.idle_until_deleted().await;
            }
        };
        self.ctx.pods.insert(
            &self.uid,
            RunningPod {
                name: self.name.clone(),
                uid: self.uid.clone(),
                ip,
                pid: None,
                ready: false,
                restart_count: 0,
                log_path: setup.plan.log_path.clone(),
                dir: pod_dir,
                volumes: setup.volumes.dirs(),
            },
        );

        // Volumes first: the kubelet keeps a pod in ContainerCreating until they are all there.
        loop {
            match setup
                .volumes
                .sync(&self.ctx.client, &self.pod, &setup.mount_paths)
                .await
            {
                Ok(()) => break,
                Err(error) => self
                    .report
                    .waiting("ContainerCreating", &format!("{error:#}")),
            }
            self.publish().await;
            tokio::select! {
                () = sleep(VOLUME_SYNC_PERIOD) => {}
                event = self.next_event() => match event {
                    PodEvent::Changed => {}
                    PodEvent::Deleting => return self.confirm_deletion().await,
                    PodEvent::Gone => return,
                },
            }
        }

        let mut backoff = INITIAL_BACKOFF;
        loop {
            let started = Instant::now();
            let exit = match setup.plan.spawn(&self.name) {
                Ok(mut child) => {
                    let pid = child.id().unwrap_or_default();
                    if !self.ctx.pods.process_started(&self.uid, pid) {
                        // The runner is being dropped: nothing new may start.
                        let _ = child.kill().await;
                        return;
                    }
                    self.report.running();
                    setup.readiness.started();
                    let end = self.supervise(&mut child, &mut setup).await;
                    setup.readiness.stopped();
                    match end {
                        RunEnd::Exited(status) => {
                            self.ctx.pods.process_exited(&self.uid);
                            status
                        }
                        RunEnd::Deleting => {
                            container::stop(&mut child, self.grace_period()).await;
                            self.ctx.pods.process_exited(&self.uid);
                            return self.confirm_deletion().await;
                        }
                        RunEnd::Gone => {
                            let _ = child.kill().await;
                            return;
                        }
                    }
                }
                Err(error) => {
                    let message = format!("{error:#}");
                    eprintln!("pod-runner: pod {}: {message}", self.name);
                    self.report.terminated(128, Some(&message));
                    None
                }
            };
            let code = exit.map_or(128, container::exit_code);
            if exit.is_some() {
                self.report.terminated(code, None);
            }
            self.publish().await;

            let restart = match self.restart_policy() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if !restart {
                self.report.finished(code == 0);
                return self.idle_until_deleted().await;
            }
            if started.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = INITIAL_BACKOFF;
            }
            tokio::select! {
                () = sleep(backoff) => {}
                event = self.next_event() => match event {
                    PodEvent::Changed => {}
                    PodEvent::Deleting => return self.confirm_deletion().await,
                    PodEvent::Gone => return,
                },
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.report.restarting();
        }
    }

    /// Everything the runner decides once per pod; an error means it cannot run the pod.
    fn setup(&self, ip: Ipv4Addr, pod_dir: PathBuf) -> anyhow::Result<Setup> {
        let spec = self.pod.spec.as_ref();
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let [container] = containers else {
            bail!(
                "the pod has {} containers; the pod runner runs exactly one",
                containers.len()
            );
        };
        if spec.is_some_and(|s| s.init_containers.as_ref().is_some_and(|c| !c.is_empty())) {
            bail!("the pod runner does not run init containers");
        }
        let claims_dir = self.ctx.work_dir.join("pvc");
        let volumes = PodVolumes::plan(&self.pod, &pod_dir, &claims_dir)?;
        let mount_paths = MountPaths::new(container, &volumes.dirs())?;
        std::fs::create_dir_all(&pod_dir)?;
        let plan = LaunchPlan::new(
            &self.pod,
            container,
            ip,
            &self.ctx.coordinator_binary,
            &mount_paths,
            &pod_dir,
        )?;
        Ok(Setup {
            plan,
            mount_paths,
            volumes,
            readiness: Readiness::new(container, ip)?,
        })
    }

    /// Watches a running process: probes, volume syncs and status reports until it exits or
    /// the pod is deleted.
    async fn supervise(&mut self, child: &mut Child, setup: &mut Setup) -> RunEnd {
        let mut next_sync = Instant::now() + VOLUME_SYNC_PERIOD;
        // A failing sync is logged when its error changes, not every second.
        let mut sync_error = String::new();
        loop {
            self.report.set_ready(setup.readiness.is_ready());
            self.publish().await;
            let wake = setup.readiness.next_probe().min(next_sync);
            tokio::select! {
                status = child.wait() => return RunEnd::Exited(status.ok()),
                event = self.next_event() => match event {
                    PodEvent::Changed => {}
                    PodEvent::Deleting => return RunEnd::Deleting,
                    PodEvent::Gone => return RunEnd::Gone,
                },
                () = sleep_until(wake) => {
                    if Instant::now() >= next_sync {
                        let synced = setup
                            .volumes
                            .sync(&self.ctx.client, &self.pod, &setup.mount_paths)
                            .await;
                        let error = synced.err().map(|e| format!("{e:#}")).unwrap_or_default();
                        if !error.is_empty() && error != sync_error {
                            eprintln!("pod-runner: pod {}: {error} (keeping the files)", self.name);
                        }
                        sync_error = error;
                        next_sync = Instant::now() + VOLUME_SYNC_PERIOD;
                    }
                    setup.readiness.poll(&self.ctx.probe_clients).await;
                }
            }
        }
    }

    /// The next change of the pod on the API server.
    async fn next_event(&mut self) -> PodEvent {
        if self.updates.changed().await.is_err() {
            return PodEvent::Gone;
        }
        self.pod = self.updates.borrow_and_update().clone();
        if self.pod.metadata.deletion_timestamp.is_some() {
            PodEvent::Deleting
        } else {
            PodEvent::Changed
        }
    }

    /// For a pod that runs nothing (failed or finished): report, then wait for its deletion.
    async fn idle_until_deleted(&mut self) {
        self.publish().await;
        if self.pod.metadata.deletion_timestamp.is_some() {
            return self.confirm_deletion().await;
        }
        loop {
            match self.next_event().await {
                PodEvent::Changed => {}
                PodEvent::Deleting => return self.confirm_deletion().await,
                PodEvent::Gone => return,
            }
        }
    }

    /// The kubelet's last word on a deleted pod: delete it with grace period 0, so the API
    /// server removes it instead of leaving it Terminating.
    async fn confirm_deletion(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for _ in 0..DELETE_ATTEMPTS {
            match self.api.delete(&self.name, &params).await {
                Ok(_) => return,
                // Already gone, or a new pod of the same name: either way this one is done.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    return;
                }
                Err(error) => {
                    eprintln!("pod-runner: failed to delete pod {}: {error}", self.name);
                    sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn publish(&mut self) {
        self.report.publish(&self.api, &self.name).await;
        let (ready, restart_count) = (self.report.is_ready(), self.report.restart_count());
        self.ctx.pods.update(&self.uid, |pod| {
            pod.ready = ready;
            pod.restart_count = restart_count;
        });
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// How long a deleted pod's process gets between SIGTERM and SIGKILL.
    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
    }
}
