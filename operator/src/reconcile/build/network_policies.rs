//! NetworkPolicies: the coordinator pods accept connections only on the control, bulk and
//! metrics ports and only from the configured peers, and may reach the cluster DNS pods but
//! open no other outbound connection. One policy per plane, so switching a plane off removes
//! its policy; the metrics port has a policy only when `metricsFrom` names someone (no policy
//! admits it, so nobody — the kubelet's probes come from the node).
//!
//! Default peers: pods of the namespace labelled `diloco.dev/server: <server>` on the control
//! and bulk ports, plus the operator's own pods (its namespace *and* its pod labels, not the
//! whole namespace) on the control port for its status poller, and, with a console
//! configured, the console's pods (likewise its namespace and pod labels) for its proxy.
//! `controlFrom` replaces all of them.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use diloco_crds::SERVER_LABEL;

use crate::names::{BULK_PORT_NAME, CONTROL_PORT_NAME, Component, METRICS_PORT_NAME};
use crate::reconcile::build::BuildContext;

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// DNS on the cluster DNS pods, the one thing the coordinator may reach.
const DNS_PORT: i32 = 53;

/// The policies for the planes that are on, plus the egress policy.
pub fn build_network_policies(ctx: &BuildContext<'_>) -> Vec<NetworkPolicy> {
    let spec = &ctx.server.spec;
    let np = &spec.network_policy;
    let workers = NetworkPolicyPeer {
        pod_selector: Some(selector(SERVER_LABEL, ctx.names.server())),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(selector(
            NAMESPACE_NAME_LABEL,
            &ctx.settings.operator_namespace,
        )),
        pod_selector: Some(labels_selector(&ctx.settings.operator_pod_labels)),
        ..NetworkPolicyPeer::default()
    };
    let mut control_peers = vec![workers.clone(), operator];
    if let Some(console) = &ctx.settings.console {
        control_peers.push(NetworkPolicyPeer {
            namespace_selector: Some(selector(NAMESPACE_NAME_LABEL, &console.namespace)),
            pod_selector: Some(labels_selector(&console.pod_labels)),
            ..NetworkPolicyPeer::default()
        });
    }
    let mut policies = vec![ingress_policy(
        ctx,
        Component::Control,
        CONTROL_PORT_NAME,
        np.control_from.clone().unwrap_or(control_peers),
    )];
    if spec.bulk.enabled {
        policies.push(ingress_policy(
            ctx,
            Component::Bulk,
            BULK_PORT_NAME,
            np.bulk_from
                .clone()
                .unwrap_or_else(|| vec![workers.clone()]),
        ));
    }
    // An empty list is refused by the CRD and by validate: as `from` it would admit everyone.
    if let Some(peers) = np.metrics_from.clone().filter(|p| !p.is_empty()) {
        policies.push(ingress_policy(
            ctx,
            Component::Metrics,
            METRICS_PORT_NAME,
            peers,
        ));
    }
    policies.push(egress_policy(ctx));
    policies
}

fn selector(key: &str, value: &str) -> LabelSelector {
    labels_selector(&BTreeMap::from([(key.to_string(), value.to_string())]))
}

fn labels_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

fn coordinator_pods(ctx: &BuildContext<'_>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(ctx.names.selector_labels(Component::Coordinator)),
        ..LabelSelector::default()
    }
}

fn ingress_policy(
    ctx: &BuildContext<'_>,
    component: Component,
    port_name: &str,
    from: Vec<NetworkPolicyPeer>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ctx.metadata(ctx.names.network_policy(component), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(coordinator_pods(ctx)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String(port_name.to_string())),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn egress_policy(ctx: &BuildContext<'_>) -> NetworkPolicy {
    let dns = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(DNS_PORT)),
        protocol: Some(protocol.to_string()),
        ..NetworkPolicyPort::default()
    };
    NetworkPolicy {
        metadata: ctx.metadata(
            ctx.names.network_policy(Component::Egress),
            Component::Egress,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(coordinator_pods(ctx)),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(selector(
                        NAMESPACE_NAME_LABEL,
                        &ctx.settings.dns_namespace,
                    )),
                    pod_selector: Some(labels_selector(&ctx.settings.dns_pod_labels)),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![dns("UDP"), dns("TCP")]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}
