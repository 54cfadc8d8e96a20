//! The status a pod's runner reports to the API server (phase, IPs, conditions, the container's
//! state), patched onto the `status` subresource only when it changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::rfc3339;

/// The pod conditions a kubelet maintains, in the order it reports them.
const CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

/// What the runner tells the API server about one pod.
pub(super) struct StatusReport {
    ip: Ipv4Addr,
    start_time: Timestamp,
    container: String,
    image: String,
    phase: &'static str,
    /// Pod-level reason and message, for a pod the runner cannot run.
    failure: Option<(String, String)>,
    container_state: Value,
    last_terminated: Option<Value>,
    ready: bool,
    started: bool,
    restart_count: u32,
    /// Condition type → (status, when it last changed).
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
    /// The status last accepted by the API server.
    published: Option<Value>,
}

impl StatusReport {
    /// A pod that has just been given `ip`: Pending, its container being created.
    pub(super) fn new(pod: &Pod, ip: Ipv4Addr) -> Self {
        let first = pod.spec.as_ref().and_then(|s| s.containers.first());
        Self {
            ip,
            start_time: Timestamp::now(),
            container: first.map(|c| c.name.clone()).unwrap_or_default(),
            image: first.and_then(|c| c.image.clone()).unwrap_or_default(),
            phase: "Pending",
            failure: None,
            container_state: json!({"waiting": {"reason": "ContainerCreating"}}),
            last_terminated: None,
            ready: false,
            started: false,
            restart_count: 0,
            transitions: BTreeMap::new(),
            published: None,
        }
    }

    /// The container cannot be created yet (say, a Secret it mounts is missing).
    pub(super) fn waiting(&mut self, reason: &str, message: &str) {
        self.container_state = json!({"waiting": {"reason": reason, "message": message}});
    }

    /// The runner cannot run this pod at all; the pod's `reason` and `message` say why. With
    /// `final_phase` the pod is Failed; otherwise it stays Pending, as the kubelet leaves a pod
    /// whose container cannot be created: a Failed pod of a ReplicaSet is replaced at once,
    /// and its replacement fails too, pod after pod.
    pub(super) fn unsupported(&mut self, message: &str, final_phase: bool) {
        if final_phase {
            self.phase = "Failed";
        }
        self.failure = Some(("UnsupportedByPodRunner".into(), message.into()));
        self.waiting("CreateContainerConfigError", message);
    }

    /// The container's process started now.
    pub(super) fn running(&mut self) {
        self.phase = "Running";
        self.started = true;
        self.ready = false;
        self.container_state = json!({"running": {"startedAt": rfc3339(Timestamp::now())}});
    }

    pub(super) fn set_ready(&mut self, ready: bool) {
        self.ready = ready && self.started;
    }

    /// The process ended (or never started) with `exit_code`; `message` says why, if known.
    pub(super) fn terminated(&mut self, exit_code: i32, message: Option<&str>) {
        let started_at = self.container_state["running"]["startedAt"].clone();
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let mut terminated = json!({
            "exitCode": exit_code,
            "reason": reason,
            "finishedAt": rfc3339(Timestamp::now()),
        });
        if !started_at.is_null() {
            terminated["startedAt"] = started_at;
        }
        if let Some(message) = message {
            terminated["message"] = json!(message);
        }
        self.ready = false;
        self.started = false;
        self.container_state = json!({"terminated": terminated});
        self.last_terminated = Some(json!({"terminated": terminated}));
    }

    /// The container is about to be started again.
    pub(super) fn restarting(&mut self) {
        self.restart_count += 1;
    }

    /// The container will not be restarted (restartPolicy): the pod's final phase.
    pub(super) fn finished(&mut self, succeeded: bool) {
        self.phase = if succeeded { "Succeeded" } else { "Failed" };
    }

    pub(super) fn restart_count(&self) -> u32 {
        self.restart_count
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Patches the status onto the pod if it differs from what was last published; an API
    /// error is logged and retried on the next call.
    pub(super) async fn publish(&mut self, api: &Api<Pod>, name: &str) {
        let status = self.current();
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({"status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.published = Some(status),
            Err(error) => {
                eprintln!("pod-runner: failed to report the status of pod {name}: {error}")
            }
        }
    }

    /// The status as of now; records when a condition changed.
    fn current(&mut self) -> Value {
        let now = Timestamp::now();
        let mut conditions = Vec::new();
        for kind in CONDITIONS {
            let status = match kind {
                "ContainersReady" | "Ready" => self.ready,
                _ => true,
            };
            let (_, since) = *self
                .transitions
                .entry(kind)
                .and_modify(|(old, since)| {
                    if *old != status {
                        *old = status;
                        *since = now;
                    }
                })
                .or_insert((status, now));
            conditions.push(json!({
                "type": kind,
                "status": if status { "True" } else { "False" },
                "lastTransitionTime": rfc3339(since),
            }));
        }
        let container_status = json!({
            "name": self.container,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.container_state,
            "lastState": self.last_terminated.clone().unwrap_or_else(|| json!({})),
        });
        let (reason, message) = match &self.failure {
            Some((reason, message)) => (json!(reason), json!(message)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "phase": self.phase,
            "reason": reason,
            "message": message,
            "hostIP": Ipv4Addr::LOCALHOST.to_string(),
            "hostIPs": [{"ip": Ipv4Addr::LOCALHOST.to_string()}],
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "startTime": rfc3339(self.start_time),
            "conditions": conditions,
            "containerStatuses": [container_status],
        })
    }
}
