//! Status: conditions, endpoints, Secret names, rotation and certificate times, written to
//! the `status` subresource. Computing the status is pure; [`write_status`] sends it.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use diloco_crds::{
    CertificatesStatus, ClientSecret, CoordinatorStatus, DiLoCoServer, DiLoCoServerStatus,
    Endpoints, Phase, SecretNames, TokenRotationStatus,
};

use crate::error::{Error, Result};
use crate::names::ChildNames;
use crate::reconcile::apply::Applied;
use crate::reconcile::build::services::PlaneUrls;
use crate::reconcile::build::{Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::LeafRole;
use crate::reconcile::validate::Invalid;
use crate::settings::FIELD_MANAGER;

pub const READY: &str = "Ready";
pub const CREDENTIALS_READY: &str = "CredentialsReady";
pub const NETWORK_READY: &str = "NetworkReady";
pub const COORDINATOR_AVAILABLE: &str = "CoordinatorAvailable";

/// What the coordinator's own `/status` said, or why it could not be asked.
#[derive(Clone, Debug, PartialEq)]
pub enum CoordinatorProbe {
    Reported(CoordinatorStatus),
    Unreachable(String),
    NotAsked,
}

/// The result of a successful pass through the pipeline.
pub struct Outcome<'a> {
    pub credentials: &'a Credentials,
    pub applied: &'a Applied,
    pub endpoints: PlaneUrls,
    pub network_policies: bool,
    pub coordinator: CoordinatorProbe,
}

/// Conditions keep their transition time while their status stays the same.
struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Timestamp,
    list: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    fn new(previous: &'a [Condition], generation: Option<i64>, now: Timestamp) -> Self {
        Self {
            previous,
            generation,
            now,
            list: Vec::new(),
        }
    }

    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        let status = if ok { "True" } else { "False" };
        let since = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        self.list.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: self.generation,
            last_transition_time: since,
        });
    }

    fn all_true(&self) -> bool {
        self.list.iter().all(|c| c.status == "True")
    }

    fn first_false(&self) -> Option<&Condition> {
        self.list.iter().find(|c| c.status != "True")
    }
}

/// The status after a successful reconcile.
pub fn reconciled_status(
    server: &DiLoCoServer,
    outcome: &Outcome<'_>,
    now: Timestamp,
) -> DiLoCoServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let names = ChildNames::new(&server.name_any());
    let mut conditions = Conditions::new(&previous.conditions, server.metadata.generation, now);

    let credentials = outcome.credentials;
    let (token_secret, token_rotation) = match &credentials.token {
        TokenSource::Disabled => (None, None),
        TokenSource::Owned(plan) => (
            Some(names.token_secret()),
            Some(TokenRotationStatus {
                observed_nonce: plan.handled_nonce.clone(),
                rotated_at: plan.rotated_at.map(|t| t.to_string()),
                previous_valid_until: plan.previous_valid_until.map(|t| t.to_string()),
            }),
        ),
        TokenSource::Referenced { secret, .. } => (Some(secret.clone()), None),
    };
    let mut secrets = SecretNames {
        token: token_secret,
        admin_token: credentials
            .admin_token
            .as_ref()
            .map(|_| names.admin_token_secret()),
        worker_credentials: Some(names.worker_credentials_secret()),
        ..SecretNames::default()
    };
    let mut certificates = None;
    let credentials_message = match &credentials.tls {
        TlsSource::Disabled => "bearer token in place; TLS is disabled".to_string(),
        TlsSource::Referenced { secret, .. } => {
            secrets.server_cert = Some(secret.clone());
            format!("server certificate from Secret {secret}")
        }
        TlsSource::Owned(pki) => {
            secrets.ca = Some(names.ca_secret());
            secrets.server_cert = Some(names.server_tls_secret());
            secrets.clients = pki
                .leaves
                .keys()
                .filter_map(|role| match role {
                    LeafRole::Client(name) => Some(ClientSecret {
                        name: name.clone(),
                        secret: names.client_secret(name),
                    }),
                    _ => None,
                })
                .collect();
            let not_after = pki.server_not_after();
            certificates = Some(CertificatesStatus {
                not_after: not_after.map(|t| t.to_string()),
                renewal_time: Some(pki.next_change.to_string()),
                ca_not_after: Some(pki.ca.not_after.to_string()),
                observed_nonce: pki
                    .leaves
                    .get(&LeafRole::Server)
                    .and_then(|l| l.handled_nonce.clone()),
                observed_ca_nonce: pki.ca.handled_nonce.clone(),
            });
            match not_after {
                Some(t) => format!("certificates issued; server certificate valid until {t}"),
                None => "certificates issued".to_string(),
            }
        }
    };
    conditions.set(
        CREDENTIALS_READY,
        true,
        "CredentialsIssued",
        credentials_message,
    );

    let pending_lb: Vec<String> = outcome
        .applied
        .services
        .iter()
        .filter(|s| {
            s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                && s.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_none_or(Vec::is_empty)
        })
        .map(ResourceExt::name_any)
        .collect();
    let policies = if outcome.network_policies {
        "NetworkPolicies applied"
    } else {
        "NetworkPolicies disabled"
    };
    if pending_lb.is_empty() {
        conditions.set(
            NETWORK_READY,
            true,
            "ServicesReady",
            format!("Services applied; {policies}"),
        );
    } else {
        conditions.set(
            NETWORK_READY,
            false,
            "LoadBalancerPending",
            format!(
                "waiting for a load balancer address for {}",
                pending_lb.join(", ")
            ),
        );
    }

    let deployment_status = outcome
        .applied
        .deployment
        .as_ref()
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let available = deployment_status.available_replicas.unwrap_or(0) >= 1;
    let mut coordinator = previous.coordinator.clone();
    if available {
        let message = match &outcome.coordinator {
            CoordinatorProbe::Reported(status) => {
                // The round and workers live in status.coordinator, which is refreshed
                // between reconciles; a copy in this message would go stale.
                coordinator = Some(status.clone());
                "coordinator running and answering /status".to_string()
            }
            CoordinatorProbe::Unreachable(why) => {
                format!("coordinator pod ready; its /status could not be read: {why}")
            }
            CoordinatorProbe::NotAsked => "coordinator pod ready".to_string(),
        };
        conditions.set(COORDINATOR_AVAILABLE, true, "CoordinatorReady", message);
    } else {
        conditions.set(
            COORDINATOR_AVAILABLE,
            false,
            "CoordinatorNotReady",
            format!(
                "{}/1 coordinator pods ready",
                deployment_status.ready_replicas.unwrap_or(0)
            ),
        );
    }
    finish(&mut conditions);
    let ready = conditions.all_true();
    DiLoCoServerStatus {
        observed_generation: server.metadata.generation,
        phase: Some(if ready { Phase::Ready } else { Phase::Pending }),
        conditions: conditions.list,
        endpoints: Some(Endpoints {
            control: Some(outcome.endpoints.control.clone()),
            bulk: outcome.endpoints.bulk.clone(),
        }),
        secrets: Some(secrets),
        token_rotation,
        certificates,
        coordinator,
    }
}

/// The status of a spec that cannot be reconciled: the reason in a condition; what was
/// reported before (endpoints, secrets) is kept, since those objects still exist.
pub fn invalid_status(
    server: &DiLoCoServer,
    invalid: &Invalid,
    now: Timestamp,
) -> DiLoCoServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let mut conditions = Conditions::new(&previous.conditions, server.metadata.generation, now);
    if invalid.credentials {
        conditions.set(
            CREDENTIALS_READY,
            false,
            invalid.reason,
            invalid.message.clone(),
        );
    }
    for kept in [CREDENTIALS_READY, NETWORK_READY, COORDINATOR_AVAILABLE] {
        if conditions.list.iter().any(|c| c.type_ == kept) {
            continue;
        }
        if let Some(old) = previous.conditions.iter().find(|c| c.type_ == kept) {
            conditions.list.push(old.clone());
        }
    }
    conditions.set(READY, false, invalid.reason, invalid.message.clone());
    DiLoCoServerStatus {
        observed_generation: server.metadata.generation,
        phase: Some(Phase::Failed),
        conditions: conditions.list,
        ..previous
    }
}

/// The status of a paused server: children are left as they are.
pub fn paused_status(server: &DiLoCoServer, now: Timestamp) -> DiLoCoServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let mut conditions = Conditions::new(&previous.conditions, server.metadata.generation, now);
    conditions.list = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    conditions.set(
        READY,
        false,
        "Paused",
        "spec.paused is true: the operator leaves the children as they are".into(),
    );
    DiLoCoServerStatus {
        observed_generation: server.metadata.generation,
        phase: Some(Phase::Paused),
        conditions: conditions.list,
        ..previous
    }
}

/// Sets `Ready` from the other conditions.
fn finish(conditions: &mut Conditions<'_>) {
    let (ok, reason, message) = match conditions.first_false() {
        None => (
            true,
            "Ready".to_string(),
            "the coordinator is serving".to_string(),
        ),
        Some(c) => (false, c.reason.clone(), c.message.clone()),
    };
    conditions.set(READY, ok, &reason, message);
}

/// Writes `status` unless it is what the server already shows.
pub async fn write_status(
    client: &Client,
    server: &DiLoCoServer,
    status: DiLoCoServerStatus,
) -> Result<()> {
    if server.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<DiLoCoServer> =
        Api::namespaced(client.clone(), &server.namespace().unwrap_or_default());
    // Server-side apply: fields this operator set before and leaves out now are removed.
    let patch = json!({
        "apiVersion": DiLoCoServer::api_version(&()),
        "kind": DiLoCoServer::kind(&()),
        "status": status,
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube("update the DiLoCoServer status"))?;
    Ok(())
}
