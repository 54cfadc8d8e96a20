//! The coordinator Deployment, its ServiceAccount and the audit/checkpoint volume claim.
//!
//! One replica with `Recreate` (two coordinators would split the workers), the config, token
//! and certificate as mounted files (never arguments or environment values), probes on
//! `/health`, and a security context that passes the PodSecurity `restricted` level.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccount,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use diloco_crds::DEFAULT_AUDIT_STORAGE_SIZE;

use crate::names::{
    BULK_PORT_NAME, CONFIG_HASH_ANNOTATION, CONTAINER_NAME, CONTROL_PORT_NAME, Component,
    METRICS_PORT_NAME, paths,
};
use crate::pki::hex;
use crate::reconcile::build::clients::client_list;
use crate::reconcile::build::{BuildContext, Credentials, TlsSource, TokenSource};

/// The coordinator binary inside the image.
pub const COORDINATOR_COMMAND: &str = "diloco-coordinator";
/// The unprivileged user the coordinator runs as (the distroless `nonroot` user).
const RUN_AS_USER: i64 = 65532;
/// Time for the final checkpoint on SIGTERM.
const TERMINATION_GRACE_SECONDS: i64 = 120;
/// Mounted credentials readable by the pod's group only.
const SECRET_FILE_MODE: i32 = 0o440;
/// Requests and limit when the spec sets no `resources`: enough for small models and the
/// demo; real models size it from ~12 bytes per parameter (the CRD field says so). A memory
/// limit keeps a runaway coordinator from taking the node down with it.
const DEFAULT_CPU_REQUEST: &str = "250m";
const DEFAULT_MEMORY_REQUEST: &str = "512Mi";
const DEFAULT_MEMORY_LIMIT: &str = "4Gi";
/// Scratch space on the node's disk; a full `/tmp` evicts the pod instead of the node.
const TMP_SIZE_LIMIT: &str = "1Gi";

/// The coordinator Deployment.
pub fn build_deployment(
    ctx: &BuildContext<'_>,
    credentials: &Credentials,
    config: &ConfigMap,
) -> Deployment {
    let spec = &ctx.server.spec;
    let selector = ctx.names.selector_labels(Component::Coordinator);
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(ctx.names.labels(Component::Coordinator));
    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash(config));

    let (volumes, mounts) = volumes(ctx, credentials);
    let mut ports = vec![port(CONTROL_PORT_NAME, spec.control.port)];
    if spec.bulk.enabled {
        ports.push(port(BULK_PORT_NAME, spec.bulk.port));
    }
    ports.push(port(METRICS_PORT_NAME, spec.metrics.port));
    let scheme = if credentials.tls.enabled() {
        "HTTPS"
    } else {
        "HTTP"
    };
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec![COORDINATOR_COMMAND.to_string()]),
        args: Some(vec!["--config".into(), paths::CONFIG_FILE.into()]),
        ports: Some(ports),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        readiness_probe: Some(health_probe(CONTROL_PORT_NAME, scheme, 5, 3)),
        liveness_probe: Some(health_probe(METRICS_PORT_NAME, "HTTP", 10, 6)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        service_account_name: Some(
            spec.service_account_name
                .clone()
                .unwrap_or_else(|| ctx.names.service_account()),
        ),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        runtime_class_name: spec.runtime_class_name.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };
    Deployment {
        metadata: ctx.metadata(ctx.names.deployment(), Component::Coordinator),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The ServiceAccount the coordinator runs as (it needs no API access at all).
pub fn build_service_account(ctx: &BuildContext<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: ctx.metadata(ctx.names.service_account(), Component::Coordinator),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The claim for the audit log and checkpoints, unless the user brings one. With
/// `retainOnDelete` it has no owner reference, so deleting the server keeps the audit trail.
pub fn build_state_claim(ctx: &BuildContext<'_>) -> Option<PersistentVolumeClaim> {
    let audit = &ctx.server.spec.audit;
    if audit.existing_claim.is_some() {
        return None;
    }
    let mut metadata = ctx.metadata(ctx.names.state_claim(), Component::State);
    if audit.retain_on_delete {
        metadata.owner_references = None;
    }
    let storage = audit.storage.as_ref();
    let size = storage
        .map(|s| s.size.clone())
        .unwrap_or_else(|| Quantity(DEFAULT_AUDIT_STORAGE_SIZE.into()));
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.and_then(|s| s.storage_class_name.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

fn volumes(ctx: &BuildContext<'_>, credentials: &Credentials) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &ctx.server.spec;
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ctx.names.config_map(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("config", paths::CONFIG_DIR, true)];
    let token_secret = match &credentials.token {
        TokenSource::Owned(_) => Some(ctx.names.token_secret()),
        TokenSource::Referenced { secret, .. } => Some(secret.clone()),
        TokenSource::Disabled => None,
    };
    if let Some(secret) = token_secret {
        volumes.push(secret_volume("token", secret));
        mounts.push(mount("token", paths::TOKEN_DIR, true));
    }
    if credentials.admin_token.is_some() {
        volumes.push(secret_volume("admin-token", ctx.names.admin_token_secret()));
        mounts.push(mount("admin-token", paths::ADMIN_TOKEN_DIR, true));
    }
    let (tls_secret, client_ca_secret) = match &credentials.tls {
        TlsSource::Owned(_) => (Some(ctx.names.server_tls_secret()), None),
        TlsSource::Referenced {
            secret,
            client_ca_secret,
            ..
        } => (Some(secret.clone()), client_ca_secret.clone()),
        TlsSource::Disabled => (None, None),
    };
    if let Some(secret) = tls_secret {
        volumes.push(secret_volume("tls", secret));
        mounts.push(mount("tls", paths::TLS_DIR, true));
    }
    if let Some(secret) = client_ca_secret {
        volumes.push(secret_volume("client-ca", secret));
        mounts.push(mount("client-ca", paths::CLIENT_CA_DIR, true));
    }
    if client_list(ctx, credentials).is_some() {
        volumes.push(Volume {
            name: "clients".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.names.clients_config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("clients", paths::CLIENTS_DIR, true));
    }
    let claim = spec
        .audit
        .existing_claim
        .clone()
        .unwrap_or_else(|| ctx.names.state_claim());
    volumes.push(Volume {
        name: "state".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: None,
        }),
        ..Volume::default()
    });
    mounts.push(mount("state", paths::STATE_DIR, false));
    if let Some(claim) = spec.model.as_ref().and_then(|m| m.claim_name.clone()) {
        // Read-only twice over: the coordinator only reads the model, and a claim shared
        // with the team that trains it must not be written by a server.
        volumes.push(Volume {
            name: "model".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: Some(true),
            }),
            ..Volume::default()
        });
        mounts.push(mount("model", paths::MODEL_DIR, true));
    }
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(TMP_SIZE_LIMIT.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    mounts.push(mount("tmp", paths::TMP_DIR, false));
    (volumes, mounts)
}

fn default_resources() -> ResourceRequirements {
    let quantity = |text: &str| Quantity(text.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity(DEFAULT_CPU_REQUEST)),
            ("memory".to_string(), quantity(DEFAULT_MEMORY_REQUEST)),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            quantity(DEFAULT_MEMORY_LIMIT),
        )])),
        ..ResourceRequirements::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(SECRET_FILE_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn health_probe(port: &str, scheme: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::String(port.to_string()),
            scheme: Some(scheme.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn config_hash(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}
