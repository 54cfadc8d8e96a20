//! The runner's Node: registered Ready on loopback with GPUs to offer, and kept alive the way a
//! kubelet does (a Lease in `kube-node-lease` plus the Ready condition's heartbeat), or the node
//! lifecycle controller would mark it NotReady and its pods not Ready.

use anyhow::Context;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{FIELD_MANAGER, rfc3339};

/// The namespace of node heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long the Lease is valid without renewal (the kubelet's default).
const LEASE_DURATION_SECONDS: i32 = 40;

/// A Node the runner plays the kubelet of.
pub(super) struct RunnerNode {
    client: Client,
    name: String,
    ready_since: Timestamp,
}

impl RunnerNode {
    /// Creates the Node (or takes over an existing one of that name) and sends a first heartbeat.
    pub(super) async fn register(client: Client, name: &str) -> anyhow::Result<Self> {
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "diloco.dev/pod-runner": "true",
                },
            },
        }))?;
        match Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(error).with_context(|| format!("failed to create node {name}"));
            }
        }
        let node = Self {
            client,
            name: name.to_string(),
            ready_since: Timestamp::now(),
        };
        node.heartbeat().await?;
        Ok(node)
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Renews the Lease and reports the node Ready, with its addresses and capacity.
    pub(super) async fn heartbeat(&self) -> anyhow::Result<()> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        Api::<Lease>::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE)
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .with_context(|| format!("failed to renew the lease of node {}", self.name))?;

        let resources = json!({
            "cpu": "16",
            "memory": "64Gi",
            "pods": "110",
            "nvidia.com/gpu": "8",
        });
        let status = json!({"status": {
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the diloco-tests pod runner is posting ready status",
                "lastHeartbeatTime": rfc3339(Timestamp::now()),
                "lastTransitionTime": rfc3339(self.ready_since),
            }],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "capacity": resources,
            "allocatable": resources,
        }});
        Api::<Node>::all(self.client.clone())
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("failed to report node {} Ready", self.name))?;
        Ok(())
    }
}
